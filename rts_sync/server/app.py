"""The aiohttp application: ``/rts`` (the WebSocket endpoint), ``/healthz``, ``/metrics`` and
``POST /`` (the push API for application servers)."""

from __future__ import annotations

import logging

from aiohttp import web

from .. import protocol as p
from .config import ServerConfig
from .handler import serve_connection
from .hub import Hub
from .push_api import PushAPI
from .session import CLOSE_TIMEOUT

__all__ = ["HUB", "create_app"]

log = logging.getLogger(__name__)

#: Where the application keeps its :class:`~rts_sync.server.hub.Hub`.
HUB = web.AppKey("rts_hub", Hub)


def create_app(config: ServerConfig) -> web.Application:
    """A new server application for ``config`` (run it with aiohttp's runners).

    Closing down (``on_shutdown``) closes every WebSocket with CloseCode.GOING_AWAY; cleanup
    then closes the pooled HTTP client of the app-server forwarding.

    Threading: the application and everything in it belong to the event loop that runs it.
    """
    app = web.Application()
    hub = app[HUB] = Hub(config)
    app.router.add_get("/rts", _rts)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/", PushAPI(hub, config.access_keys).handle)
    app.on_startup.append(hub.forwarder.start)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(hub.forwarder.close)
    if hub.cluster is not None:  # cluster mode: join at startup, leave after the shutdown
        app.on_startup.append(hub.cluster.start)
        app.on_cleanup.append(hub.cluster.close)
    return app


async def _rts(request: web.Request) -> web.StreamResponse:
    return await serve_connection(request.app[HUB], request)


async def _healthz(request: web.Request) -> web.Response:
    stats = request.app[HUB].stats()
    return web.json_response(stats, status=200 if stats.get("status") == "ok" else 503)


async def _metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    text = hub.metrics.render(len(hub.connections), hub.sessions_per_app(), hub.rooms_per_app())
    if hub.cluster is not None:
        text += hub.cluster.render_metrics()
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def _on_shutdown(app: web.Application) -> None:
    hub = app[HUB]
    if hub.cluster is not None:  # cluster resume: its clients resume on other nodes
        await hub.cluster.hand_over_all(CLOSE_TIMEOUT)
    if hub.connections:
        log.info("closing %d connections", len(hub.connections))
    await hub.close_all(p.CloseCode.GOING_AWAY, "server shutting down", CLOSE_TIMEOUT)
