"""Tasks that fail in known ways, for the failure-cluster tests (integration and browser).

`register_failing(app)` adds, to a canvas app (tests/support/canvas_app.py):

- `ft.charge(card)`: ValueError("card <card> declined ...") raised in `_gateway`, one bug whatever the card;
- `ft.refund(card)`: the same exception type and message, raised from another function (`refund`);
- `ft.fetch(key, fail_times)`: ConnectionError in `_fetch` for its first `fail_times` attempts, each
  retried (`self.retry(exc=...)`), then it succeeds;
- `ft.fetch_always(key)`: the same cause retried twice (max_retries=2), then failed for good.
"""

from __future__ import annotations

from celery import Celery, Task

__all__ = ["register_failing"]


def _gateway(card: int) -> None:
    raise ValueError(f"card {card} declined by gateway (request id {card * 7919:x}deadbeef)")


def _fetch(key: str) -> str:
    raise ConnectionError(f"could not reach 'cache-{key}' after 3 attempts")


def register_failing(a: Celery) -> None:
    @a.task(shared=False, name="ft.charge")
    def charge(card: int) -> None:
        _gateway(card)

    @a.task(shared=False, name="ft.refund")
    def refund(card: int) -> None:
        raise ValueError(f"card {card} declined by gateway (request id {card * 7919:x}deadbeef)")

    @a.task(shared=False, name="ft.fetch", bind=True, max_retries=5)
    def fetch(self: Task, key: str, fail_times: int = 2) -> str:
        if self.request.retries < fail_times:
            try:
                _fetch(key)
            except ConnectionError as exc:
                raise self.retry(exc=exc, countdown=0.05) from exc
        return key

    @a.task(shared=False, name="ft.fetch_always", bind=True, max_retries=2)
    def fetch_always(self: Task, key: str) -> str:
        try:
            return _fetch(key)
        except ConnectionError as exc:
            raise self.retry(exc=exc, countdown=0.05) from exc
