"""Turn arbitrary task arguments, results and exceptions into small, JSON-safe, scrubbed values.

Runs in the user's process on the hot path, so the common case (a few ints and short strings) returns
almost immediately, and nothing here may raise: a `__repr__` that raises, a cycle, a 50 MB string or a
million-item list all become a bounded representation with a visible truncation marker.

Size is bounded by a character budget (`max_value_size`) shared by everything inside one value, so the
encoded event stays far below `events.MAX_EVENT_BYTES` whatever the user passes.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import itertools
import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from celery_flow.tracking.scrub import FILTERED, KeyScrubber

__all__ = ["Capturer", "safe_repr", "truncate_text"]

MAX_DEPTH: Final = 8
MAX_ITEMS: Final = 100
_MIN_STRING: Final = 16
_INT64: Final = 2**63
_SCALARS: Final = (bool, int, float, type(None))


def truncate_text(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters, with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return f"{text[:limit]}…[truncated {cut} chars]"


def safe_repr(value: object, limit: int) -> str:
    """repr(value) capped at `limit`; never raises, even when __repr__ does."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break the task
        try:
            name = type(value).__qualname__
        except Exception:
            name = "object"
        return f"<unrepresentable {name}: repr raised {type(exc).__name__}>"
    if not isinstance(text, str):
        return "<unrepresentable: repr returned non-string>"
    return truncate_text(text, limit)


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


# `_mapping` or `_sequence`: (value, budget, depth, seen) -> its JSON-able copy.
_Walker = Callable[[Any, _Budget, int, set[int]], Any]


class Capturer:
    """Converts values according to one `init()` configuration (scrubbing on/off, size limit)."""

    def __init__(self, max_value_size: int, scrubber: KeyScrubber | None) -> None:
        self.max_value_size = max(64, max_value_size)
        self.scrubber = scrubber

    # -- public -------------------------------------------------------------------------------------
    def value(self, value: Any) -> Any:
        """A JSON-safe, scrubbed, size-capped copy of `value`."""
        t = type(value)
        if t is str:
            return value if len(value) <= self.max_value_size else truncate_text(value, self.max_value_size)
        if t in _SCALARS and (t is not int or -_INT64 <= value < _INT64) and t is not float:
            return value
        try:
            return self._walk(value, _Budget(self.max_value_size), 0, set())
        except Exception as exc:  # defensive: the walk itself should never raise
            return f"<capture failed: {type(exc).__name__}>"

    def kwargs(self, kwargs: Any) -> Any:
        if not kwargs:
            return {} if kwargs is not None else None
        return self.value(kwargs)

    def args(self, args: Any) -> Any:
        if not args:
            return []
        return self.value(args)

    def text(self, text: str | None, limit: int | None = None) -> str | None:
        """Free text (exception message, traceback): scrubbed by pattern, capped."""
        if text is None:
            return None
        try:
            # Cap first: scrubbing cost is linear in what is kept, not in what the user produced.
            text = truncate_text(text, limit or self.max_value_size)
            if self.scrubber is not None:
                text = self.scrubber.scrub_text(text)
            return text
        except Exception as exc:
            return f"<capture failed: {type(exc).__name__}>"

    def exception(self, exc: BaseException | None) -> str | None:
        if exc is None:
            return None
        try:
            name = type(exc).__name__
            message = str(exc)
        except Exception:
            message = safe_repr(exc, self.max_value_size)
        return self.text(f"{name}: {message}" if message else name)

    # -- walk ---------------------------------------------------------------------------------------
    def _walk(self, value: Any, budget: _Budget, depth: int, seen: set[int]) -> Any:
        t = type(value)
        if t is str:
            return self._string(value, budget)
        if t is bool or value is None:
            budget.left -= 5
            return value
        if t is int:
            budget.left -= 8
            return value if -_INT64 <= value < _INT64 else self._string(str(value), budget)
        if t is float:
            budget.left -= 8
            return value if math.isfinite(value) else str(value)
        if isinstance(value, Mapping):
            return self._container(self._mapping, value, budget, depth, seen)
        if isinstance(value, (list, tuple, set, frozenset)):
            return self._container(self._sequence, value, budget, depth, seen)
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value[: self.max_value_size])
            text = repr(raw)
            if len(value) > len(raw):
                text += f"…[truncated {len(value) - len(raw)} bytes]"
            return self._string(text, budget)
        if isinstance(value, enum.Enum):
            return self._walk(value.value, budget, depth, seen)
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            return self._string(value.isoformat(), budget)
        if isinstance(value, (decimal.Decimal, uuid.UUID, datetime.timedelta)):
            return self._string(str(value), budget)
        if isinstance(value, (bool, int, float, str)):  # subclasses: their plain value
            return self._scalar_subclass(value, budget, depth, seen)
        return self._string(safe_repr(value, max(_MIN_STRING, budget.left)), budget)

    def _scalar_subclass(self, value: Any, budget: _Budget, depth: int, seen: set[int]) -> Any:
        for base in (bool, int, float, str):
            if isinstance(value, base):
                try:
                    return self._walk(base(value), budget, depth, seen)
                except Exception:
                    break
        return self._string(safe_repr(value, max(_MIN_STRING, budget.left)), budget)

    def _string(self, value: str, budget: _Budget) -> str:
        limit = max(_MIN_STRING, budget.left)
        if len(value) > limit:
            value = truncate_text(value, limit)
        budget.left -= len(value) + 2
        return value

    def _container(self, walk: _Walker, value: Any, budget: _Budget, depth: int, seen: set[int]) -> Any:
        """`walk(value)` for a mapping or sequence not already being walked above it (else "[cycle]")
        and not deeper than MAX_DEPTH (else its repr)."""
        marker = id(value)
        if marker in seen:
            return "[cycle]"
        if depth >= MAX_DEPTH:
            return self._string(safe_repr(value, max(_MIN_STRING, min(budget.left, 200))), budget)
        seen.add(marker)
        try:
            return walk(value, budget, depth, seen)
        finally:
            seen.discard(marker)

    def _mapping(self, value: Mapping[Any, Any], budget: _Budget, depth: int, seen: set[int]) -> Any:
        out: dict[str, Any] = {}
        total = len(value)
        # islice: a dict with a million keys costs as much as one with MAX_ITEMS + 1.
        for index, (key, item) in enumerate(itertools.islice(value.items(), MAX_ITEMS + 1)):
            if index >= MAX_ITEMS or budget.left <= 0:
                out["…"] = f"[truncated {total - index} more keys]"
                break
            skey = key if type(key) is str else safe_repr(key, 100)
            budget.left -= len(skey) + 4
            if self.scrubber is not None and self.scrubber.is_sensitive(skey):
                out[skey] = FILTERED
                budget.left -= len(FILTERED)
            else:
                out[skey] = self._walk(item, budget, depth + 1, seen)
        return out

    def _sequence(self, value: Any, budget: _Budget, depth: int, seen: set[int]) -> Any:
        out: list[Any] = []
        total = len(value)
        budget.left -= 2
        for index, item in enumerate(itertools.islice(value, MAX_ITEMS + 1)):
            if index >= MAX_ITEMS or budget.left <= 0:
                out.append(f"…[truncated {total - index} more items]")
                break
            out.append(self._walk(item, budget, depth + 1, seen))
        return out
