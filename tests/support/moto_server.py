"""A local SQS endpoint of a test's own: moto in server mode on a free port, which a test may freeze.

The tests start moto themselves (one process per test session, `sqs_url` in tests/conftest.py, plus a
private one for a test that freezes it) rather than from .ci/services.sh: it is a pip package of the dev
extra, a process per run keeps concurrent runs apart, and its state dies with it, so nothing needs
cleaning up.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from typing import Any

from tests.support.private_process import PrivateProcess
from tests.support.server_helpers import free_port
from tests.support.wait import wait_for

__all__ = ["CELERY_SQS_OPTIONS", "MotoServer", "admin_client", "endpoint_of"]

#: Celery's `broker_transport_options` for kombu's SQS broker on moto: a short long poll and polling
#: interval keep task latency low; moto accepts any region and the dummy credentials in the URL.
CELERY_SQS_OPTIONS = {
    "region": "eu-west-1",
    "is_secure": False,
    "wait_time_seconds": 1,
    "polling_interval": 0.1,
    "visibility_timeout": 60,
}


def endpoint_of(sqs_url: str) -> str:
    """`http://host:port` of a `sqs://key:secret@host:port` URL."""
    return "http://" + sqs_url.rsplit("@", 1)[1].split("?", 1)[0].rstrip("/")


def admin_client(sqs_url: str, service: str = "sqs", region: str = "us-east-1") -> Any:
    """A boto3 client of moto behind `sqs_url`, for a test to look at queues and topics directly."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint_of(sqs_url),
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class MotoServer(PrivateProcess):
    """`moto.server` on 127.0.0.1:<free port>, started on `with` and killed after."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        #: kombu's convention: the URL's host is the endpoint, http unless is_secure.
        self.url = f"sqs://testing:testing@127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"moto exited with {self.proc.returncode}")
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                return True

        wait_for(up, 30, "moto's SQS endpoint to answer", retry_on=(OSError,))
