"""rts-server: the signaling server the SDK talks to (asyncio + aiohttp).

``create_app(ServerConfig(...))`` builds the aiohttp application; ``rts-server`` (or
``python -m rts_sync.server``) runs it; :func:`rts_sync.testing.serve_in_thread` runs it on a
background thread for tests and demos.
"""

from __future__ import annotations

from .app import create_app
from .config import DEFAULT_HOST, DEFAULT_PORT, Limits, ServerConfig

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Limits", "ServerConfig", "create_app"]
