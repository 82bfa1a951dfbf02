"""Running the consumer (consumer.py) inside the server process, and reporting on it for health."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery_flow.server.health import ConsumerHealth
from celery_flow.store.base import Store

log = logging.getLogger("celery_flow.server")


class ConsumerRunner:
    """The embedded consumer: a daemon thread folding the broker's events into the store."""

    def __init__(
        self,
        broker_url: str,
        store: Store,
        prefix: str,
        group: str,
        ttl: float | None = None,
        max_tasks: int | None = None,
    ) -> None:
        self.broker_url = broker_url
        self.store = store
        self.prefix = prefix
        self.group = group
        self.ttl = ttl
        self.max_tasks = max_tasks
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None

    def start(self) -> None:
        from celery_flow.consumer import Consumer

        self._consumer = Consumer(self.broker_url, self.store, prefix=self.prefix, group=self.group)
        self._thread = threading.Thread(
            target=self._consumer.run, args=(self._stop,), name="celery-flow-consumer", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def health(self) -> ConsumerHealth:
        alive = self._thread is not None and self._thread.is_alive()
        return ConsumerHealth(mode="embedded", status="running" if alive else "stopped")
