"""Running the consumer (consumer.py) inside the server process, and reporting on it for health."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from celery_flow.consumer import DEFAULT_GROUP, Consumer, Sink
from celery_flow.server.config import ServerConfig
from celery_flow.server.health import ConsumerHealth
from celery_flow.store.base import Store

log = logging.getLogger("celery_flow.server")


class ConsumerRunner:
    """The embedded consumer: a daemon thread folding the broker's events into the store."""

    def __init__(
        self, config: ServerConfig, store: Store, sinks: Sequence[Sink] = (), group: str = DEFAULT_GROUP
    ) -> None:
        if config.broker_url is None:
            raise ValueError("the embedded consumer needs a broker URL")
        self.sinks = list(sinks)
        self.consumer = Consumer(
            config.broker_url, store, prefix=config.prefix, group=group, ttl=config.ttl,
            max_tasks=config.max_tasks, sinks=sinks,
        )  # fmt: skip
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="celery-flow-consumer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.consumer.run(self._stop)
        except Exception:  # run() only raises on a programming error; say so loudly, health shows it
            log.exception("embedded consumer stopped")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def health(self) -> ConsumerHealth:
        stats = {**self.consumer.stats(), **self._sink_stats()}
        alive = self._thread is not None and self._thread.is_alive()
        status = str(stats["status"]) if alive else "stopped"
        return ConsumerHealth(
            mode="embedded", status=status, lag=stats["lag"], detail=stats["detail"], metrics=stats
        )

    def _sink_stats(self) -> dict[str, object]:
        """Counters of sinks that keep them (the OTLP exporter: `otlp_exported`, `otlp_dropped`, ...)."""
        out: dict[str, object] = {}
        for sink in self.sinks:
            stats = getattr(sink, "stats", None)
            if not callable(stats):
                continue
            prefix = str(getattr(sink, "metrics_prefix", "sink"))
            try:
                out.update({f"{prefix}_{key}": value for key, value in dict(stats()).items()})
            except Exception:  # a sink's bookkeeping must never break health
                log.debug("sink stats failed", exc_info=True)
        return out
