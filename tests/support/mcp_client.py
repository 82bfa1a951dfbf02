"""The MCP SDK's own client, driven from synchronous tests: one session per call of `run_session`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mcp import Client

T = TypeVar("T")


def run_session(session: Callable[[Client], Awaitable[T]], client: Client) -> T:
    """Open `client`, run `session` with it, close it."""

    async def go() -> T:
        async with client:
            return await session(client)

    return asyncio.run(go())


async def tool_text(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    """The text a tool answered (an error result fails the test)."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, (tool, result.content)
    text = result.content[0].text  # type: ignore[union-attr]
    assert isinstance(text, str)
    return text
