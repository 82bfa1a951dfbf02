"""The CLI's startup errors: one line naming the fix, exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.support.server_helpers import REPO, cli_env, cli_process, free_port
from tests.support.wait import wait_for

CELERY_FLOW = str(Path(sys.executable).with_name("celery-flow"))
CELERY = str(Path(sys.executable).with_name("celery"))
UNREACHABLE = "redis://127.0.0.1:1/0"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env or cli_env(), cwd=REPO)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.mark.parametrize("command", ["server", "consume"])
def test_bad_broker_url_names_the_supported_schemes(command: str, tmp_path: Path) -> None:
    line = one_line_error(
        run(CELERY_FLOW, command, "--broker-url", "kafka://h:9092", "--store", f"sqlite:///{tmp_path}/s.db")
    )
    assert "unsupported broker URL 'kafka://h:9092'" in line
    assert "redis://" in line
    assert "--broker-url" in line


@pytest.mark.parametrize("command", ["server", "consume"])
def test_unreachable_broker_is_one_line_with_the_fix(command: str, tmp_path: Path) -> None:
    line = one_line_error(
        run(CELERY_FLOW, command, "--broker-url", UNREACHABLE, "--store", f"sqlite:///{tmp_path}/s.db")
    )
    assert "cannot reach the broker at redis://127.0.0.1:1/0" in line
    assert "CELERY_FLOW_BROKER_URL" in line


def test_password_is_never_printed(tmp_path: Path) -> None:
    line = one_line_error(
        run(
            CELERY_FLOW,
            "consume",
            "--broker-url",
            "redis://user:s3cret@127.0.0.1:1/0",
            "--store",
            f"sqlite:///{tmp_path}/s.db",
        )
    )
    assert "s3cret" not in line
    assert "user:***@127.0.0.1:1" in line


@pytest.mark.parametrize("command", ["server", "consume"])
def test_unwritable_store_is_one_line(command: str, redis_url: str, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")  # (tests may run as root, so permissions alone prove nothing)
    for store in (f"sqlite:///{not_a_dir}/flow.db", "sqlite:////proc/celery-flow.db"):
        line = one_line_error(run(CELERY_FLOW, command, "--broker-url", redis_url, "--store", store))
        assert "cannot open the store" in line


def test_unreachable_postgres_store_is_one_line(redis_url: str) -> None:
    line = one_line_error(
        run(
            CELERY_FLOW,
            "consume",
            "--broker-url",
            redis_url,
            "--store",
            "postgresql://postgres:pw@127.0.0.1:1/nope",
        )
    )
    assert "cannot open the store" in line
    assert "pw" not in line.replace("postgresql", "")


def test_unknown_store_scheme_is_one_line(redis_url: str) -> None:
    line = one_line_error(run(CELERY_FLOW, "consume", "--broker-url", redis_url, "--store", "mysql://x/y"))
    assert "mysql" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--basic-auth", "no-colon"], "basic auth must look like user:password"),
        (["--ttl", "soon"], "--ttl 'soon' is not valid"),
    ],
)
def test_bad_option_values(args: list[str], expected: str, redis_url: str, tmp_path: Path) -> None:
    line = one_line_error(
        run(CELERY_FLOW, "server", "--broker-url", redis_url, "--store", f"sqlite:///{tmp_path}/s.db", *args)
    )
    assert expected in line


def test_bad_environment_value_names_the_variable(redis_url: str, tmp_path: Path) -> None:
    env = cli_env(CELERY_FLOW_MAX_TASKS="lots", CELERY_FLOW_STORE=f"sqlite:///{tmp_path}/s.db")
    line = one_line_error(run(CELERY_FLOW, "consume", "--broker-url", redis_url, env=env))
    assert "CELERY_FLOW_MAX_TASKS='lots' is not valid" in line


def test_server_without_broker_explains_both_ways() -> None:
    line = one_line_error(run(CELERY_FLOW, "server"))
    assert "--broker-url" in line
    assert "--no-consumer" in line


def test_the_environment_turns_the_embedded_consumer_off_as_no_consumer_does(tmp_path: Path) -> None:
    port = free_port()
    env = cli_env(CELERY_FLOW_EMBEDDED_CONSUMER="0", CELERY_FLOW_STORE=f"sqlite:///{tmp_path}/s.db")
    with cli_process("server", "--port", str(port), env=env, log=tmp_path / "server.log"):
        health = wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/api/health").json(), 30, "the server")
    assert health["consumer"]["mode"] == "external"


def test_reload_serves_with_the_options_given(tmp_path: Path) -> None:
    port = free_port()
    store = f"sqlite:///{tmp_path}/s.db"
    args = ["server", "--reload", "--no-consumer", "--basic-auth", "ops:s3:cret", "--store", store,
            "--port", str(port)]  # fmt: skip
    with cli_process(*args, env=cli_env(), log=tmp_path / "server.log"):
        url = f"http://127.0.0.1:{port}/api/health"
        health = wait_for(lambda: httpx.get(url, auth=("ops", "s3:cret")).json(), 30, "the reloaded server")
        assert httpx.get(url).status_code == 401
    assert health["consumer"]["mode"] == "external"
    assert health["store"]["url"] == store


def test_celery_subcommand_takes_the_broker_from_the_app(tmp_path: Path) -> None:
    env = cli_env(SERVER_TASKS_BROKER=UNREACHABLE)
    line = one_line_error(
        run(
            CELERY,
            "-A",
            "tests.support.server_tasks",
            "flow",
            "consume",
            "--store",
            f"sqlite:///{tmp_path}/s.db",
            env=env,
        )
    )
    assert "cannot reach the broker at redis://127.0.0.1:1/0" in line


def test_celery_subcommand_is_listed() -> None:
    proc = run(CELERY, "-A", "tests.support.server_tasks", "flow", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "server" in proc.stdout
    assert "consume" in proc.stdout


@pytest.mark.parametrize("command", [["server", "--no-consumer"], ["demo"]])
def test_a_port_in_use_is_one_line(command: list[str], tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = one_line_error(
            run(CELERY_FLOW, *command, "--store", f"sqlite:///{tmp_path}/s.db", "--port", port)
        )
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "--port" in line


def test_celery_flow_server_serves_with_the_apps_broker(redis_url: str, tmp_path: Path) -> None:

    port = free_port()
    env = cli_env(SERVER_TASKS_BROKER=redis_url)
    log = tmp_path / "server.log"
    args = ["-A", "tests.support.server_tasks", "flow", "server", "--store", f"sqlite:///{tmp_path}/s.db",
            "--port", str(port)]  # fmt: skip
    with cli_process(*args, env=env, log=log, program=CELERY):
        health = wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/api/health").json(), 30, "the server")
    assert health["transport"] == {"url": redis_url, "reachable": True, "detail": None}
    assert health["consumer"]["mode"] == "embedded"
