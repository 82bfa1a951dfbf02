"""Helpers for server tests: a real uvicorn server on a free port, subprocess servers, a TCP proxy."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
CLI = [str(Path(sys.executable).with_name("celery-flow"))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def start_cli(
    *args: str,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    program: str | None = None,
    append: bool = False,
) -> subprocess.Popen[bytes]:
    """`celery-flow <args>` (or `program <args>`) in its own process group, its output written to `log`
    (appended to it with `append`, as for a process restarted after a kill). Stop it with stop_process."""
    out: Any = open(log, "ab" if append else "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            [program, *args] if program else [*CLI, *args],
            env=env or cli_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    finally:
        if log:
            out.close()  # the child has its own copy of the file


@contextlib.contextmanager
def cli_process(
    *args: str, env: dict[str, str] | None = None, log: Path | None = None, program: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`celery-flow <args>` (or `program <args>`) as start_cli starts it, stopped on exit."""
    proc = start_cli(*args, env=env, log=log, program=program)
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a subprocess started with `start_new_session=True` and its group; SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class TcpProxy:
    """A TCP forwarder to a real service that a test can cut (`stop`) and restore (`start`), like a
    broker restarting: every connection through it drops at once and new ones are refused. Setting
    `frozen` holds every byte in flight instead, like a broker that hangs with its sockets open.
    Given `tls`, it is a TLS endpoint in front of the (plain) service."""

    def __init__(
        self, target: tuple[str, int], port: int | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.target = target
        self.port = port or free_port()
        self.tls = tls
        self.frozen = threading.Event()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        if self.tls is not None:
            try:
                client = self.tls.wrap_socket(client, server_side=True)
            except OSError:  # ssl.SSLError included: the client refused our certificate
                client.close()
                return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns += [client, upstream]
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self.frozen.is_set():  # hold the bytes: nothing gets through while frozen
                    time.sleep(0.02)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.frozen.clear()
        if self._listener is not None:
            # shutdown() wakes the accept() blocked in the other thread (close() alone would not)
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
