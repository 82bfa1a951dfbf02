"""Serving the built SPA under any mount point (the SPA contract in the shared brief).

Every UI path answers with index.html, whose literal `<base href="/">` is rewritten to the mount root, so
deep links like `{mount}/flows/<id>` open their view directly and the SPA derives its API base from
`document.baseURI`. Real files (hashed assets, favicon) are served as they are, with long caching for
`assets/`. When the UI was never built, a short page says how to build it instead of a bare 404.
"""

from __future__ import annotations

import mimetypes
from functools import lru_cache
from html import escape
from pathlib import Path

from fastapi import Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from celery_flow.web import static_dir

BASE_TAG = '<base href="/">'
NOT_BUILT_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>celery-flow: UI not built</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>celery-flow</h1>
<p>The web UI has not been built in this checkout. Build it with <code>make ui</code>
(or <code>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build</code>), then reload this page.
Installed from a wheel, the UI is always included.</p>
<p>The HTTP API works meanwhile: <a href="{root}/api/health">{root}/api/health</a>,
<a href="{root}/api/docs">{root}/api/docs</a>.</p>
</body></html>
"""


@lru_cache(maxsize=8)
def _index_template(path: Path, mtime: float) -> str:
    return path.read_text(encoding="utf-8")


def mount_root(request: Request, subpath: str) -> str:
    """The URL path the router is mounted at ("" standalone, "/flow" under a prefix).

    Starlette's scope path is the full path (root_path included), and `subpath` is what the catch-all
    route matched after the mount point, so the mount root is what precedes it.
    """
    full: str = request.scope["path"]
    if subpath and full.endswith(subpath):
        full = full[: len(full) - len(subpath)]
    return full.rstrip("/")


def render_index(root: str, directory: Path | None = None) -> HTMLResponse:
    """index.html with its base href pointing at the mount root, or the how-to-build page."""
    index = (directory or static_dir()) / "index.html"
    try:
        template = _index_template(index, index.stat().st_mtime)
    except OSError:
        return HTMLResponse(NOT_BUILT_PAGE.replace("{root}", escape(root)), status_code=200)
    html = template.replace(BASE_TAG, f'<base href="{escape(root)}/">', 1)
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


def serve(request: Request, subpath: str, directory: Path | None = None) -> Response:
    """A static file when `subpath` names one inside the UI directory; else the SPA's index.html."""
    base = (directory or static_dir()).resolve()
    if subpath == "api" or subpath.startswith("api/"):
        return JSONResponse({"detail": f"no API endpoint {request.url.path}"}, status_code=404)
    if subpath and subpath != "index.html":
        candidate = (base / subpath).resolve()
        if candidate.is_relative_to(base) and candidate.is_file():
            cache = "public, max-age=31536000, immutable" if subpath.startswith("assets/") else "no-cache"
            media_type, _ = mimetypes.guess_type(candidate.name)
            return FileResponse(candidate, media_type=media_type, headers={"Cache-Control": cache})
        if subpath.startswith("assets/"):
            # A missing hashed asset is a stale page, not a UI route: index.html would be parsed as JS.
            return Response("not found", status_code=404, media_type="text/plain")
    return render_index(mount_root(request, subpath), base)
