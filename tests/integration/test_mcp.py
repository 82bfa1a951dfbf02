"""The MCP server, driven by the MCP SDK's own client: over HTTP (`/mcp` of a served server, and of the
extension mounted in a user's app), and over stdio (`celery-flow mcp` as a subprocess, reading the store
or a server). A real worker runs a chord, failing tasks and a task with a customer's keyword arguments;
the tools must answer what the REST API answers.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import httpx2
import pytest
from celery.contrib.testing.worker import start_worker
from fastapi import FastAPI, Header, HTTPException
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from tests.support.canvas_app import make_app
from tests.support.failing_tasks import register_failing
from tests.support.mcp_client import run_session, tool_text
from tests.support.server_helpers import CLI, cli_env, cli_process, free_port, serving
from tests.support.server_tasks import register_launcher
from tests.support.wait import tasks_finished, wait_for, wait_indexed

import celery_flow
from celery_flow.server import CeleryFlowExtension, create_app
from celery_flow.server.auth import require_basic_auth

pytestmark = pytest.mark.slow

T = TypeVar("T")
TOOL_NAMES = {"search_tasks", "get_task", "get_flow", "list_failures", "overview", "list_schedules"}
USER, PASSWORD = "ops", "s3cret:pass"
CHARGES = 3


@dataclass
class Ran:
    url: str
    store_url: str
    api: httpx.Client
    chord_root: str
    charges: list[str]
    echo: str
    big: str
    customer: str

    def get(self, path: str) -> Any:
        resp = self.api.get(path)
        resp.raise_for_status()
        return resp.json()


@pytest.fixture(scope="module")
def ran(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:
    prefix = f"cft_{uuid.uuid4().hex[:8]}"
    store_url = f"sqlite:///{tmp_path_factory.mktemp('mcp') / 'flow.db'}"
    app = make_app(redis_url, redis_url, redis_url, prefix, queue=f"q_{prefix}")
    register_failing(app)
    register_launcher(app)
    server = create_app(broker_url=redis_url, store=store_url, prefix=prefix)
    customer = f"cust-{uuid.uuid4().hex[:10]}"
    try:
        with (
            serving(server) as url,
            httpx.Client(base_url=url, timeout=10) as api,
            start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="CRITICAL",
                         shutdown_timeout=10),
        ):  # fmt: skip
            launched = app.tasks["st.launch"].delay("chord")
            chord_root = launched.id
            launched.get(timeout=20)
            charges = [app.tasks["ft.charge"].delay(5000 + i * 37).id for i in range(CHARGES)]
            echo = app.tasks["t.echo"].delay(customer_id=customer, password="hunter2-secret").id
            big = app.tasks["t.echo"].delay(blob="x" * 20_000).id
            wait_for(lambda: tasks_finished(api, [*charges, echo, big]), 60, "the tasks to finish")

            def chord_done() -> bool:
                resp = api.get(f"/api/flows/{chord_root}")
                return resp.status_code == 200 and resp.json()["summary"]["state"] == "SUCCESS"

            wait_for(chord_done, 60, "the chord to finish")
            wait_indexed(lambda: api.get("/api/health").json(), time.time())
            yield Ran(url, store_url, api, chord_root, charges, echo, big, customer)
    finally:
        celery_flow.shutdown(app)


@dataclass
class Answers:
    tools: set[str]
    flow: str
    failures: str
    search: str
    task: str


async def _ask(ran: Ran, client: Client) -> Answers:
    listing = await client.list_tools()
    assert all(t.annotations and t.annotations.read_only_hint for t in listing.tools)
    return Answers(
        tools={t.name for t in listing.tools},
        flow=await tool_text(client, "get_flow", {"root_id": ran.chord_root}),
        failures=await tool_text(client, "list_failures", {}),
        search=await tool_text(client, "search_tasks", {"q": f"customer_id:{ran.customer}"}),
        task=await tool_text(client, "get_task", {"task_id": ran.echo}),
    )


def _check(ran: Ran, answers: Answers) -> None:
    """The answers say what the REST API says: every task and edge of the chord, every cluster."""
    assert answers.tools == TOOL_NAMES
    graph = ran.get(f"/api/flows/{ran.chord_root}")
    assert len(graph["nodes"]) == 5  # the launcher, 3 members, the callback
    lines = answers.flow.splitlines()
    for node in graph["nodes"]:
        line = next(line for line in lines if line.startswith(f"- {node['task_id']} "))
        assert f" {node['name']} {node['state']}" in line
    names = {node["task_id"]: node["name"] for node in graph["nodes"]}
    for edge in graph["edges"]:
        source, target = edge["source"], edge["target"]
        assert f"- {source} {names[source]} -> {target} {names[target]} ({edge['kind']})" in lines
    (chord,) = graph["groups"]
    members = ", ".join(chord["members"])
    assert f"- chord {chord['id']}: members {members} -> callback {chord['callback_id']}" in lines

    clusters = ran.get("/api/failures")["items"]
    assert clusters
    for cluster in clusters:
        start = f"- {cluster['fingerprint']} "
        line = next(line for line in answers.failures.splitlines() if line.startswith(start))
        assert f"{cluster['exception_type']}: {cluster['message']} | {cluster['count']} failed" in line
    assert f"{CHARGES} failed" in answers.failures

    assert answers.search.splitlines()[0] == "1 tasks, newest first:"
    assert answers.search.splitlines()[1].startswith(f"{ran.echo} t.echo SUCCESS")
    # Scrubbed when it was tracked, so scrubbed here: the store's value, never the original.
    assert ran.customer in answers.task
    assert "hunter2" not in answers.task
    assert '"password": "[Filtered]"' in answers.task


def test_the_tools_over_http_answer_what_the_api_answers(ran: Ran) -> None:
    _check(ran, run_session(lambda c: _ask(ran, c), Client(f"{ran.url}/mcp")))


def test_the_tools_over_stdio_reading_the_store(ran: Ran) -> None:
    params = StdioServerParameters(command=CLI[0], args=["mcp", "--store", ran.store_url], env=cli_env())
    _check(ran, run_session(lambda c: _ask(ran, c), Client(params)))


def test_stdio_writes_nothing_but_the_protocol_to_stdout(ran: Ran, tmp_path: Path) -> None:
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
         "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "search_tasks", "arguments": {"name": "ft.charge"}}},
    ]  # fmt: skip
    args = [*CLI, "mcp", "--store", ran.store_url, "--log-level", "debug"]
    log = tmp_path / "stderr.log"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                env=cli_env())  # fmt: skip
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None
    assert stdout is not None
    try:
        stdin.write("".join(json.dumps(m) + "\n" for m in messages).encode())
        stdin.flush()
        # Every line on stdout is a JSON-RPC message: the two answers, then nothing once stdin closes.
        answers = [json.loads(stdout.readline()) for _ in range(2)]
        stdin.close()
        assert stdout.read() == b""
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert "DEBUG" in log.read_text()  # the log went to stderr
    assert [a["id"] for a in answers] == [1, 2]
    assert answers[0]["result"]["serverInfo"]["name"] == "celery-flow"
    text = answers[1]["result"]["content"][0]["text"]
    assert {line.split()[0] for line in text.splitlines()[1:]} == set(ran.charges)


def _authed_client(url: str, headers: dict[str, str]) -> Client:
    http = httpx2.AsyncClient(headers=headers)
    return Client(streamable_http_client(url, http_client=http))


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def secured(ran: Ran) -> Iterator[str]:
    """A second server over the same store, with basic auth and no consumer of its own."""
    app = create_app(
        broker_url=None, store=ran.store_url, basic_auth=(USER, PASSWORD), embedded_consumer=False
    )
    with serving(app, auth=(USER, PASSWORD)) as url:
        yield url


def test_http_refuses_a_client_without_credentials_and_accepts_one_with_them(ran: Ran, secured: str) -> None:
    for headers in ({}, _basic(USER, "wrong")):
        with pytest.raises(Exception):  # noqa: B017 - the SDK raises a group of its own errors
            run_session(lambda c: c.list_tools(), _authed_client(f"{secured}/mcp", headers))
        # What the client was refused with, over plain HTTP: 401, and no task data.
        refused = httpx.post(f"{secured}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                             headers=headers, timeout=10)  # fmt: skip
        assert refused.status_code == 401
        assert "t.echo" not in refused.text
    answers = run_session(lambda c: _ask(ran, c), _authed_client(f"{secured}/mcp", _basic(USER, PASSWORD)))
    _check(ran, answers)


def test_stdio_reading_a_server_with_its_credentials(ran: Ran, secured: str) -> None:
    args = ["mcp", "--server", secured, "--basic-auth", f"{USER}:{PASSWORD}"]
    params = StdioServerParameters(command=CLI[0], args=args, env=cli_env())
    _check(ran, run_session(lambda c: _ask(ran, c), Client(params)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "{secured}"], "answered HTTP 401 authentication required: pass --basic-auth"),
        (["--server", "{secured}", "--basic-auth", "ops:wrong"], "answered HTTP 401"),
        (["--server", "ftp://example.com"], "--server takes the server's URL, e.g. http://127.0.0.1:8000"),
        (["--server", "http://127.0.0.1:9"], "cannot use the celery-flow server at http://127.0.0.1:9/mcp"),
        (["--store", "sqlite:////no/such/dir/flow.db"], "no store at sqlite:////no/such/dir/flow.db"),
        (["--store", "{store}", "--basic-auth", "a:b"], "--basic-auth and --header go with --server"),
        (["--server", "{secured}", "--header", "nocolon"], "--header takes 'Name: value'"),
        (["--server", "{secured}", "--store", "{store}"], "--store and --stuck-after go without --server"),
        (["--store", "sqlite://flow.db"], "needs an absolute path: sqlite:///path/to/flow.db"),
    ],
)
def test_stdio_fails_in_one_line_naming_the_fix(
    ran: Ran, secured: str, args: list[str], message: str
) -> None:
    args = [a.format(secured=secured, store=ran.store_url) for a in args]
    done = subprocess.run([*CLI, "mcp", *args], input=b"", capture_output=True, timeout=60, env=cli_env())
    assert done.returncode == 2
    assert done.stdout == b""  # stdout is the protocol's alone
    (line,) = done.stderr.decode().strip().splitlines()
    assert line.startswith("Error: "), line
    assert message in line, line


def test_the_extension_in_a_users_app_serves_mcp_under_its_prefix_across_restarts(ran: Ran) -> None:
    ext = CeleryFlowExtension(store=ran.store_url, embedded_consumer=False,
                              auth_dependency=require_basic_auth(USER, PASSWORD))  # fmt: skip
    app = FastAPI(lifespan=ext.lifespan)
    app.include_router(ext.router, prefix="/flow")
    # Served, stopped and served again: each lifespan starts its own MCP session manager.
    for _ in range(2):
        with serving(app, ready_path="/flow/api/health", auth=(USER, PASSWORD)) as url:
            client = _authed_client(f"{url}/flow/mcp", _basic(USER, PASSWORD))
            text = run_session(lambda c: tool_text(c, "search_tasks", {"name": "ft.charge"}), client)
            assert {line.split()[0] for line in text.splitlines()[1:]} == set(ran.charges)
            refused = httpx.post(f"{url}/flow/mcp", json={}, timeout=10)
            assert refused.status_code == 401


def test_stdio_sends_a_header_to_an_extension_guarded_by_a_token_under_a_prefix(ran: Ran) -> None:
    def require_token(x_token: Annotated[str | None, Header()] = None) -> None:
        if x_token != "t0ken":
            raise HTTPException(status_code=403, detail="bad token")

    ext = CeleryFlowExtension(store=ran.store_url, embedded_consumer=False, auth_dependency=require_token)
    app = FastAPI(lifespan=ext.lifespan)
    app.include_router(ext.router, prefix="/ops/flow")
    with serving(app, ready_path="/openapi.json") as url:
        args = ["mcp", "--server", f"{url}/ops/flow/", "--header", "X-Token: t0ken"]
        params = StdioServerParameters(command=CLI[0], args=args, env=cli_env())
        text = run_session(lambda c: tool_text(c, "get_flow", {"root_id": ran.chord_root}), Client(params))
        assert text.startswith(f"flow {ran.chord_root} st.launch: SUCCESS, 5 tasks")
        wrong = ["mcp", "--server", f"{url}/ops/flow/mcp", "--header", "X-Token: nope"]
        done = subprocess.run([*CLI, *wrong], input=b"", capture_output=True, timeout=60, env=cli_env())
        assert done.returncode == 2
        assert done.stderr.decode().strip().endswith("/ops/flow/mcp: it answered HTTP 403 bad token")


def test_a_large_value_is_cut_with_a_marker(ran: Ran) -> None:
    text = run_session(lambda c: tool_text(c, "get_task", {"task_id": ran.big}), Client(f"{ran.url}/mcp"))
    (kwargs,) = [line for line in text.splitlines() if line.startswith("kwargs: ")]
    assert kwargs.startswith('kwargs: {"blob": "xxxx')
    assert kwargs.endswith("more characters: the UI shows them all]")
    assert len(kwargs) < 2_100


def test_a_browser_page_is_refused(ran: Ran) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream", "Origin": "http://evil.example"}
    refused = httpx.post(f"{ran.url}/mcp", json=body, headers=headers, timeout=10)
    assert refused.status_code == 403


def test_an_error_names_the_fix(ran: Ran) -> None:
    async def ask(client: Client) -> list[str]:
        answers = []
        for tool, args in (
            ("get_task", {"task_id": "no-such-task"}),
            ("get_flow", {"root_id": "no-such-flow"}),
            ("search_tasks", {"limit": 1000}),
            ("search_tasks", {"sate": "FAILURE"}),
            ("search_tasks", {"since": 10, "until": 5}),
        ):
            result = await client.call_tool(tool, args)
            assert result.is_error, (tool, args)
            answers.append(result.content[0].text)  # type: ignore[union-attr]
        return answers

    answers = run_session(ask, Client(f"{ran.url}/mcp"))
    assert answers[0] == "no task with id 'no-such-task' (search_tasks finds ids)"
    assert answers[1].startswith("no flow with root id 'no-such-flow'")
    assert answers[2] == "invalid arguments: `limit`: Input should be less than or equal to 100"
    assert answers[3].startswith("invalid arguments: `sate`: Extra inputs are not permitted")
    assert answers[4] == "`until` must not be before `since`"


# A Python where the `mcp` package cannot be imported, running the CLI: celery-flow without the extra.
WITHOUT_SDK = "import sys; sys.modules['mcp'] = None; from celery_flow.cli import main; main()"
MISSING = "the MCP endpoint needs the `mcp` package: pip install 'celery-flow[mcp]'"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code < 500
    except httpx.TransportError:
        return False


def test_without_the_extra_the_server_runs_and_mcp_says_what_to_install(ran: Ran, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "server.log"
    args = ["-c", WITHOUT_SDK, "server", "--no-consumer", "--store", ran.store_url, "--port", str(port)]
    with cli_process(*args, log=log, program=sys.executable):
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{base}/api/health"), 30, "the server without the mcp package")
        refused = httpx.post(f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert (refused.status_code, refused.json()) == (501, {"detail": MISSING})
        assert ran.echo in httpx.get(f"{base}/api/tasks", params={"name": "t.echo"}).text
    (line,) = [line for line in log.read_text().splitlines() if "/mcp is off" in line]
    assert line.endswith(f"celery_flow.mcp: /mcp is off: {MISSING}")

    done = subprocess.run([sys.executable, "-c", WITHOUT_SDK, "mcp", "--store", ran.store_url],
                          input=b"", capture_output=True, timeout=60, env=cli_env())  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == b""
    assert (
        done.stderr.decode().strip()
        == "Error: celery-flow mcp needs the `mcp` package: pip install 'celery-flow[mcp]'"
    )
