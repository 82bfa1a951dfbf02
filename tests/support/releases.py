"""Released celery-flow versions, run from their git commits: stores they wrote, commands they run.

`release_source(commit, dest)` extracts `git archive <commit> src/celery_flow` under `dest`; running
Python with `release_env(src)` (PYTHONPATH at that source, this venv's dependencies) makes
`import celery_flow` the release's code. `build_release_stores` runs tests/support/release_builder.py
that way: a real worker, the release's tracking, consumer and server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.server_helpers import REPO, cli_env

BUILDER = Path(__file__).with_name("release_builder.py")


def release_source(commit: str, dest: Path) -> Path:
    """The `src` directory of `commit`, extracted under `dest`; fails saying how to fetch a missing commit."""
    found = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True, text=True
    )
    if found.returncode != 0:
        pytest.fail(
            f"release commit {commit} is not in this clone (a shallow clone?): fetch the history with "
            f"`git fetch --unshallow` (or `git fetch origin {commit}`), then run the tests again"
        )
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "src/celery_flow"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src"


def release_env(src: Path, **extra: str) -> dict[str, str]:
    """A CLI environment in which `import celery_flow` is the release at `src`."""
    return cli_env(PYTHONPATH=str(src), **extra)


def release_command(src: Path, *args: str) -> list[str]:
    """`celery-flow <args>` as the release at `src` runs it (with `release_env(src)`)."""
    return [sys.executable, "-m", "celery_flow.cli", *args]


def build_release_stores(
    src: Path, broker_url: str, prefix: str, urls: list[str], workdir: Path
) -> dict[str, dict[str, Any]]:
    """Fill each store in `urls` with the release at `src`; return its server's answers per store URL."""
    answers = workdir / f"answers-{prefix}.json"
    proc = subprocess.run(
        [sys.executable, str(BUILDER), broker_url, prefix, str(answers), *urls],
        env=release_env(src),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"the release builder failed:\n{proc.stdout}\n{proc.stderr}"
    result: dict[str, dict[str, Any]] = json.loads(answers.read_text())
    return result
