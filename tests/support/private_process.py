"""A service process of a test's own (redis-server, moto), which the test may freeze, kill and restart."""

from __future__ import annotations

import os
import signal
import subprocess
from types import TracebackType
from typing import TypeVar

P = TypeVar("P", bound="PrivateProcess")


class PrivateProcess:
    """Started on `with` (`start()`, which subclasses write) and killed after, even while frozen."""

    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self: P) -> P:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def terminate(proc: subprocess.Popen[bytes], grace: float = 20) -> None:
    """SIGTERM `proc` (a clean shutdown), SIGKILL if it still runs `grace` seconds later."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
