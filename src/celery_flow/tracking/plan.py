"""The rest of a workflow, read out of the message of one of its tasks: the `plan` of its `sent` event.

A protocol-2 message's embed (tracking/lineage.py) holds every signature Celery will apply after this
task: `chain` (the remaining steps, reversed: the next one last), `chord` (the chord callback, on every
header member), `callbacks` (link) and `errbacks` (link_error), and inside each signature its own
`options.link`, `options.link_error` and `options.chord` (a chain step that ends a chord header member)
and its nested canvases: a chain holding a group or a chord, a chord whose callback is a chain or a
chord, a chord of chains. Celery freezes canvases before sending, so each step already has its task id
in `options.task_id`; a signature without one (a link_error copied onto every step of a chain, which
gets its id only when it fires) is left out, as is anything decided while a task runs (`replace()`,
tasks it sends itself), as is an errback Celery calls inside the worker (one taking the request, the
exception and the traceback) rather than sending it.

Pure functions over plain dicts and lists; bad shapes are skipped, never raised on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from celery_flow.events import MAX_PLAN_STEPS, PlanCondition, PlanStep
from celery_flow.tracking.lineage import chord_callback_id, entry_ids

__all__ = ["plan_of"]

# Deepest nesting of canvases followed.
_MAX_DEPTH = 20
# Most task ids a plan's `after`, `links` and `link_errors` lists hold in all: a group after a group has
# one id per pair of members, and the event must stay far below the size the server accepts.
MAX_PLAN_IDS = 10_000
_Exits = list[str]


def plan_of(
    task_id: str, embed: Mapping[str, Any], runs_inline: Callable[[Mapping[str, Any]], bool] | None = None
) -> list[PlanStep] | None:
    """The steps the message of `task_id` (its protocol-2 `embed`) will cause, in the order they run,
    at most MAX_PLAN_STEPS; None when it causes none. Link callbacks must already have ids
    (lineage.freeze_callbacks). `runs_inline(errback)`: whether the worker will call that errback in
    its own process rather than send it (then it is never a task, and is left out)."""
    plan = _Plan(runs_inline)
    chain = embed.get("chain")
    if isinstance(chain, (list, tuple)) and chain:
        plan.chain(list(reversed(chain)), [task_id], "success", 0)
    chord = embed.get("chord")
    if isinstance(chord, Mapping):
        plan.walk(chord, [task_id], "chord", 0)
    plan.each(embed.get("callbacks"), [task_id], "success", 0)
    plan.each(embed.get("errbacks"), [task_id], "failure", 0)
    return list(plan.steps.values()) or None


def _options(sig: Mapping[str, Any]) -> Mapping[str, Any]:
    options = sig.get("options")
    return options if isinstance(options, Mapping) else {}


def _kwargs(sig: Mapping[str, Any]) -> Mapping[str, Any]:
    kwargs = sig.get("kwargs")
    return kwargs if isinstance(kwargs, Mapping) else {}


def _sigs(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return []


class _Plan:
    """The steps found so far, by task id (a step reached twice keeps its first description)."""

    def __init__(self, runs_inline: Callable[[Mapping[str, Any]], bool] | None = None) -> None:
        self.runs_inline = runs_inline
        self.steps: dict[str, PlanStep] = {}
        self.ids = 0  # ids in the steps' lists so far (MAX_PLAN_IDS)

    def _room(self, wanted: int) -> bool:
        """Whether `wanted` more ids fit, counting them in if so."""
        if self.ids + wanted > MAX_PLAN_IDS:
            return False
        self.ids += wanted
        return True

    def _add(self, have: list[str], new: list[str], own: str) -> None:
        """Append the ids of `new` not in `have` (nor `own`), while they fit."""
        present = set(have)
        extra = [i for i in dict.fromkeys(new) if i not in present and i != own]
        if extra and self._room(len(extra)):
            have.extend(extra)

    def walk(self, sig: Any, after: list[str], on: PlanCondition, depth: int) -> _Exits:
        """Add the steps of `sig`, run after `after` on `on`; return the ids whose end ends `sig`."""
        if not isinstance(sig, Mapping) or depth > _MAX_DEPTH or len(self.steps) >= MAX_PLAN_STEPS:
            return []
        kind = sig.get("subtask_type")
        kwargs = _kwargs(sig)
        if kind == "chain":
            return self.chain(_sigs(kwargs.get("tasks")), after, on, depth + 1)
        if kind == "group":
            return self.group(sig, _sigs(kwargs.get("tasks")), after, on, depth + 1)
        if kind == "chord":
            return self.chord(kwargs.get("header"), kwargs.get("body"), after, on, depth + 1)
        return self.task(sig, after, on, depth)

    def task(self, sig: Mapping[str, Any], after: list[str], on: PlanCondition, depth: int) -> _Exits:
        options = _options(sig)
        task_id = options.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            return []
        step = self.steps.get(task_id)
        if step is not None:
            self._add(step.after, after, task_id)
            return [task_id]
        if not self._room(len(after)):
            return []
        name = sig.get("task")
        # A chord callback carries its header's group id without being a member: left out, so nothing
        # takes it for one before its own `sent` says what it is.
        group_id = options.get("group_id") if on != "chord" else None
        step = self.steps[task_id] = PlanStep(
            task_id=task_id,
            name=name if isinstance(name, str) else None,
            after=list(after),
            on=on,
            # Who sends it: the one task it follows (a chord callback is sent by whichever member ends last).
            parent_id=after[0] if len(after) == 1 and on != "chord" else None,
            group_id=group_id if isinstance(group_id, str) else None,
        )
        links = self.each(options.get("link"), [task_id], "success", depth + 1)
        errors = self.each(options.get("link_error"), [task_id], "failure", depth + 1)
        chord = options.get("chord")
        if isinstance(chord, Mapping):  # the last step of a chain inside a chord header
            step.chord_id = chord_callback_id(chord)
            links.extend(self.callback_entries(chord, [task_id], depth + 1))
        step.links = links[: max(0, MAX_PLAN_IDS - self.ids)] or None
        step.link_errors = errors[: max(0, MAX_PLAN_IDS - self.ids)] or None
        self.ids += len(step.links or ()) + len(step.link_errors or ())
        return [task_id]

    def each(self, value: Any, after: list[str], on: PlanCondition, depth: int) -> list[str]:
        """Add each signature in `value` (a link or link_error list); return the ids they start with."""
        entries: list[str] = []
        for sig in _sigs(value):
            if on == "failure" and self.runs_inline is not None and self.runs_inline(sig):
                continue
            if self.walk(sig, after, on, depth):
                entries.extend(entry_ids(sig))
        return entries

    def callback_entries(self, chord: Mapping[str, Any], after: list[str], depth: int) -> list[str]:
        """Add a chord callback run after `after`; return the ids it starts with when it is not one task
        (a group or chord: lineage.links_of names them as links of the member)."""
        self.walk(chord, after, "chord", depth)
        return entry_ids(chord) if chord.get("subtask_type") in ("group", "chord") else []

    def chain(self, tasks: list[Any], after: list[str], on: PlanCondition, depth: int) -> _Exits:
        exits = after
        condition = on
        for sig in tasks:
            if depth > _MAX_DEPTH:
                break
            new_exits = self.walk(sig, exits, condition, depth)
            if not new_exits:
                break  # a step without an id: what follows it cannot be placed
            entries = entry_ids(sig)
            if exits is not after:
                for exit_id in exits:
                    self.link(exit_id, entries)
            exits, condition = new_exits, "success"
        return [] if exits is after else exits

    def group(
        self, sig: Mapping[str, Any], members: list[Any], after: list[str], on: PlanCondition, depth: int
    ) -> _Exits:
        group_id = _options(sig).get("task_id")
        exits: _Exits = []
        for member in members:
            member_exits = self.walk(member, after, on, depth)
            if isinstance(group_id, str):
                for exit_id in member_exits:
                    self.steps[exit_id].group_id = self.steps[exit_id].group_id or group_id
            exits.extend(member_exits)
        return exits

    def chord(self, header: Any, body: Any, after: list[str], on: PlanCondition, depth: int) -> _Exits:
        members = _sigs(header)
        first = members[0] if len(members) == 1 else None
        if isinstance(first, Mapping) and first.get("subtask_type") == "group":
            exits = self.group(first, _sigs(_kwargs(first).get("tasks")), after, on, depth)
        else:
            exits = []
            for member in members:
                exits.extend(self.walk(member, after, on, depth))
        if not isinstance(body, Mapping):
            return exits
        if not exits:  # an empty header applies the body at once
            return self.walk(body, after, on, depth)
        callback = chord_callback_id(body)
        entries = entry_ids(body) if body.get("subtask_type") in ("group", "chord") else []
        for exit_id in exits:
            step = self.steps[exit_id]
            step.chord_id = step.chord_id or callback
            if entries:
                self.link(exit_id, entries)
        return self.walk(body, exits, "chord", depth)

    def link(self, source: str, targets: list[str]) -> None:
        step = self.steps.get(source)
        if step is None:
            return
        links = step.links if step.links is not None else []
        self._add(links, targets, source)
        step.links = links or None
