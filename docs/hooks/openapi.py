"""MkDocs hook: the HTTP API reference, rendered at build time from the app's own OpenAPI schema.

`api.md` holds the marker below; this hook replaces it with one section per operation (parameters,
responses) and one per schema (fields), so the reference never drifts from the code. The schema comes
from `celery_flow.server.create_app()` without a broker, a store or a network: the same schema the
server serves at `/api/openapi.json` and the UI's TypeScript types are generated from.
"""

from __future__ import annotations

import re
from typing import Any

MARKER = "[[OPENAPI-REFERENCE]]"
PAGE = "api.md"

Schema = dict[str, Any]


def load_schema() -> Schema:
    """The OpenAPI schema of the standalone server (nothing is opened: the store opens at startup)."""
    from celery_flow.server import create_app

    app = create_app(store="sqlite:///:memory:", embedded_consumer=False)
    schema: Schema = app.openapi()
    return schema


def operation_anchor(method: str, path: str) -> str:
    """`get`, `/api/tasks/{task_id}` → `op-get-api-tasks-task_id`."""
    return "op-" + "-".join(part for part in re.split(r"[^a-z0-9_]+", f"{method}{path}".lower()) if part)


def schema_anchor(name: str) -> str:
    """`TaskSummary` → `schema-tasksummary`."""
    return "schema-" + name.lower()


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, no column separators."""
    return " ".join(text.replace("|", "&#124;").split())


def type_of(schema: Schema) -> str:
    """A schema as a short Markdown type: `string`, `list of [TaskSummary](#...)`, `integer or null`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{schema_anchor(name)})"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    for combiner in ("anyOf", "oneOf"):
        if combiner in schema:
            return " or ".join(type_of(option) for option in schema[combiner])
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return type_of(schema["allOf"][0])
    kind = schema.get("type")
    if kind == "array":
        return "list of " + type_of(schema.get("items", {}))
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "map of string to " + type_of(schema["additionalProperties"])
    if kind == "null":
        return "null"
    return str(kind) if kind else "any"


def _range(low: object, high: object, unit: str = "") -> str | None:
    if low is not None and high is not None:
        return f"{low} to {high}{unit}"
    if low is not None:
        return f"at least {low}{unit}"
    if high is not None:
        return f"at most {high}{unit}"
    return None


def _bounds(schema: Schema) -> list[str]:
    """Constraints worth a reader's eye: lengths, ranges, patterns (also inside `anyOf`)."""
    notes: list[str] = []
    for option in [schema, *schema.get("anyOf", [])]:
        length = _range(option.get("minLength"), option.get("maxLength"), " characters")
        value = _range(option.get("minimum"), option.get("maximum"))
        notes += [text for text in (length, value) if text]
        if "exclusiveMinimum" in option:
            notes.append(f"more than {option['exclusiveMinimum']}")
        if "pattern" in option:
            notes.append(f"matches `{option['pattern']}`")
    return notes


def _notes(schema: Schema, description: str | None = None) -> str:
    parts = [description] if description else []
    if schema.get("description") and schema.get("description") != description:
        parts.append(schema["description"])
    parts.extend(_bounds(schema))
    if "default" in schema and schema["default"] is not None:
        parts.append(f"default `{schema['default']}`")
    return _cell("; ".join(parts))


def render_operation(method: str, path: str, operation: Schema) -> list[str]:
    lines = [f"### `{method.upper()} {path}` {{ #{operation_anchor(method, path)} }}", ""]
    if operation.get("summary"):
        lines += [operation["summary"] + ".", ""]
    if operation.get("description"):
        lines += [operation["description"], ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | required | notes |", "|---|---|---|---|---|"]
        for param in parameters:
            schema = param.get("schema", {})
            required = "yes" if param.get("required") else "no"
            notes = _notes(schema, param.get("description"))
            lines.append(
                f"| `{param['name']}` | {param['in']} | {_cell(type_of(schema))} | {required} | {notes} |"
            )
        lines.append("")
    lines += ["| status | body | meaning |", "|---|---|---|"]
    for status, response in operation.get("responses", {}).items():
        content = response.get("content", {}).get("application/json", {})
        body = _cell(type_of(content["schema"])) if "schema" in content else "—"
        lines.append(f"| {status} | {body} | {_cell(response.get('description', ''))} |")
    lines.append("")
    return lines


def render_schema(name: str, schema: Schema) -> list[str]:
    lines = [f"### {name} {{ #{schema_anchor(name)} }}", ""]
    if schema.get("description"):
        lines += [schema["description"], ""]
    properties: dict[str, Schema] = schema.get("properties", {})
    if not properties:
        lines += [f"Type: {type_of(schema)}.", ""]
        return lines
    required = set(schema.get("required", []))
    lines += ["| field | type | required | notes |", "|---|---|---|---|"]
    for field, prop in properties.items():
        mark = "yes" if field in required else "no"
        lines.append(f"| `{field}` | {_cell(type_of(prop))} | {mark} | {_notes(prop)} |")
    lines.append("")
    return lines


def render(schema: Schema) -> str:
    """The whole reference: every operation in the schema's order, then every schema by name."""
    info = schema.get("info", {})
    lines = [
        "## Endpoints { #endpoints }",
        "",
        f"Generated from the OpenAPI {schema.get('openapi', '')} schema of {info.get('title', '')} "
        f"{info.get('version', '')} when this site was built.",
        "",
    ]
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            lines += render_operation(method, path, operation)
    lines += ["## Schemas { #schemas }", ""]
    for name, component in sorted(schema.get("components", {}).get("schemas", {}).items()):
        lines += render_schema(name, component)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"docs/{PAGE} lost its {MARKER} marker: the API reference has nowhere to go")
    return markdown.replace(MARKER, render(load_schema()))
