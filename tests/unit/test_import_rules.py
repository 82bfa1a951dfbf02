"""The dependency rules of docs/architecture.md, checked by import-linter against the real import graph.

The contracts live in pyproject.toml (`[tool.importlinter]`); `lint-imports` reads them from there.
"""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import celery_flow

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> Path:
    beside = Path(sys.executable).with_name("lint-imports")
    if beside.exists():
        return beside
    found = shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports is missing: `make install` (import-linter is in the dev extra)")
    return Path(found)


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def test_every_import_contract_is_kept() -> None:
    run = subprocess.run(
        [str(_lint_imports()), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = run.stdout[run.stdout.find("Contracts") :] + run.stderr
    assert run.returncode == 0, report
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in run.stdout, report


def test_flow_contract_forbids_every_other_module_of_the_package() -> None:
    # "flow imports only events" must also hold for a module added later: the contract lists them all.
    flow = next(c for c in _contracts() if c["source_modules"] == ["celery_flow.flow"])
    forbidden = set(flow["forbidden_modules"])  # type: ignore[call-overload]
    siblings = {f"celery_flow.{m.name}" for m in pkgutil.iter_modules(celery_flow.__path__)}
    missing = siblings - forbidden - {"celery_flow.flow", "celery_flow.events"}
    assert not missing, f"add to the flow contract's forbidden_modules in pyproject.toml: {sorted(missing)}"
