"""Errors that settings, transports and the server share; a bottom module, so none of them imports another
for its errors."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A bad URL, option or environment variable; the message is one line that names the fix."""
