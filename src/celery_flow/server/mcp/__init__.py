"""A read-only Model Context Protocol server over the store: tools.py (the tools, no SDK), protocol.py
(the SDK's server, HTTP session manager, stdio and proxy), endpoint.py (`/mcp` in the extension)."""
