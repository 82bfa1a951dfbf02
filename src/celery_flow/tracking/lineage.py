"""Read task lineage out of Celery's protocol-2 message: headers plus the embedded canvas in the body.

`before_task_publish` sees `headers` (id, task, root_id, parent_id, group, retries, eta, expires) and
`body = (args, kwargs, embed)` where `embed` holds the signatures Celery will apply later:
`callbacks` (link), `errbacks` (link_error), `chain` (the remaining chain steps, *reversed*: the next
one is last) and `chord` (the chord callback, on every header member). Celery freezes canvases before
sending, so every one of those signatures already carries its `options.task_id`: the ids this task
will cause are known at publish time.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["chord_callback_id", "embed_of", "entry_ids", "freeze_callbacks", "iso_to_epoch", "links_of"]


def embed_of(body: Any) -> Mapping[str, Any] | None:
    if isinstance(body, (tuple, list)) and len(body) == 3:
        embed = body[2]
        # dict first: an ABC isinstance check costs several times more, on every publish.
        if type(embed) is dict or isinstance(embed, Mapping):
            return embed
    return None


def _options_id(sig: Mapping[str, Any]) -> str | None:
    options = sig.get("options")
    if isinstance(options, Mapping):
        task_id = options.get("task_id")
        if isinstance(task_id, str):
            return task_id
    return None


def _members(value: Any) -> Iterable[Any]:
    if isinstance(value, Mapping):
        if value.get("subtask_type") == "group":
            kwargs = value.get("kwargs")
            tasks = kwargs.get("tasks") if isinstance(kwargs, Mapping) else None
            return tasks or ()
        return (value,)
    if isinstance(value, (list, tuple)):
        return value
    return ()


def entry_ids(sig: Any, _depth: int = 0) -> list[str]:
    """The task ids that start when `sig` is applied: a task's own id, every member of a group, the first
    step of a chain, the header members of a chord."""
    if not isinstance(sig, Mapping) or _depth > 20:
        return []
    kind = sig.get("subtask_type")
    kwargs = sig.get("kwargs")
    kwargs = kwargs if isinstance(kwargs, Mapping) else {}
    if kind == "group":
        out: list[str] = []
        for member in _members(sig):
            out.extend(entry_ids(member, _depth + 1))
        return out
    if kind == "chain":
        tasks = kwargs.get("tasks") or ()
        return entry_ids(tasks[0], _depth + 1) if tasks else []
    if kind == "chord":
        out = []
        for member in _members(kwargs.get("header")):
            out.extend(entry_ids(member, _depth + 1))
        if not out:  # an empty header applies the body at once
            out = entry_ids(kwargs.get("body"), _depth + 1)
        return out
    task_id = _options_id(sig)
    return [task_id] if task_id else []


def chord_callback_id(chord: Any) -> str | None:
    """The task id of the chord callback (`embed['chord']`) when the callback starts as one task.

    A callback that is itself a group or a chord (Celery turns `group | chord` inside a chain into a
    chord whose body is that chord) starts several tasks at once: it has no single id, and
    `links_of` lists the tasks it starts instead.
    """
    if not isinstance(chord, Mapping) or chord.get("subtask_type") in ("group", "chord"):
        return None
    ids = entry_ids(chord)
    return ids[0] if ids else None


def freeze_callbacks(embed: Any) -> None:
    """Give `link` / `link_error` callbacks without an id one now, in this message only.

    Celery freezes chains and chords, but a plain `apply_async(link=sig, link_error=sig)` sends the
    callback without a task id and picks one when it fires. Fixing it here (on a copy, so a signature
    shared by several messages still gets one id per message) makes the id known at publish time.
    """
    if not isinstance(embed, dict):
        return
    for key in ("callbacks", "errbacks"):
        sigs = embed.get(key)
        if not sigs or not isinstance(sigs, (list, tuple)):
            continue
        changed = False
        out = []
        for sig in sigs:
            if isinstance(sig, Mapping) and not sig.get("subtask_type") and not _options_id(sig):
                options = dict(sig.get("options") or {})
                options["task_id"] = str(uuid.uuid4())
                copied = sig.copy() if hasattr(sig, "copy") else dict(sig)
                copied["options"] = options
                out.append(copied)
                changed = True
            else:
                out.append(sig)
        if changed:
            embed[key] = out


def links_of(embed: Mapping[str, Any] | None) -> tuple[list[str] | None, list[str] | None]:
    """(ids started on success: link callbacks, the next chain step, and the tasks of a chord callback
    that is a group or chord; ids started on failure)."""
    if not embed:
        return None, None
    links: list[str] = []
    for callback in embed.get("callbacks") or ():
        links.extend(entry_ids(callback))
    chain = embed.get("chain")
    if chain:
        links.extend(entry_ids(chain[-1]))
    chord = embed.get("chord")
    if isinstance(chord, Mapping) and chord.get("subtask_type") in ("group", "chord"):
        links.extend(entry_ids(chord))
    errors: list[str] = []
    for errback in embed.get("errbacks") or ():
        errors.extend(entry_ids(errback))
    return (links or None), (errors or None)


def iso_to_epoch(value: Any) -> float | None:
    """Celery's ISO 8601 eta/expires (or a datetime) as epoch seconds; naive times are taken as UTC."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        moment = (
            value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(str(value))
        )
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()
