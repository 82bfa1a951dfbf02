"""Build hook that only validates: a wheel or sdist without the built UI is a broken release."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name not in {"wheel", "sdist"} or version == "editable":
            return
        index = Path(self.root) / "src" / "celery_flow" / "web" / "static" / "index.html"
        if not index.is_file():
            raise RuntimeError(
                f"{index} is missing: build the UI first with `make ui` "
                "(npm ci && npm run build in frontend/)."
            )
