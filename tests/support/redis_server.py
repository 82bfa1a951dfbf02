"""A redis-server of a test's own on a free port, which the test may freeze, kill and restart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from tests.support.private_process import PrivateProcess
from tests.support.server_helpers import free_port
from tests.support.wait import wait_for

__all__ = ["PrivateRedis"]


class PrivateRedis(PrivateProcess):
    """A redis-server on 127.0.0.1:<free port>, started on `with` and stopped after. Given `directory`,
    it writes every command to an append-only file there, so a restart on the same port finds its data;
    without, it keeps nothing on disk."""

    def __init__(self, directory: Path | None = None) -> None:
        self.port = free_port()
        self.dir = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.dir is None:
            cmd += ["--appendonly", "no"]
        else:
            cmd += ["--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1)
        try:
            wait_for(
                client.ping, 15, "the private redis-server to answer", retry_on=(redis.RedisError, OSError)
            )
        finally:
            client.close()
