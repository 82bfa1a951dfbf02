"""The REST API of DESIGN.md §5 over real HTTP: filters, cursor paging, 404/422 (never 500), docs,
metrics, and the SPA served for every UI path."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
from tests.support.events import event
from tests.support.server_helpers import serving
from tests.support.wait import wait_for

from celery_flow.events import Event, TaskInfo, encode
from celery_flow.server import CeleryFlowExtension, create_app
from celery_flow.transport.memory import MemoryTransport

T0 = time.time() - 600
N_PAGED = 23


def lifecycle(task_id: str, name: str, ts: float, final: str = "succeeded", **fields: Any) -> list[Event]:
    host = fields.pop("hostname", "celery@w1")
    common = {"name": name, "retries": 0, **fields}
    out = [event("sent", task_id, ts, **common, args=[1, 2], kwargs={"k": "v"})]
    if final == "sent":
        return out
    out += [
        event("received", task_id, ts + 0.1, hostname=host, **common),
        event("started", task_id, ts + 0.2, hostname=host, pid=42, **common),
    ]
    if final == "started":
        return out
    extra = (
        {"result": 3, "runtime": 0.5}
        if final == "succeeded"
        else {"exception": "ValueError: bad", "traceback": "Traceback...\nValueError: bad", "runtime": 0.5}
    )
    return [*out, event(final, task_id, ts + 0.7, hostname=host, **common, **extra)]


class Data:
    def __init__(self) -> None:
        self.a, self.b, self.c = (f"{p}-{uuid.uuid4().hex}" for p in ("root", "child", "running"))
        self.paged = [f"page-{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(N_PAGED)]
        self.events: list[Event] = [
            *lifecycle(self.a, "t.add", T0, root_id=self.a, trace_id="trace-1"),
            *lifecycle(
                self.b,
                "t.mul",
                T0 + 1,
                "failed",
                root_id=self.a,
                parent_id=self.a,
                trace_id="trace-1",
                hostname="celery@w2",
            ),
            *lifecycle(self.c, "t.slow", T0 + 100, "started", root_id=self.c, trace_id="trace-2"),
            event(
                "worker.online",
                hostname="celery@w1",
                pid=7,
                info={"pool": "prefork", "concurrency": 4},
                tasks=[TaskInfo(name="t.add", signature="(x, y)", doc="Add."), TaskInfo(name="t.never_run")],
            ),
            event("worker.online", hostname="celery@w2", pid=8),
            event("worker.offline", hostname="celery@w2", pid=8),
        ]
        for i, task_id in enumerate(self.paged):
            self.events += lifecycle(task_id, "t.page", T0 + 200 + i, root_id=task_id)


@pytest.fixture(scope="module")
def data() -> Data:
    return Data()


@pytest.fixture(scope="module")
def api(data: Data, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    url = f"memory://{uuid.uuid4().hex}"
    MemoryTransport(url).publish([encode(e) for e in data.events])
    app = create_app(broker_url=url, store=f"sqlite:///{tmp_path_factory.mktemp('api') / 'f.db'}")
    with serving(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        total = 3 + N_PAGED
        wait_for(lambda: client.get("/api/health").json()["store"]["tasks"] == total, 20, "events folded")
        yield client


def ids(resp: httpx.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [item["task_id"] for item in resp.json()["items"]]


def test_task_filters(api: httpx.Client, data: Data) -> None:
    assert ids(api.get("/api/tasks", params={"state": "FAILURE"})) == [data.b]
    assert ids(api.get("/api/tasks", params={"name": "t.mul"})) == [data.b]
    assert set(ids(api.get("/api/tasks", params={"root_id": data.a}))) == {data.a, data.b}
    assert set(ids(api.get("/api/tasks", params={"trace_id": "trace-1"}))) == {data.a, data.b}
    assert ids(api.get("/api/tasks", params={"worker": "celery@w2"})) == [data.b]
    assert ids(api.get("/api/tasks", params={"q": data.c[:15]})) == [data.c]
    assert ids(api.get("/api/tasks", params={"q": "t.sl"})) == [data.c]
    window = {"since": T0 + 50, "until": T0 + 150}
    assert ids(api.get("/api/tasks", params=window)) == [data.c]
    assert ids(api.get("/api/tasks", params={"state": "SUCCESS", "name": "t.mul"})) == []


def test_cursor_paging_walks_everything_once_newest_first(api: httpx.Client, data: Data) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"name": "t.page", "limit": 5}
        if cursor:
            params["cursor"] = cursor
        body = api.get("/api/tasks", params=params).json()
        seen += [i["task_id"] for i in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(data.paged))
    assert pages == 5
    big = api.get("/api/tasks", params={"limit": 500})
    assert big.headers["content-encoding"] == "gzip"  # large pages are compressed


def test_flows_list_filters_and_pages(api: httpx.Client, data: Data) -> None:
    body = api.get("/api/flows", params={"root_id": data.a}).json()
    (flow,) = body["items"]
    assert flow["root_id"] == data.a
    assert flow["state"] == "FAILURE"
    assert flow["task_count"] == 2
    assert flow["counts"] == {"SUCCESS": 1, "FAILURE": 1}
    running = api.get("/api/flows", params={"state": "RUNNING"}).json()["items"]
    assert [f["root_id"] for f in running] == [data.c]
    first = api.get("/api/flows", params={"limit": 2}).json()
    second = api.get("/api/flows", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert len(first["items"]) == len(second["items"]) == 2
    assert not {f["root_id"] for f in first["items"]} & {f["root_id"] for f in second["items"]}


def test_task_detail_has_everything(api: httpx.Client, data: Data) -> None:
    task = api.get(f"/api/tasks/{data.b}").json()
    assert task["state"] == "FAILURE"
    assert task["args"] == [1, 2]
    assert task["kwargs"] == {"k": "v"}
    assert task["exception"] == "ValueError: bad"
    assert task["traceback"].endswith("ValueError: bad")
    assert [e["type"] for e in task["events"]] == ["sent", "received", "started", "failed"]
    assert task["parent_id"] == data.a


def test_flow_graph_and_trace(api: httpx.Client, data: Data) -> None:
    graph = api.get(f"/api/flows/{data.a}").json()
    assert {n["task_id"] for n in graph["nodes"]} == {data.a, data.b}
    assert graph["edges"] == [{"source": data.a, "target": data.b, "kind": "spawn", "count": 1}]
    trace = api.get("/api/traces/trace-1").json()
    assert [f["root_id"] for f in trace["flows"]] == [data.a]
    assert {t["task_id"] for t in trace["tasks"]} == {data.a, data.b}


# ---- the flow page and the flow list tell the same state ------------------------------------------


@dataclass
class Mixed:
    """A flow with a failed branch while another still runs, one whose last step was rejected, and a
    group applied outside a task (rooted at its group id, which no task has)."""

    running: str = field(default_factory=lambda: f"mixed-{uuid.uuid4().hex}")
    rejected: str = field(default_factory=lambda: f"rejected-{uuid.uuid4().hex}")
    group: str = field(default_factory=lambda: f"group-{uuid.uuid4().hex}")

    def events(self) -> list[Event]:
        lineage = {"root_id": self.running, "parent_id": self.running, "trace_id": "trace-mixed"}
        rejected = {"root_id": self.rejected, "parent_id": self.rejected}
        return [
            *lifecycle(self.running, "t.fan_out", T0, root_id=self.running, trace_id="trace-mixed"),
            *lifecycle(f"{self.running}-a", "t.charge", T0 + 1, "failed", **lineage),
            *lifecycle(f"{self.running}-b", "t.resize", T0 + 1, "started", **lineage),
            *lifecycle(self.rejected, "t.order", T0 + 10, root_id=self.rejected),
            *lifecycle(f"{self.rejected}-a", "t.ship", T0 + 11, "rejected", **rejected),
            *lifecycle(f"{self.group}-a", "t.resize", T0 + 20, root_id=self.group, group_id=self.group),
            *lifecycle(f"{self.group}-b", "t.thumb", T0 + 21, root_id=self.group, group_id=self.group),
        ]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Mixed]]:
    flows = Mixed()
    url = f"memory://{uuid.uuid4().hex}"
    MemoryTransport(url).publish([encode(e) for e in flows.events()])
    app = create_app(broker_url=url, store=f"sqlite:///{tmp_path_factory.mktemp('mixed') / 'f.db'}")
    with serving(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        wait_for(lambda: client.get("/api/health").json()["store"]["tasks"] == 7, 20, "events folded")
        yield client, flows


@pytest.mark.parametrize(
    ("flow", "state"), [("running", "FAILURE"), ("rejected", "REJECTED"), ("group", "SUCCESS")]
)
def test_flow_page_summary_is_the_flow_list_row(
    mixed: tuple[httpx.Client, Mixed], flow: str, state: str
) -> None:
    client, flows = mixed
    root_id = getattr(flows, flow)
    (row,) = client.get("/api/flows", params={"root_id": root_id}).json()["items"]
    graph = client.get(f"/api/flows/{root_id}").json()
    assert row["state"] == state
    assert graph["summary"] == row


def test_trace_gives_each_flow_and_the_whole_trace_the_server_state(
    mixed: tuple[httpx.Client, Mixed],
) -> None:
    client, flows = mixed
    trace = client.get("/api/traces/trace-mixed").json()
    assert [(f["root_id"], f["state"]) for f in trace["flows"]] == [(flows.running, "FAILURE")]
    summary = trace["summary"]
    assert summary["state"] == "FAILURE"
    assert summary["counts"] == {"SUCCESS": 1, "FAILURE": 1, "STARTED": 1}
    assert summary["task_count"] == 3
    assert summary["finished_at"] is None  # a branch still runs


def test_openapi_names_the_state_enums_and_the_terminal_states(api: httpx.Client) -> None:
    schemas = api.get("/api/openapi.json").json()["components"]["schemas"]
    terminal = ["SUCCESS", "FAILURE", "REVOKED", "REJECTED", "NOT_RUN", "LOST"]
    assert schemas["TerminalState"]["enum"] == terminal
    assert schemas["UnfinishedState"]["enum"] == ["PLANNED", "PENDING", "RECEIVED", "STARTED", "RETRY"]
    flow_states = ["PENDING", "RUNNING", "SUCCESS", "FAILURE", "REVOKED", "REJECTED", "LOST"]
    assert schemas["FlowState"]["enum"] == flow_states
    assert schemas["FlowGraph"]["properties"]["summary"] == {"$ref": "#/components/schemas/FlowSummary"}


def test_registry_and_workers(api: httpx.Client) -> None:
    registry = {r["name"]: r for r in api.get("/api/registry").json()}
    assert registry["t.page"]["counts"] == {"SUCCESS": N_PAGED}
    assert registry["t.mul"]["failure_rate"] == 1.0
    assert registry["t.add"]["signature"] == "(x, y)"
    assert registry["t.never_run"]["total"] == 0  # registered on a worker, never run
    workers = {w["hostname"]: w for w in api.get("/api/workers").json()}
    assert workers["celery@w1"]["status"] == "online"
    assert workers["celery@w2"]["status"] == "offline"


@pytest.mark.parametrize(
    "path",
    ["/api/tasks/nope", "/api/flows/nope", "/api/traces/nope", "/api/tasks/%E2%9C%93", "/api/nothing-here"],
)
def test_unknown_ids_are_404_json(api: httpx.Client, path: str) -> None:
    resp = api.get(path)
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["detail"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/tasks", {"cursor": "garbage"}),
        ("/api/tasks", {"cursor": "eyJ4IjoxfQ"}),
        ("/api/flows", {"cursor": "!!!"}),
        ("/api/tasks", {"limit": 0}),
        ("/api/tasks", {"limit": 501}),
        ("/api/tasks", {"limit": "ten"}),
        ("/api/tasks", {"state": "DONE"}),
        ("/api/flows", {"state": "STARTED"}),
        ("/api/tasks", {"since": "yesterday"}),
        ("/api/tasks", {"since": -1}),
        ("/api/tasks", {"since": 10, "until": 5}),
        ("/api/tasks", {"name": "x" * 600}),
        ("/api/tasks", {"stuck": "maybe"}),
        ("/api/tasks/" + "x" * 300, {}),
    ],
)
def test_bad_query_values_are_422(api: httpx.Client, path: str, params: dict[str, Any]) -> None:
    resp = api.get(path, params=params)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"q": "%"},
        {"q": "_"},
        {"q": "'; DROP TABLE tasks; --"},
        {"q": "\u2603\u0000"},
        {"name": "\\"},
        {"since": 1e308},
        {"until": 0},
        {"root_id": "*"},
        {"worker": "celery@w1\"'"},
        {"stuck": "true", "q": "t.sl", "until": 0},
    ],
)
def test_odd_but_valid_input_never_500s(api: httpx.Client, params: dict[str, Any]) -> None:
    resp = api.get("/api/tasks", params=params)
    assert resp.status_code in (200, 422), resp.text
    resp = api.get("/api/flows", params=params)
    assert resp.status_code in (200, 422), resp.text
    resp = api.get("/api/failures", params=params)
    assert resp.status_code in (200, 422), resp.text
    for path in ("/api/stats/overview", "/api/stats/heatmap", "/api/stats/names/t.x", "/api/stats/names/a/b"):
        resp = api.get(path, params=params)
        assert resp.status_code in (200, 422), resp.text


@pytest.mark.parametrize(
    "params",
    [
        {"metric": "cpu"},
        {"since": "nan"},
        {"since": "inf"},
        {"since": 10, "until": 5},
        {"since": -1},
        {"since": 0, "until": 1e300},
    ],
)
def test_stats_endpoints_refuse_or_clamp_odd_windows(api: httpx.Client, params: dict[str, Any]) -> None:
    for path in ("/api/stats/overview", "/api/stats/heatmap", "/api/stats/names/t.x"):
        resp = api.get(path, params=params)
        assert resp.status_code in (200, 422), resp.text


def test_openapi_documents_every_endpoint(api: httpx.Client) -> None:
    spec = api.get("/api/openapi.json").json()
    assert set(spec["paths"]) >= {
        "/api/health",
        "/api/tasks",
        "/api/tasks/{task_id}",
        "/api/flows",
        "/api/flows/{root_id}",
        "/api/traces/{trace_id}",
        "/api/registry",
        "/api/workers",
        "/api/failures",
        "/api/stats/heatmap",
        "/api/stats/overview",
        "/api/stats/names/{name}",
    }
    assert spec["servers"] == [{"url": "/"}]
    params = {p["name"] for p in spec["paths"]["/api/tasks"]["get"]["parameters"]}
    assert params == {
        "state",
        "name",
        "root_id",
        "trace_id",
        "worker",
        "q",
        "since",
        "until",
        "limit",
        "cursor",
        "fingerprint",
        "stuck",
        "queue",
    }
    assert api.get("/api/docs").status_code == 200


def test_metrics_in_prometheus_format(api: httpx.Client) -> None:
    resp = api.get("/metrics")
    assert resp.headers["content-type"] == prometheus_client.CONTENT_TYPE_LATEST
    lines = resp.text.splitlines()
    assert "celery_flow_up 1.0" in lines
    assert f"celery_flow_tasks_stored {3 + N_PAGED}.0" in lines
    assert "# TYPE celery_flow_events_rejected_total counter" in lines
    assert any(line.startswith("celery_flow_consumer_events_total ") for line in lines)


def test_health(api: httpx.Client) -> None:
    # The consumer refreshes its lag figure every 2 s: wait for a snapshot taken after the seed batch.
    health = wait_for(lambda: (h := api.get("/api/health").json())["consumer"]["lag"] == 0 and h, 20, "lag 0")
    assert health["status"] == "ok"
    assert health["transport"]["reachable"] is True
    assert health["store"]["reachable"] is True
    assert health["consumer"]["mode"] == "embedded"
    assert health["rejected"] == {}
    assert health["publisher_dropped"] == 0


# ---- the SPA --------------------------------------------------------------------------------------

INDEX = '<!doctype html><html><head><base href="/"><script src="./assets/app.js"></script></head></html>'
UI_PATHS = ["/", "/flows/abc", "/tasks/abc", "/traces/abc", "/registry", "/workers", "/flows/a%20b"]


@pytest.fixture(scope="module")
def built_ui(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ui = tmp_path_factory.mktemp("static")
    (ui / "index.html").write_text(INDEX)
    (ui / "assets").mkdir()
    (ui / "assets" / "app.js").write_text("console.log('ui')")
    (ui / "favicon.svg").write_text("<svg/>")
    return ui


def spa_app(static: Path, tmp_path: Path, mount: str) -> Any:
    from fastapi import FastAPI

    ext = CeleryFlowExtension(store=f"sqlite:///{tmp_path / 'f.db'}", static_dir=static)
    app = FastAPI(lifespan=ext.lifespan)
    app.include_router(ext.router, prefix=mount)
    return app


def test_every_ui_path_serves_index_with_the_mount_root(built_ui: Path, tmp_path: Path) -> None:
    for mount in ("", "/mounted/flow"):
        app = spa_app(built_ui, tmp_path, mount)
        with serving(app, mount + "/api/health") as base, httpx.Client(base_url=base) as client:
            for path in UI_PATHS:
                resp = client.get(mount + path)
                assert resp.status_code == 200, path
                assert resp.headers["content-type"].startswith("text/html")
                assert f'<base href="{mount}/">' in resp.text, (mount, path)
            js = client.get(mount + "/assets/app.js")
            assert js.text == "console.log('ui')"
            assert "javascript" in js.headers["content-type"]
            assert "immutable" in js.headers["cache-control"]
            assert client.get(mount + "/favicon.svg").headers["content-type"].startswith("image/svg")
            assert client.get(mount + "/assets/missing.js").status_code == 404
            assert client.get(mount + "/api/unknown").status_code == 404
            for evil in ("/..%2f..%2f..%2fetc%2fpasswd", "/assets/..%2f..%2f..%2f..%2fetc%2fpasswd"):
                resp = client.get(mount + evil)
                assert "root:" not in resp.text


def test_a_missing_build_explains_how_to_build_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for mount in ("", "/mounted/flow"):
        with serving(spa_app(empty, tmp_path, mount), mount + "/api/health") as base:
            for path in ("/", "/flows/x", "/workers"):
                resp = httpx.get(base + mount + path)
                assert resp.status_code == 200
                assert "make ui" in resp.text
                assert "cd frontend &amp;&amp; npm ci &amp;&amp; npm run build" in resp.text
                assert f'href="{mount}/api/health"' in resp.text
