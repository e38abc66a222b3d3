"""Helpers for testing code that uses rts_sync (usable in your own tests too)."""

from __future__ import annotations

from .fault_proxy import FaultProxy
from .server_thread import ServerHandle, serve_in_thread

__all__ = ["FaultProxy", "ServerHandle", "serve_in_thread"]
