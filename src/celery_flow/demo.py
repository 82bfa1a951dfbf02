# Celery is untyped: its task decorator would make every demo task "untyped" to mypy.
# mypy: disable-error-code="untyped-decorator"
"""`celery-flow demo`: a self-contained Celery app producing realistic workflows, served by celery-flow.

Nothing external is needed: Celery runs on kombu's in-process `memory://` broker with the in-memory
cache result backend (which joins chords natively, so no `chord_unlock` polling tasks), a worker runs in
a thread (threads pool), and celery-flow's own events travel over the in-process `memory://` transport
that the server's embedded consumer reads. Data goes to a SQLite file in a fresh temporary directory,
deleted on exit (pass `--store` to keep it).

The workflows cover every canvas shape the UI draws: chains, groups, chords, a chord of chains, a chain
holding a group and a chord, tasks spawning tasks with `.delay()`, retries with a countdown, failures
with an errback, a task scheduled with an ETA, and a `password` keyword argument that shows up scrubbed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from celery import Celery, chain, chord, group

log = logging.getLogger("celery_flow.demo")

DEMO_PREFIX = "celery_flow_demo"
DEMO_TRANSPORT = "memory://celery-flow-demo"
# Tasks the demo's server keeps at most: it runs for hours in a demo without filling a disk.
DEMO_MAX_TASKS = 20_000


def _pause(low: float = 0.05, high: float = 0.6) -> None:
    time.sleep(random.uniform(low, high))


def build_app(transport_url: str = DEMO_TRANSPORT, prefix: str = DEMO_PREFIX) -> Celery:
    """The demo's Celery app, instrumented with `celery_flow.init()`; tasks look like a small shop."""
    import celery_flow

    app = Celery("shop", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.update(
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=8,
        result_expires=600,
        task_default_queue="default",
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="shop.fetch_order")
    def fetch_order(order_id: int) -> dict[str, Any]:
        """Load an order from the database."""
        _pause()
        return {
            "order_id": order_id,
            "amount": round(random.uniform(5, 500), 2),
            "items": random.randint(1, 6),
        }

    @app.task(name="shop.charge_card", bind=True, max_retries=4)
    def charge_card(self: Any, order: dict[str, Any], card_last4: str, password: str | None = None) -> str:
        """Charge the customer's card; the payment gateway times out now and then (retried)."""
        _pause(0.1, 0.4)
        if random.random() < 0.35 and self.request.retries < 2:
            raise self.retry(countdown=1, exc=TimeoutError("payment gateway timed out after 30s"))
        return f"ch_{order['order_id']:06d}"

    @app.task(name="shop.send_receipt")
    def send_receipt(charge_id: str) -> str:
        """Email the receipt."""
        _pause()
        return f"receipt sent for {charge_id}"

    @app.task(name="shop.validate_address")
    def validate_address(order_id: int, postcode: str) -> str:
        """Check a shipping address; rejects malformed postcodes."""
        _pause()
        if not postcode.isdigit():
            raise ValueError(f"invalid postcode {postcode!r} for order {order_id}")
        return postcode

    @app.task(name="alerts.notify_failure")
    def notify_failure(task_id: str) -> str:
        """Errback: tell the on-call channel which task failed."""
        _pause(0.05, 0.2)
        return f"alerted about {task_id}"

    @app.task(name="media.resize_image")
    def resize_image(*args: Any, image_id: int = 0, size: int = 256) -> str:
        """Render one thumbnail size."""
        _pause(0.1, 0.8)
        return f"img{image_id}@{size}px"

    @app.task(name="reports.fetch_page")
    def fetch_page(*args: Any, page: int = 1) -> int:
        """Fetch one page of sales data."""
        _pause(0.1, 0.9)
        return random.randint(10, 100)

    @app.task(name="reports.aggregate")
    def aggregate(pages: list[Any]) -> dict[str, Any]:
        """Sum the pages fetched by the chord header."""
        _pause()
        numbers = [p for p in pages if isinstance(p, int | float)]
        return {"pages": len(pages), "total": sum(numbers)}

    @app.task(name="reports.publish")
    def publish(summary: Any) -> str:
        """Publish the report."""
        _pause()
        return "published"

    @app.task(name="etl.extract")
    def extract(source: str) -> list[int]:
        """Extract rows from one source."""
        _pause(0.1, 0.7)
        return [random.randint(0, 9) for _ in range(5)]

    @app.task(name="etl.transform")
    def transform(rows: list[int]) -> int:
        """Transform extracted rows."""
        _pause()
        return sum(rows)

    @app.task(name="etl.load")
    def load(results: list[int]) -> int:
        """Load everything into the warehouse."""
        _pause()
        return sum(results)

    @app.task(name="crawler.crawl", bind=True)
    def crawl(self: Any, url: str, depth: int) -> int:
        """Crawl a page and spawn crawls of the links found (nested spawns via .delay())."""
        _pause(0.1, 0.5)
        if depth > 0:
            for n in range(random.randint(1, 3)):
                crawl.delay(f"{url}/{n}", depth - 1)
        return depth

    @app.task(name="shop.start_batch")
    def start_batch(kind: str, n: int) -> str:
        """Kick off a batch canvas from inside a task, like a periodic job: one flow holds it all."""
        _pause(0.02, 0.1)
        return str(app.celery_flow_demo_workflows[kind](n))

    @app.task(name="reports.nightly_digest")
    def nightly_digest() -> str:
        """Scheduled with an ETA a few seconds ahead."""
        _pause()
        return "digest sent"

    app.celery_flow_demo_tasks = {
        "fetch_order": fetch_order, "charge_card": charge_card, "send_receipt": send_receipt,
        "validate_address": validate_address, "notify_failure": notify_failure,
        "resize_image": resize_image, "fetch_page": fetch_page, "aggregate": aggregate, "publish": publish,
        "extract": extract, "transform": transform, "load": load, "crawl": crawl,
        "nightly_digest": nightly_digest, "start_batch": start_batch,
    }  # fmt: skip
    celery_flow.init(app, transport_url=transport_url, prefix=prefix)
    return app


def workflows(app: Celery) -> list[Callable[[int], object]]:
    """One starter per canvas shape; each takes a running number and publishes one root workflow."""
    t = app.celery_flow_demo_tasks

    def checkout(n: int) -> object:
        return chain(
            t["fetch_order"].s(n),
            t["charge_card"].s("4242", password="hunter2"),  # noqa: S106 - shown scrubbed
            t["send_receipt"].s(),
        ).apply_async()

    def thumbnails(n: int) -> object:
        return group(t["resize_image"].s(image_id=n, size=s) for s in (64, 256, 1024)).apply_async()

    def report(n: int) -> object:
        header = [t["fetch_page"].s(page=p) for p in range(1, 5)]
        return (chord(header, t["aggregate"].s()) | t["publish"].s()).apply_async()

    def etl(n: int) -> object:
        header = [chain(t["extract"].s(src), t["transform"].s()) for src in ("orders", "users", "stock")]
        return chord(header, t["load"].s()).apply_async()

    def pipeline(n: int) -> object:
        return chain(
            t["fetch_order"].s(n),
            group(t["resize_image"].s(image_id=n, size=s) for s in (64, 256)),
            chord([t["fetch_page"].s(page=p) for p in (1, 2)], t["aggregate"].s()),
        ).apply_async()

    def crawler(n: int) -> object:
        return t["crawl"].delay(f"https://example.com/{n}", 2)

    def bad_address(n: int) -> object:
        return t["validate_address"].apply_async((n, f"SW{n}"), link_error=t["notify_failure"].s())

    def scheduled(n: int) -> object:
        return t["nightly_digest"].apply_async(countdown=3)

    # Canvases whose first step is a group or chord get every member as its own root in Celery when
    # started from outside a task; started from a task (as batch jobs usually are) they form one flow.
    app.celery_flow_demo_workflows = {"thumbnails": thumbnails, "report": report, "etl": etl}

    def batch(kind: str) -> Callable[[int], object]:
        def start(n: int) -> object:
            return t["start_batch"].delay(kind, n)

        start.__name__ = kind
        return start

    return [checkout, batch("thumbnails"), batch("report"), batch("etl"), pipeline, crawler, bad_address,
            checkout, scheduled]  # fmt: skip


def produce(app: Celery, stop: threading.Event, rate: float) -> None:
    """Start workflows at `rate` per second until `stop` is set; errors are logged, never fatal."""
    starters = workflows(app)
    for n in itertools.count(1):
        if stop.is_set():
            return
        starter = starters[(n - 1) % len(starters)]
        try:
            starter(n)
        except Exception:
            log.exception("demo: starting %s failed", starter.__name__)
        stop.wait(1.0 / rate)


def quiet_expected_failures() -> None:
    """The demo's failures are on purpose: keep their tracebacks in the UI, not on the terminal."""
    for noisy, level in (("celery.app.trace", logging.CRITICAL), ("kombu.connection", logging.ERROR)):
        logging.getLogger(noisy).setLevel(level)


@contextlib.contextmanager
def running_demo(rate: float = 1.0, prefix: str = DEMO_PREFIX) -> Iterator[Celery]:
    """The demo app with its worker thread and producer thread running (stopped on exit)."""
    from celery.contrib.testing.worker import start_worker

    app = build_app(prefix=prefix)
    stop = threading.Event()
    with start_worker(
        app, pool="threads", concurrency=8, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=5
    ):
        producer = threading.Thread(target=produce, args=(app, stop, rate), name="demo-producer", daemon=True)
        producer.start()
        try:
            yield app
        finally:
            stop.set()
            producer.join(5)
    with contextlib.suppress(Exception):
        import celery_flow

        celery_flow.shutdown(app)
