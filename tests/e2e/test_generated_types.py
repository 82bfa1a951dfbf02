"""The UI's TypeScript types and state lists are generated from the server's OpenAPI schema: the
committed frontend/src/api/schema.ts must be what `npm run gen-types` makes of the current server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import FRONTEND


def test_committed_ui_types_match_the_server_schema(built_ui: Path) -> None:
    node = shutil.which("node")
    assert node, "node is not on PATH: install Node 20+"
    proc = subprocess.run(
        [node, "scripts/gen-types.mjs", "--check"],
        cwd=FRONTEND,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        "frontend/src/api/schema.ts is stale: run `cd frontend && npm run gen-types` and commit it\n"
        + proc.stdout
        + proc.stderr
    )
