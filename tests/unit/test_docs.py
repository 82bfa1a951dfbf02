"""The README stays a landing page whose every link works, and the docs site builds from what is here.

The site's own links and anchors are checked by `mkdocs build --strict` (validation settings in
mkdocs.yml); the README is read on GitHub and PyPI, outside that build, so it is checked here.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_BYTES = 12 * 1024

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
_HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.IGNORECASE)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_ATTR_ID = re.compile(r"\{\s*#([\w-]+)[^}]*\}\s*$")
_HTML_ID = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)


def _prose(markdown: str) -> str:
    """The text outside code blocks and code spans, where links are links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", markdown))


def link_targets(markdown: str) -> list[str]:
    """Every link and image target: inline, reference-style and HTML `href`/`src`."""
    text = _prose(markdown)
    return [
        m.group(1) for pattern in (_INLINE_LINK, _REFERENCE_LINK, _HTML_LINK) for m in pattern.finditer(text)
    ]


def github_slug(heading: str) -> str:
    """`Quick start` → `quick-start`, `What's new in 2.0?` → `whats-new-in-20`: GitHub's heading ids."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.replace("`", "").lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The ids a link may point at in a Markdown file: headings (GitHub slugs, numbered when repeated),
    explicit `{ #id }` attributes and `<a id="...">` tags."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in _HEADING.finditer(_FENCE.sub("", markdown)):
        title = match.group(1)
        explicit = _ATTR_ID.search(title)
        if explicit:
            found.add(explicit.group(1))
            title = title[: explicit.start()]
        slug = github_slug(title.strip())
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    found.update(_HTML_ID.findall(markdown))
    return found


def broken_links(markdown_file: Path) -> list[str]:
    """Relative links of `markdown_file` whose file, or anchor in a Markdown file, does not exist."""
    broken: list[str] = []
    for target in link_targets(markdown_file.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
            continue  # http:, https:, mailto:... are not files of this repository
        path_part, _, anchor = target.partition("#")
        path = (markdown_file.parent / path_part).resolve() if path_part else markdown_file
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading or id #{anchor} in {path.name}")
    return broken


def test_readme_is_a_landing_page_of_at_most_12_kb() -> None:
    size = len(README.read_bytes())
    assert size <= MAX_README_BYTES, (
        f"README.md is {size} bytes, over {MAX_README_BYTES}: move the detail to a page in docs/ and link it"
    )


def test_readme_keeps_the_two_make_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "`make demo` runs it on a fresh machine, no broker needed" in text
    assert "`make test` runs every test" in text


def test_every_relative_link_and_image_in_the_readme_resolves() -> None:
    targets = link_targets(README.read_text(encoding="utf-8"))
    assert any(t.endswith(".png") for t in targets), "the README shows no screenshot"
    assert any(t.startswith("docs/") and t.endswith(".md") for t in targets), "the README links no docs page"
    assert broken_links(README) == []


def test_link_checker_reports_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "page.md").write_text("# Page\n\n## Deploy with Docker\n\n## Auth { #auth }\n")
    (tmp_path / "shot.png").write_bytes(b"")
    doc = tmp_path / "README.md"
    doc.write_text(
        "![shot](shot.png) [ok](page.md#deploy-with-docker) [ok](page.md#auth) [web](https://example.com)\n"
        '`[code](nowhere.md)` [gone](nowhere.md) [bad anchor](page.md#nope) <img src="missing.png">\n'
    )
    assert [line.split(":")[0] for line in broken_links(doc)] == ["nowhere.md", "page.md#nope", "missing.png"]


def _openapi_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_openapi_hook", ROOT / "docs" / "hooks" / "openapi.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_documents_every_operation_and_schema_of_the_app() -> None:
    hook = _openapi_hook()
    schema = hook.load_schema()
    page = hook.render(schema)
    for path, operations in schema["paths"].items():
        for method in operations:
            assert f"### `{method.upper()} {path}` {{ #{hook.operation_anchor(method, path)} }}" in page
    for name in schema["components"]["schemas"]:
        assert f"### {name} {{ #{hook.schema_anchor(name)} }}" in page
    assert hook.MARKER in (ROOT / "docs" / hook.PAGE).read_text(encoding="utf-8")


@pytest.mark.slow
def test_docs_site_builds_strict_and_offline(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.exists():
        pytest.fail("mkdocs is missing: `make install` (the dev extra includes the docs extra)")
    run = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(mkdocs.parent), "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stderr[-4000:]
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis.com" not in index, "the theme would fetch web fonts: keep `font: false`"
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert 'id="op-get-api-tasks"' in api
