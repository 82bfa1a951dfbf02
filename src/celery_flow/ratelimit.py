"""Rate limiting for log lines: a problem that repeats (a broker or a collector down) shows up once per
interval with how often it happened meanwhile, not once per occurrence."""

from __future__ import annotations

import contextlib
import logging
import time

__all__ = ["RateLimit", "RateLimitedLog"]


class RateLimit:
    """Lets each key pass at most once per `interval` seconds and counts the calls it held back.

    No lock, so a fork can never inherit one held: two threads calling at once may both pass.
    """

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def admit(self, key: str = "") -> int | None:
        """None if `key` passed less than `interval` seconds ago; else how many calls were held back."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


class RateLimitedLog:
    """Logs each kind of problem (`key`) at most once per `interval` seconds, with how many similar
    messages it held back; never raises into the caller."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self._limit = RateLimit(interval)

    def warning(self, key: str, message: str, *args: object) -> None:
        held = self._limit.admit(key)
        if held is None:
            return
        if held:
            message += f" ({held} similar messages suppressed)"
        with contextlib.suppress(Exception):  # logging must never break the caller
            self.logger.warning(message, *args)
