"""`/metrics` as Prometheus itself sees it: promtool accepts the exposition, a real Prometheus scrapes
every sample celery-flow serves, and celery-flow's registries never clash with an app's own metrics."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client.parser import text_string_to_metric_families
from tests.support.events import finished_task
from tests.support.flow_env import flow_env
from tests.support.server_helpers import cli_process, free_port, serving
from tests.support.wait import wait_for

from celery_flow.events import encode
from celery_flow.server import CeleryFlowExtension, create_app
from celery_flow.server.metrics import TaskCollector, render
from celery_flow.store import open_store
from celery_flow.transport import from_url

pytestmark = pytest.mark.slow

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def needs(binary: str) -> pytest.MarkDecorator:
    reason = f"{binary} missing: `bash .ci/services.sh` installs Debian's prometheus package"
    return pytest.mark.skipif(not Path(binary).exists(), reason=reason)


def publish_tasks(broker_url: str, prefix: str, n: int, malformed: int = 0) -> None:
    transport = from_url(broker_url, prefix=prefix)
    try:
        entries = [encode(e) for i in range(n) for e in finished_task(f"{prefix}-task-{i}")]
        transport.publish([*entries, *[b"not json"] * malformed])
    finally:
        transport.close()


def folded(client: httpx.Client, tasks: int, rejected: int = 0, path: str = "/api/health") -> bool:
    """Every task stored, every malformed entry counted, and a lag figure taken after both (0)."""
    health = client.get(path).json()
    return bool(
        health["store"]["tasks"] == tasks
        and health["rejected_total"] == rejected
        and health["consumer"]["lag"] == 0
    )


def promtool_check(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30, check=False
    )


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


@needs(PROMTOOL)
def test_promtool_accepts_metrics_of_a_server_folding_events(
    redis_url: str, unique_prefix: str, tmp_path: Path
) -> None:
    app = create_app(broker_url=redis_url, store=f"sqlite:///{tmp_path / 'f.db'}", prefix=unique_prefix)
    with serving(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        publish_tasks(redis_url, unique_prefix, 3, malformed=1)
        wait_for(lambda: folded(client, tasks=3, rejected=1), 30, "events folded and lag measured")
        resp = client.get("/metrics")
    checked = promtool_check(resp.text)
    assert checked.returncode == 0, f"{checked.stdout}{checked.stderr}\n{resp.text}"
    assert resp.headers["content-type"] == prometheus_client.CONTENT_TYPE_LATEST
    values = samples(resp.text)
    assert values[("celery_flow_up", ())] == 1
    assert values[("celery_flow_tasks_stored", ())] == 3
    assert values[("celery_flow_consumer_lag", ())] == 0
    assert values[("celery_flow_events_rejected_total", (("kind", "not_json"),))] == 1
    assert values[("celery_flow_consumer_events_total", ())] == 12


@contextlib.contextmanager
def prometheus_scraping(target: str, tmp_path: Path) -> Iterator[httpx.Client]:
    """A real Prometheus on 127.0.0.1:<free port>, scraping `target` every second; a client to its API."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: celery-flow\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = tmp_path / "prometheus.log"
    args = [
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with (
        cli_process(*args, program=PROMETHEUS, log=log) as proc,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as api,
    ):
        try:
            wait_for(lambda: proc.poll() is None and api.get("/-/ready").status_code == 200, 60, "prometheus")
            yield api
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- prometheus log ---\n{log.read_text()}") from None


def value_of(api: httpx.Client, promql: str, at: float | None = None) -> float | None:
    """The value of a one-series PromQL result (evaluated `at` an epoch time, else now); None if none."""
    params: dict[str, Any] = {"query": promql} if at is None else {"query": promql, "time": at}
    body = api.get("/api/v1/query", params=params).json()
    assert body["status"] == "success", body
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else None


@needs(PROMETHEUS)
def test_prometheus_scrapes_every_sample_the_server_exposes(
    redis_url: str, unique_prefix: str, tmp_path: Path
) -> None:
    app = create_app(broker_url=redis_url, store=f"sqlite:///{tmp_path / 'f.db'}", prefix=unique_prefix)
    with serving(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        publish_tasks(redis_url, unique_prefix, 2)
        wait_for(lambda: folded(client, tasks=2), 30, "events folded and lag measured")
        with prometheus_scraping(base.removeprefix("http://"), tmp_path) as prom:
            job = '{job="celery-flow"}'
            wait_for(lambda: value_of(prom, f"up{job}") == 1, 60, "prometheus to scrape celery-flow (up 1)")
            wait_for(lambda: value_of(prom, f"celery_flow_tasks_stored{job}") == 2, 30, "tasks_stored 2")
            assert value_of(prom, f"celery_flow_consumer_lag{job}") == 0
            # Every sample of the last scrape became a series: none was dropped as a duplicate.
            now = time.time()
            scraped = value_of(prom, f"scrape_samples_scraped{job}", at=now)
            stored = value_of(prom, 'count({job="celery-flow", __name__=~"celery_flow_.+"})', at=now)
            assert scraped is not None
            assert stored == scraped, (prom.get("/api/v1/targets").json(), client.get("/metrics").text)


@needs(PROMTOOL)
def test_two_extensions_and_the_apps_own_metrics_do_not_clash(
    redis_url: str, unique_prefix: str, tmp_path: Path
) -> None:
    one = CeleryFlowExtension(
        broker_url=redis_url, store=f"sqlite:///{tmp_path / 'one.db'}", prefix=f"{unique_prefix}-one"
    )
    two = CeleryFlowExtension(
        broker_url=redis_url, store=f"sqlite:///{tmp_path / 'two.db'}", prefix=f"{unique_prefix}-two"
    )
    jobs = prometheus_client.Counter("myapp_jobs", "Jobs the app ran")  # the global REGISTRY

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with one.lifespan(app), two.lifespan(app):
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(one.router, prefix="/one")
    app.include_router(two.router, prefix="/two")

    @app.get("/metrics")
    def app_metrics() -> Response:
        return Response(prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST)

    try:
        jobs.inc(5)
        with serving(app, "/one/api/health") as base, httpx.Client(base_url=base, timeout=10) as client:
            publish_tasks(redis_url, f"{unique_prefix}-one", 1)
            publish_tasks(redis_url, f"{unique_prefix}-two", 2, malformed=1)
            wait_for(lambda: folded(client, 1, 0, "/one/api/health"), 30, "first extension folded")
            wait_for(lambda: folded(client, 2, 1, "/two/api/health"), 30, "second extension folded")
            bodies = {path: client.get(path).text for path in ("/one/metrics", "/two/metrics", "/metrics")}
        for path, body in bodies.items():
            checked = promtool_check(body)
            assert checked.returncode == 0, f"{path}: {checked.stdout}{checked.stderr}\n{body}"
        one_values, two_values, app_values = (samples(body) for body in bodies.values())
        assert one_values[("celery_flow_tasks_stored", ())] == 1
        assert two_values[("celery_flow_tasks_stored", ())] == 2
        assert ("celery_flow_events_rejected_total", (("kind", "not_json"),)) not in one_values
        assert two_values[("celery_flow_events_rejected_total", (("kind", "not_json"),))] == 1
        assert app_values[("myapp_jobs_total", ())] == 5
        assert not [name for name, _ in app_values if name.startswith("celery_flow_")]
        assert not [name for name, _ in one_values if not name.startswith("celery_flow_")]
    finally:
        prometheus_client.REGISTRY.unregister(jobs)


@needs(PROMETHEUS)
@needs(PROMTOOL)
def test_prometheus_reads_the_tasks_a_real_worker_ran(redis_url: str, tmp_path: Path) -> None:
    with flow_env(f"sqlite:///{tmp_path / 'f.db'}", redis_url, redis_url) as env:
        ids = [env.task("add").delay(1, i).id for i in range(3)]
        ids += [env.task("slow").delay(0.05).id for _ in range(2)]
        ids.append(env.task("fail").delay().id)

        def exported() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            values = samples(env.api.get("/metrics").text)
            done = values.get(("celery_flow_tasks_total", (("name", "t.slow"), ("state", "SUCCESS"))))
            return values if done == 2 else None

        values = wait_for(exported, 60, "the tasks in /metrics")
        body = env.api.get("/metrics").text
        checked = promtool_check(body)
        assert checked.returncode == 0, f"{checked.stdout}{checked.stderr}\n{body}"
        assert values[("celery_flow_tasks_total", (("name", "t.add"), ("state", "SUCCESS")))] == 3
        assert values[("celery_flow_tasks_total", (("name", "t.fail"), ("state", "FAILURE")))] == 1
        assert values[("celery_flow_task_runtime_seconds_count", (("name", "t.slow"),))] == 2
        assert values[("celery_flow_workers_online", ())] == 1
        base = str(env.api.base_url).rstrip("/")
        with prometheus_scraping(base.removeprefix("http://"), tmp_path) as prom:
            job = 'job="celery-flow"'
            query = f'celery_flow_tasks_total{{{job},name="t.add",state="SUCCESS"}}'
            wait_for(lambda: value_of(prom, query) == 3, 60, "prometheus to scrape t.add's count")
            inf = f'celery_flow_task_runtime_seconds_bucket{{{job},name="t.slow",le="+Inf"}}'
            assert value_of(prom, inf) == 2
            # 0.05 s runs: none in the buckets up to 10 ms, both by 10 s.
            assert (
                value_of(prom, f'celery_flow_task_runtime_seconds_bucket{{{job},name="t.slow",le="0.01"}}')
                == 0
            )
            assert (
                value_of(prom, f'celery_flow_task_runtime_seconds_bucket{{{job},name="t.slow",le="10"}}') == 2
            )
            p50 = value_of(
                prom,
                f'histogram_quantile(0.5, celery_flow_task_runtime_seconds_bucket{{{job},name="t.slow"}})',
            )
            assert p50 is not None
            assert 0.01 < p50 <= 10
            waits = f'celery_flow_task_queue_wait_seconds_count{{{job},name="t.add"}}'
            assert value_of(prom, waits) == 3


def test_names_beyond_the_limit_count_as_other(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'f.db'}")
    try:
        for i, name in enumerate(["a", "b", "c"]):
            for j in range(3 - i):
                store.apply(finished_task(f"{name}{j}", name=name, runtime=0.1))
        registry = prometheus_client.CollectorRegistry(auto_describe=False)
        registry.register(TaskCollector(store.all_time, max_names=2))
        values = samples(render(registry).decode())
    finally:
        store.close()
    names = {dict(labels).get("name") for key, labels in values if key == "celery_flow_tasks_total"}
    assert names == {"a", "b", "other"}
    assert values[("celery_flow_tasks_total", (("name", "other"), ("state", "SUCCESS")))] == 1
    count = "celery_flow_task_runtime_seconds_count"
    assert {dict(labels)["name"] for key, labels in values if key == count} == {"a", "b", "other"}
