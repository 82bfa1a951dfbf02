"""Every canvas shape gives events whose ids match Celery's own result objects (real worker and Redis)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator

import pytest
from celery import chain, chord, group
from celery.result import AsyncResult, GroupResult
from tests.support.worker import Tracked, revoke_confirmed, tracked_worker

from celery_flow.events import Event

LIFECYCLE = ("sent", "received", "started", "succeeded")


@pytest.fixture
def tracked(redis_url: str) -> Iterator[Tracked]:
    with tracked_worker(redis_url, redis_url) as t:
        yield t


def of(events: list[Event], task_id: str, type_: str) -> Event:
    found = [e for e in events if e.task_id == task_id and e.type == type_]
    assert found, f"no {type_} event for {task_id}"
    return found[-1]


def done(*task_ids: str, final: str = "succeeded"):  # type: ignore[no-untyped-def]
    def predicate(events: list[Event]) -> bool:
        return all(any(e.task_id == t and e.type == final for e in events) for t in task_ids)

    return predicate


def assert_lifecycle(events: list[Event], task_id: str, final: str = "succeeded") -> None:
    types = [e.type for e in events if e.task_id == task_id]
    for step in ("sent", "received", "started", final):
        assert step in types, f"{task_id}: {types}"


def test_single_task_all_fields(tracked: Tracked) -> None:
    r = tracked.task("add").delay(2, 3)
    assert r.get(timeout=10) == 5
    events = tracked.log.wait_for(done(r.id))
    assert_lifecycle(events, r.id)
    sent = of(events, r.id, "sent")
    assert sent.name == "t.add"
    assert sent.root_id == r.id
    assert sent.parent_id is None
    assert sent.args == [2, 3]
    assert sent.kwargs == {}
    assert sent.queue == f"q_{tracked.prefix}"
    assert sent.info
    assert sent.info["producer"]
    assert sent.retries == 0
    started = of(events, r.id, "started")
    assert started.hostname
    assert "@" in started.hostname
    assert started.pid
    ok = of(events, r.id, "succeeded")
    assert ok.result == 5
    assert ok.runtime is not None
    assert ok.runtime >= 0
    assert ok.hostname == started.hostname
    assert of(events, r.id, "received").hostname == started.hostname


def test_chain(tracked: Tracked) -> None:
    add, mul = tracked.task("add"), tracked.task("mul")
    r = chain(add.s(1, 2), add.s(3), mul.s(2)).apply_async()
    assert r.get(timeout=10) == 12
    third, second, first = r.id, r.parent.id, r.parent.parent.id
    events = tracked.log.wait_for(done(first, second, third))
    for task_id in (first, second, third):
        assert_lifecycle(events, task_id)
        assert of(events, task_id, "sent").root_id == first
    assert of(events, first, "sent").links == [second]
    assert of(events, second, "sent").links == [third]
    assert of(events, third, "sent").links is None
    assert of(events, second, "sent").parent_id == first
    assert of(events, third, "sent").parent_id == second
    assert of(events, second, "sent").args == [3, 3]
    assert of(events, third, "succeeded").result == 12


def test_group(tracked: Tracked) -> None:
    add = tracked.task("add")
    r = group(add.s(i, i) for i in range(3)).apply_async()
    assert isinstance(r, GroupResult)
    assert r.get(timeout=10) == [0, 2, 4]
    ids = [c.id for c in r.results]
    events = tracked.log.wait_for(done(*ids))
    for task_id in ids:
        assert_lifecycle(events, task_id)
        sent = of(events, task_id, "sent")
        assert sent.group_id == r.id
        assert sent.chord_id is None
        # Celery roots each member at itself; celery-flow makes the group one flow rooted at its id,
        # on every event of every member
        assert {e.root_id for e in events if e.task_id == task_id} == {r.id}


def test_group_started_outside_a_task_is_one_flow_with_its_descendants(tracked: Tracked) -> None:
    spawn, add = tracked.task("spawn"), tracked.task("add")
    r = group(spawn.s(2), add.s(1, 1)).apply_async()
    children = r.results[0].get(timeout=10)
    r.get(timeout=10)
    ids = [c.id for c in r.results]
    events = tracked.log.wait_for(done(*ids, *children))
    assert {e.root_id for e in events if e.task_id in {*ids, *children}} == {r.id}
    assert all(of(events, c, "sent").parent_id == ids[0] for c in children)


def test_chord(tracked: Tracked) -> None:
    add, xsum = tracked.task("add"), tracked.task("xsum")
    r = chord([add.s(1, 1), add.s(2, 2), add.s(3, 3)], xsum.s()).apply_async()
    assert r.get(timeout=10) == 12
    header: GroupResult = r.parent
    member_ids = [c.id for c in header.results]
    events = tracked.log.wait_for(done(r.id, *member_ids))
    for task_id in member_ids:
        assert_lifecycle(events, task_id)
        sent = of(events, task_id, "sent")
        assert sent.chord_id == r.id  # known from the moment the member is sent
        assert sent.group_id == header.id
        # and from the worker's side, without the producer's events (an untracked producer)
        assert of(events, task_id, "started").chord_id == r.id
        assert of(events, task_id, "succeeded").group_id == header.id
    callback = of(events, r.id, "sent")
    assert {e.root_id for e in events if e.task_id in {r.id, *member_ids}} == {header.id}
    assert callback.name == "t.xsum"
    assert callback.parent_id in member_ids
    assert callback.args == [[2, 4, 6]]
    assert of(events, r.id, "succeeded").result == 12
    # the callback was announced before it was sent: every member's sent precedes the callback's sent
    assert max(of(events, m, "sent").ts for m in member_ids) <= callback.ts


def test_chord_of_chains(tracked: Tracked) -> None:
    add, mul, xsum = tracked.task("add"), tracked.task("mul"), tracked.task("xsum")
    r = chord([chain(add.s(1, 1), mul.s(2)), chain(add.s(2, 2), mul.s(3))], xsum.s()).apply_async()
    assert r.get(timeout=10) == 4 + 12
    header: GroupResult = r.parent
    tails = [c.id for c in header.results]
    heads = [c.parent.id for c in header.results]
    events = tracked.log.wait_for(done(r.id, *tails, *heads))
    for head, tail in zip(heads, tails, strict=False):
        assert of(events, head, "sent").links == [tail]
        assert of(events, tail, "sent").chord_id == r.id
        assert of(events, tail, "sent").parent_id == head
    assert of(events, r.id, "sent").parent_id in tails


def test_chain_into_a_group(tracked: Tracked) -> None:
    add = tracked.task("add")
    r = chain(add.s(1, 1), group(add.s(10), add.s(20))).apply_async()
    assert r.get(timeout=10) == [12, 22]
    member_ids = [c.id for c in r.results]
    first = r.parent.id
    events = tracked.log.wait_for(done(first, *member_ids))
    assert sorted(of(events, first, "sent").links or []) == sorted(member_ids)
    for m in member_ids:
        sent = of(events, m, "sent")
        assert sent.parent_id == first
        assert sent.group_id == r.id
        assert sent.chord_id is None


def test_chain_with_group_and_chord(tracked: Tracked) -> None:
    add, mul, xsum = tracked.task("add"), tracked.task("mul"), tracked.task("xsum")
    canvas = chain(
        add.s(1, 2),
        group(add.s(1), mul.s(2)),
        chord([add.si(1, 1), add.si(2, 2)], xsum.s()),
    )
    r = canvas.apply_async()
    assert r.get(timeout=10) == 6
    d = r.id
    c_group: GroupResult = r.parent
    c_ids = [c.id for c in c_group.results]
    b_group: GroupResult = c_group.parent
    b_ids = [c.id for c in b_group.results]
    a = b_group.parent.id
    events = tracked.log.wait_for(done(a, d, *b_ids, *c_ids))
    assert sorted(of(events, a, "sent").links or []) == sorted(b_ids)
    for b in b_ids:
        sent = of(events, b, "sent")
        assert sent.parent_id == a
        assert sent.root_id == a
        assert sent.group_id == b_group.id
        # group b followed by a chord: Celery runs b as the header of a chord whose callback is chord c;
        # that callback starts c1 and c2 at once, so b's members link to them (no single chord_id).
        assert sent.chord_id is None
        assert sorted(sent.links or []) == sorted(c_ids)
    c_group_ids = set()
    for c in c_ids:
        sent = of(events, c, "sent")
        assert sent.chord_id == d
        assert sent.parent_id in b_ids
        c_group_ids.add(sent.group_id)
    # Celery quirk: the GroupResult it returns for c (r.parent.id) has an id no message carries; the
    # members share one group id of their own.
    assert len(c_group_ids) == 1
    assert None not in c_group_ids
    callback = of(events, d, "sent")
    assert callback.parent_id in c_ids
    # DESIGN §7: the callback carries group b's group id
    assert callback.group_id == b_group.id


def test_nested_chords(tracked: Tracked) -> None:
    add, xsum = tracked.task("add"), tracked.task("xsum")
    inner = chord([add.si(2, 2), add.si(3, 3)], xsum.s())
    r = chord([add.si(1, 1), inner], xsum.s()).apply_async()
    assert r.get(timeout=15) == 2 + 10
    simple, inner_callback = (c.id for c in r.parent.results)
    events = tracked.log.wait_for(done(r.id, simple, inner_callback))
    # the outer header: the simple member and the inner chord's callback both point at the outer callback
    outer_members = {e.task_id for e in events if e.type == "sent" and e.chord_id == r.id}
    assert outer_members == {simple, inner_callback}
    inner_members = [e for e in events if e.type == "sent" and e.chord_id == inner_callback]
    assert sorted(e.name or "" for e in inner_members) == ["t.add", "t.add"]
    assert len({e.group_id for e in inner_members}) == 1
    assert of(events, inner_callback, "sent").parent_id in {e.task_id for e in inner_members}
    assert of(events, inner_callback, "succeeded").result == 10
    assert of(events, r.id, "succeeded").result == 12
    assert of(events, r.id, "sent").parent_id in {simple, inner_callback}


def test_delay_inside_a_task(tracked: Tracked) -> None:
    r = tracked.task("spawn").delay(3)
    child_ids = r.get(timeout=10)
    events = tracked.log.wait_for(done(r.id, *child_ids))
    for child in child_ids:
        sent = of(events, child, "sent")
        assert sent.parent_id == r.id
        assert sent.root_id == r.id
        assert_lifecycle(events, child)
    assert [AsyncResult(c, app=tracked.app).get(timeout=10) for c in child_ids] == [0, 2, 4]


def test_nested_delay_keeps_root(tracked: Tracked) -> None:
    r = tracked.task("spawn_nested").delay(2)
    level1 = r.get(timeout=10)
    level2 = AsyncResult(level1, app=tracked.app).get(timeout=10)
    leaf = AsyncResult(level2, app=tracked.app).get(timeout=10)
    events = tracked.log.wait_for(done(r.id, level1, level2, leaf))
    assert of(events, level1, "sent").parent_id == r.id
    assert of(events, level2, "sent").parent_id == level1
    assert of(events, leaf, "sent").parent_id == level2
    assert {of(events, t, "sent").root_id for t in (level1, level2, leaf)} == {r.id}


def test_replace(tracked: Tracked) -> None:
    r = tracked.task("replaced").delay(1)
    assert r.get(timeout=10) == 101
    events = tracked.log.wait_for(done(r.id))
    names = [(e.type, e.name) for e in events if e.task_id == r.id]
    assert ("started", "t.replaced") in names
    # the replacement keeps the task id (so the caller's AsyncResult works) and is a t.add
    assert ("sent", "t.add") in names
    assert ("succeeded", "t.add") in names
    assert of(events, r.id, "succeeded").result == 101


def test_link_and_link_error(tracked: Tracked) -> None:
    fail, errback, add = tracked.task("fail"), tracked.task("errback"), tracked.task("add")
    r = fail.apply_async(("nope",), link_error=errback.s())
    with pytest.raises(ValueError, match="nope"):
        r.get(timeout=10)
    events = tracked.log.wait_for(done(r.id, final="failed"))
    sent = of(events, r.id, "sent")
    assert sent.link_errors
    assert len(sent.link_errors) == 1
    errback_id = sent.link_errors[0]
    events = tracked.log.wait_for(done(errback_id))
    eb = of(events, errback_id, "sent")
    assert eb.name == "t.errback"
    assert eb.parent_id == r.id
    assert of(events, errback_id, "succeeded").result == f"handled {r.id}"
    assert AsyncResult(errback_id, app=tracked.app).get(timeout=10) == f"handled {r.id}"

    ok = add.apply_async((1, 1), link=add.s(10))
    assert ok.get(timeout=10) == 2
    events = tracked.log.wait_for(done(ok.id))
    links = of(events, ok.id, "sent").links
    assert links
    assert len(links) == 1
    events = tracked.log.wait_for(done(links[0]))
    assert of(events, links[0], "succeeded").result == 12
    assert of(events, links[0], "sent").parent_id == ok.id


def test_failure(tracked: Tracked) -> None:
    r = tracked.task("fail").delay("it broke")
    with pytest.raises(ValueError):
        r.get(timeout=10)
    events = tracked.log.wait_for(done(r.id, final="failed"))
    failed = of(events, r.id, "failed")
    assert failed.exception == "ValueError: it broke"
    assert failed.traceback
    assert "raise ValueError(msg)" in failed.traceback
    assert failed.runtime is not None


def test_retries_with_countdown(tracked: Tracked) -> None:
    r = tracked.task("flaky").delay(succeed_on=2, countdown=0.2)
    assert r.get(timeout=15) == 2
    events = tracked.log.wait_for(done(r.id))
    mine = [e for e in events if e.task_id == r.id]
    sents = [e for e in mine if e.type == "sent"]
    assert [e.retries for e in sents] == [0, 1, 2]
    # a retry is re-published from inside the task: its parent is the task itself
    assert sents[1].parent_id == r.id
    assert sents[2].parent_id == r.id
    assert all(e.root_id == r.id for e in sents)
    assert sents[1].eta is not None
    assert sents[1].eta >= sents[1].ts + 0.1
    retried = [e for e in mine if e.type == "retried"]
    assert [e.retries for e in retried] == [0, 1]
    assert retried[0].reason
    assert "attempt 0 failed" in retried[0].reason
    assert retried[0].traceback
    assert [e.retries for e in mine if e.type == "started"] == [0, 1, 2]
    assert of(events, r.id, "succeeded").retries == 2


def test_eta_task(tracked: Tracked) -> None:
    before = time.time()
    r = tracked.task("add").apply_async((1, 2), countdown=1)
    assert r.get(timeout=10) == 3
    events = tracked.log.wait_for(done(r.id))
    sent = of(events, r.id, "sent")
    assert sent.eta is not None
    assert before + 0.9 <= sent.eta <= time.time() + 1
    assert of(events, r.id, "received").eta == pytest.approx(sent.eta, abs=0.01)
    assert of(events, r.id, "received").ts < sent.eta <= of(events, r.id, "started").ts + 0.05


def test_revoked_before_run(tracked: Tracked) -> None:
    from celery.utils import uuid

    task_id = uuid()
    revoke_confirmed(tracked.app, task_id)  # the worker has the revoke when this returns
    tracked.task("add").apply_async((1, 1), task_id=task_id)
    events = tracked.log.wait_for(done(task_id, final="revoked"))
    assert of(events, task_id, "revoked").reason == "revoked"
    assert not [e for e in events if e.task_id == task_id and e.type == "started"]


def test_revoke_a_received_eta_task(tracked: Tracked) -> None:
    r = tracked.task("add").apply_async((1, 1), countdown=1.5)
    tracked.log.wait_for(lambda ev: any(e.task_id == r.id and e.type == "received" for e in ev))
    r.revoke()  # the worker holds it in its ETA timer: it is announced revoked instead of run
    events = tracked.log.wait_for(done(r.id, final="revoked"))
    assert of(events, r.id, "revoked").reason == "revoked"
    assert not [e for e in events if e.task_id == r.id and e.type == "started"]


def test_a_message_celery_refuses_is_received_then_rejected(tracked: Tracked) -> None:
    """A message the worker takes but Celery cannot run (here an ETA that is not a date) does not vanish:
    it is reported received, then rejected with Celery's reason, and the worker carries on."""
    from celery import signals

    task_id = "bad-eta-" + str(time.monotonic_ns())

    def spoil(headers: dict[str, object] | None = None, **_: object) -> None:
        if headers and headers.get("id") == task_id:
            headers["eta"] = "not-a-date"

    signals.before_task_publish.connect(spoil, weak=False)
    try:
        tracked.task("add").apply_async((1, 1), task_id=task_id)
    finally:
        signals.before_task_publish.disconnect(spoil)
    events = tracked.log.wait_for(done(task_id, final="rejected"))
    assert "received" in [e.type for e in events if e.task_id == task_id]
    rejected = of(events, task_id, "rejected")
    assert rejected.reason
    assert "not-a-date" in rejected.reason
    assert rejected.name == "t.add"
    assert tracked.task("add").delay(2, 3).get(timeout=10) == 5


def test_shadow_name_on_every_event(tracked: Tracked) -> None:
    r = tracked.task("add").apply_async((1, 2), shadow="add for invoice 7")
    events = tracked.log.wait_for(done(r.id))
    assert {e.name for e in events if e.task_id == r.id} == {"add for invoice 7"}


def test_expired(tracked: Tracked) -> None:
    already = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    r = tracked.task("add").apply_async((1, 1), expires=already)
    events = tracked.log.wait_for(done(r.id, final="revoked"))
    assert of(events, r.id, "revoked").reason == "expired"
    assert of(events, r.id, "sent").expires is not None


def test_rejected(tracked: Tracked) -> None:
    r = tracked.task("reject").delay(requeue=False)
    events = tracked.log.wait_for(done(r.id, final="rejected"))
    rejected = of(events, r.id, "rejected")
    assert rejected.reason == "rejected: not today"
    assert not [e for e in events if e.task_id == r.id and e.type in ("succeeded", "failed")]
