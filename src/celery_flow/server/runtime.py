"""`Runtime`: what a celery-flow process opens, in order, and closes in reverse: the store, the sinks
(the OTLP exporter), the consumer, the live poller.

Every way of running goes through it: `celery-flow server`, `consume` and `demo`, `create_app()`,
`create_app_from_env()` and `CeleryFlowExtension.lifespan`:

    with Runtime(config) as runtime:              # opens the store, then the sinks
        runtime.consumer_for(name).run(stop)     # `consume`: folds events here until `stop` is set
    # closed: the exporter sent what it held, then the store closed

    async with runtime.serving(hub):     # a server's lifespan: the same, the consumer in a thread, and
        ...                              # the live poller; stopped poller first, store last

Opening is idempotent, so the CLI opens the store early (a bad store is a one-line error before the
server starts) and the lifespan then finds it open. A store handed over is used and left open; every
sink with a `close()`, handed over or built here, is closed once the consumer has stopped (the OTLP
exporter sends what it still holds, reading the store, which closes last).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

from celery_flow.consumer import DEFAULT_BATCH, DEFAULT_GROUP, Consumer, Sink
from celery_flow.errors import ConfigError
from celery_flow.server.config import ServerConfig
from celery_flow.store.base import Store

if TYPE_CHECKING:
    from celery_flow.server.consumers import ConsumerRunner
    from celery_flow.server.live import LiveHub

log = logging.getLogger("celery_flow.server")


class Runtime:
    """Owns one process's store, sinks, consumer and live poller; see the module docstring."""

    def __init__(
        self,
        config: ServerConfig,
        store: Store | None = None,
        sinks: Sequence[Sink] = (),
        group: str = DEFAULT_GROUP,
    ) -> None:
        self.config = config
        self.group = group
        self._given_store = store
        self._given_sinks = list(sinks)
        self.store: Store | None = store
        self.sinks: list[Sink] = []
        self.consumer: ConsumerRunner | None = None
        # Called with the changed task ids after each commit of the embedded consumer (the live wake-up).
        self.commit_hooks: list[Sink] = []
        self._stack: contextlib.ExitStack | None = None
        self._lock = threading.Lock()

    def open(self) -> Store:
        """Open the store (unless one was handed over) and the sinks; again: nothing. Raises StoreError or
        ConfigError, with nothing left open."""
        with self._lock:
            if self._stack is not None and self.store is not None:  # open already
                return self.store
            # Whatever fails, what was opened before it is closed again on the way out.
            with contextlib.ExitStack() as stack:
                store = self._given_store
                if store is None:
                    from celery_flow.store import open_store

                    store = open_store(
                        self.config.store_url,
                        self.config.heartbeat_interval,
                        stuck_after=self.config.stuck_after,
                        schedule_grace=self.config.schedule_grace,
                    )
                    stack.callback(store.close)
                sinks = [*self._given_sinks, *self._export_sinks(store)]
                for sink in sinks:
                    close = getattr(sink, "close", None)
                    if callable(close):
                        stack.callback(_quietly, close, f"closing sink {sink!r}")
                self._stack = stack.pop_all()
            self.store, self.sinks = store, sinks
            return store

    def _export_sinks(self, store: Store) -> list[Sink]:
        if self.config.otlp_endpoint is None:
            return []
        from celery_flow.export import otlp_sink

        return [otlp_sink(store, self.config.otlp_endpoint)]

    def start_consumer(self) -> None:
        """Open, then start the embedded consumer thread when the config asks for one (and has a broker)."""
        store = self.open()
        with self._lock:
            if self.consumer is not None or self._stack is None:
                return
            if not self.config.embedded_consumer or self.config.broker_url is None:
                return
            from celery_flow.server.consumers import ConsumerRunner

            # The live poller's wake-up comes last: it is told once the other sinks have seen the commit.
            sinks = [*self.sinks, *self.commit_hooks]
            self.consumer = ConsumerRunner(self.config, store, sinks, group=self.group)
            self.consumer.start()
            self._stack.callback(self._stop_consumer)

    def _stop_consumer(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            consumer.stop()  # finishes its batch and acknowledges

    def consumer_for(self, name: str | None = None, batch: int = DEFAULT_BATCH) -> Consumer:
        """Open, then a consumer folding the configured broker's events into the store through the sinks."""
        store = self.open()
        if self.config.broker_url is None:
            raise ConfigError("no broker given: pass --broker-url or set CELERY_FLOW_BROKER_URL")
        return Consumer(
            self.config.broker_url, store, prefix=self.config.prefix, group=self.group, name=name,
            batch=batch, ttl=self.config.ttl, max_tasks=self.config.max_tasks, sinks=self.sinks,
        )  # fmt: skip

    def close(self) -> None:
        """Stop and close everything in reverse order of opening; again: nothing."""
        with self._lock:
            stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        self.store = self._given_store
        self.sinks = []

    def __enter__(self) -> Runtime:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.asynccontextmanager
    async def serving(
        self, hub: LiveHub | None = None, closing: Sequence[Callable[[], object]] = ()
    ) -> AsyncIterator[None]:
        """A server's lifespan: open and start the consumer (in a worker thread: both block), then the
        live poller; on exit stop the poller, run `closing` (the health probe's broker connection), then
        close the rest."""
        import anyio

        try:
            if hub is not None and hub.wake not in self.commit_hooks:
                self.commit_hooks.append(hub.wake)
            await anyio.to_thread.run_sync(self.start_consumer)
            with self._lock:
                for close in closing:
                    if self._stack is not None:
                        self._stack.callback(_quietly, close, f"closing {close!r}")
            if hub is not None:
                await hub.start()
            try:
                yield
            finally:
                if hub is not None:
                    await hub.stop()
        finally:
            await anyio.to_thread.run_sync(self.close)


def _quietly(close: Callable[[], object], what: str) -> None:
    """Closing one thing must not keep the rest open."""
    try:
        close()
    except Exception:
        log.exception("%s failed", what)
