"""The built single-page UI (web/static/, produced by `make ui`), located for the server to serve."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"


def static_dir() -> Path:
    """Where the built UI lives; it may lack index.html in a source checkout before `make ui`."""
    return STATIC_DIR
