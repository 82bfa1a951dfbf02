"""Fingerprints of real tracebacks: one bug is one cluster whatever its message, line numbers, install
path or Celery's frames around it; another function or another exception type is another cluster."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from celery import Celery

from celery_flow.flow.fingerprint import cause, frames_of, label, title
from celery_flow.tracking.capture import Capturer, truncate_text

SOURCE = """
def charge(card, amount):
    return _gateway(card, amount)

def _gateway(card, amount):
    request = "5f0c9a1e-1234-4abc-8def-0123456789ab"
    raise ValueError(f"card {card} declined for {amount} EUR (request {request})")

def refund(card, amount):
    raise ValueError(f"card {card} declined for {amount} EUR")

def recurse(n):
    if n == 0:
        raise RecursionError("too deep")
    return recurse_again(n - 1)

def recurse_again(n):
    return recurse(n)
"""


def load(filename: str, padding: int = 0) -> dict[str, Any]:
    """The functions of SOURCE compiled as if from `filename`, `padding` lines further down."""
    namespace: dict[str, Any] = {}
    exec(compile("\n" * padding + SOURCE, filename, "exec"), namespace)
    return namespace


def failure(call: Callable[[], Any]) -> tuple[str, str]:
    """(exception text, traceback text) of what `call` raises, as the tracker captures them; the
    traceback starts where `call` does (as a task's starts in Celery's tracer)."""
    try:
        call()
    except Exception as exc:
        capture = Capturer(4096, None)
        here = exc.__traceback__
        inside = here.tb_next.tb_next if here is not None and here.tb_next is not None else here
        return str(capture.exception(exc)), "".join(traceback.format_exception(type(exc), exc, inside))
    raise AssertionError("no exception")


def test_one_bug_with_different_messages_lines_and_install_paths_is_one_cluster() -> None:
    here = load("/srv/releases/41/app/billing.py")
    moved = load("/opt/releases/42/app/billing.py", padding=7)  # another deploy, an edit above it
    first = cause(*failure(lambda: here["charge"](4242, 10)))
    second = cause(*failure(lambda: moved["charge"](1111, 99.5)))
    assert first.fingerprint == second.fingerprint
    assert first.exception_type == "ValueError"
    assert first.message == second.message == "card <n> declined for <n> EUR (request <id>)"
    assert len(first.fingerprint) == 16
    assert int(first.fingerprint, 16) >= 0


def test_another_function_or_exception_type_is_another_cluster() -> None:
    code = load("/srv/app/billing.py")
    charged = cause(*failure(lambda: code["charge"](1, 2)))
    refunded = cause(*failure(lambda: code["refund"](1, 2)))
    assert charged.fingerprint != refunded.fingerprint
    exception, tb = failure(lambda: code["charge"](1, 2))
    other_type = cause(exception.replace("ValueError", "KeyError", 1), tb)
    assert other_type.fingerprint != charged.fingerprint


def test_celery_frames_around_a_task_do_not_split_its_cluster() -> None:
    code = load("/srv/app/billing.py")
    app = Celery("fingerprint_test", set_as_current=False)
    task = app.task(name="billing.charge", shared=False)(code["charge"])
    result = task.apply(args=(4242, 10))  # through Celery's tracer: celery/app/trace.py frames
    assert "celery/app/trace.py" in result.traceback
    through_celery = cause(f"ValueError: {result.result}", result.traceback)
    direct = cause(*failure(lambda: code["charge"](4242, 10)))
    assert through_celery.fingerprint == direct.fingerprint
    assert [module for module, _ in frames_of(result.traceback)] == ["app.billing", "app.billing"]


def test_frames_are_named_by_module_not_by_install_path() -> None:
    tb = (
        "Traceback (most recent call last):\n"
        '  File "/venv/lib/python3.11/site-packages/celery/app/trace.py", line 453, in trace_task\n'
        '  File "/venv/lib/python3.11/site-packages/kombu/utils/functional.py", line 32, in __call__\n'
        '  File "/usr/lib/python3.11/threading.py", line 975, in run\n'
        '  File "/usr/lib/python3.11/concurrent/futures/thread.py", line 58, in run\n'
        '  File "/usr/lib/python3.11/json/decoder.py", line 337, in decode\n'
        '  File "/venv/lib/python3.11/site-packages/requests/api.py", line 73, in get\n'
        '  File "C:\\deploy\\app\\tasks.py", line 9, in fetch\n'
        '  File "<frozen importlib._bootstrap>", line 1, in _load\n'
        "ValueError: x\n"
    )
    assert frames_of(tb) == [
        ("json.decoder", "decode"),
        ("requests.api", "get"),
        ("app.tasks", "fetch"),
        ("<frozen importlib._bootstrap>", "_load"),
    ]


def test_a_traceback_cut_by_the_size_cap_keeps_its_fingerprint() -> None:
    code = load("/srv/app/deep.py")
    exception, tb = failure(lambda: code["recurse"](400))
    assert len(tb) > 20_000
    whole = cause(exception, tb)
    cuts = {cause(exception, truncate_text(tb, limit)).fingerprint for limit in (4_000, 9_999, 15_001)}
    assert cuts == {whole.fingerprint}
    deeper = cause(*failure(lambda: code["recurse"](300)))
    assert deeper.fingerprint == whole.fingerprint  # recursion depth does not matter either


def test_a_retry_counts_for_the_exception_it_retried_for() -> None:
    # What the tracker sends for `raise self.retry(exc=ValueError(...))` (seen from a real worker).
    tb = (
        "Traceback (most recent call last):\n"
        '  File "/venv/lib/python3.11/site-packages/celery/app/trace.py", line 564, in trace_task\n'
        "    R = retval = fun(*args, **kwargs)\n"
        '  File "/srv/app/billing.py", line 3, in charge\n'
        "    raise self.retry(exc=ValueError(...))\n"
        '  File "/venv/lib/python3.11/site-packages/celery/app/task.py", line 963, in retry\n'
        "    raise ret\n"
        "celery.exceptions.Retry: Retry in 10s: ValueError('card 4242 declined')\n"
    )
    retried = cause("Retry: Retry in 10s: ValueError('card 4242 declined')", tb)
    assert retried.exception_type == "ValueError"
    assert retried.message == "card <n> declined"
    failed = cause("ValueError: card 1111 declined", tb.replace("retry", "other"))
    assert failed.fingerprint == retried.fingerprint
    assert label("Retry: Retry at 2026-12-02 07:49:07+00:00: KeyError('k', 3)", None) == (
        "KeyError",
        "'<s>', <n>",
    )
    assert label("Retry: Retry in 180s", None) == ("Retry", "Retry in <n>s")


def test_missing_text_falls_back_to_the_traceback_or_a_placeholder_type() -> None:
    tb = 'Traceback (most recent call last):\n  File "/srv/app/x.py", line 1, in f\napp.errors.Declined: no\n'
    assert label(None, tb) == ("Declined", "no")
    assert label(None, None) == ("UnknownError", "")
    assert label("ValueError('bad input 7')", None) == ("ValueError", "bad input <n>")
    assert cause(None, None).fingerprint == cause("", "").fingerprint


def test_titles_replace_what_varies_and_keep_words() -> None:
    assert title("can't reach 'db-1' at 10.0.0.1:5432 after 30s") == "can't reach '<s>' at <n>:<n> after <n>s"
    assert title("object at 0x7f3a2b1c0d9e, id 5f0c9a1e12345678") == "object at <id>, id <id>"
    assert title("utf8 v2 facade") == "utf8 v2 facade"
    assert len(title("x" * 10_000)) == 200
