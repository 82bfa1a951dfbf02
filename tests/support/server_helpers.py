"""Helpers for server tests: a real uvicorn server on a free port, subprocess servers, polling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "celery_flow.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, OSError, AssertionError, KeyError) as exc:
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a thread, lifespan included."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/api/health", auth: tuple[str, str] | None = None) -> ServerThread:
        self.thread.start()
        wait_for(lambda: self.server.started, 20, "uvicorn to start")
        with httpx.Client(base_url=self.url, auth=auth, timeout=5) as client:
            wait_for(lambda: client.get(ready_path).status_code < 500, 20, f"{ready_path} to answer")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@contextlib.contextmanager
def serving(app: Any, ready_path: str = "/api/health", auth: tuple[str, str] | None = None) -> Iterator[str]:
    server = ServerThread(app)
    try:
        server.start(ready_path, auth)
        yield server.url
    finally:
        server.stop()


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess, without any CELERY_FLOW_* leaking from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_FLOW_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@contextlib.contextmanager
def cli_process(
    *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m celery_flow.cli <args>` in its own process group, killed on exit."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*CLI, *args], env=env or cli_env(), stdout=out, stderr=subprocess.STDOUT,
                            cwd=REPO, start_new_session=True)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if log:
            out.close()  # type: ignore[union-attr]
