"""Run a real rts-server on a background thread, for tests and demos.

::

    with serve_in_thread({"rtsapp000000000000000001": "key"}) as server:
        rts = rts_sync.create_rts(app_id, server_url=server.url)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from aiohttp import web

from ..server.app import HUB, create_app
from ..server.config import Limits, ServerConfig
from ..server.tls import server_ssl_context

__all__ = ["ServerHandle", "serve_in_thread"]

log = logging.getLogger(__name__)

_thread_ids = itertools.count(1)


def serve_in_thread(apps: Mapping[str, str], host: str = "127.0.0.1", port: int = 0,
                    limits: Optional[Mapping[str, Any]] = None,
                    access_keys: Optional[Mapping[str, str]] = None,
                    redis_url: Optional[str] = None,
                    tls: Optional[Tuple[str, str]] = None,
                    access_key_apps: Optional[Mapping[str, Sequence[str]]] = None) -> ServerHandle:
    """Start a server for ``apps`` (app id -> app key) on its own event loop in a daemon thread
    named ``rts-server-<n>``; return once it listens (``port=0``: any free port).

    ``access_keys`` (access key id -> secret key) are the credentials of the push API at
    ``handle.http_url`` (``POST /?Action=SendUnicast&Version=2020-12-01``). ``redis_url``
    (``redis://HOST:PORT/DB``) runs it as a node of a cluster (docs/deployment.md).
    ``tls=(cert_file, key_file)`` (PEM) serves TLS only: ``handle.url`` is then ``wss://...`` and
    ``handle.http_url`` ``https://...``. ``access_key_apps`` limits access keys to some apps
    (access key id -> app ids; keys not in it may push to every app).

    Raises ValueError for a bad configuration and the startup error (e.g. OSError when the port
    is taken) if the server cannot listen.
    """
    config = ServerConfig(apps=dict(apps), host=host, port=port,
                          limits=Limits.from_mapping(limits or {}),
                          access_keys=dict(access_keys or {}), redis_url=redis_url,
                          tls=(tls[0], tls[1]) if tls is not None else None,
                          access_key_apps={k: tuple(v) for k, v in (access_key_apps or {}).items()})
    handle = ServerHandle(config)
    handle._start()
    return handle


class ServerHandle:
    """A server running on a background thread; ``stop()`` it (or use it as a context manager).

    Threading: thread-safe. Its methods may be called from any thread except the server's own.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.host = config.host
        self.port = config.port
        self._loop = asyncio.new_event_loop()
        self._runner: Optional[web.AppRunner] = None
        self._started = threading.Event()
        self._startup_error: Optional[BaseException] = None
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="rts-server-%d" % next(_thread_ids),
                                        daemon=True)

    @property
    def url(self) -> str:
        """The WebSocket URL the SDK's ``server_url`` takes (``wss://`` with TLS)."""
        return "%s://%s:%d/rts" % ("wss" if self.config.tls else "ws", self._url_host(), self.port)

    @property
    def http_url(self) -> str:
        """The base URL of ``/healthz``, ``/metrics`` and the push API (``POST /?Action=...``);
        ``https://`` with TLS."""
        return "%s://%s:%d" % ("https" if self.config.tls else "http", self._url_host(), self.port)

    def _url_host(self) -> str:
        return "[%s]" % self.host if ":" in self.host else self.host

    # ------------------------------------------------------------------ lifecycle
    def _start(self) -> None:
        self._thread.start()
        self._started.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._setup())
            except BaseException as exc:  # reported to the starting thread
                self._startup_error = exc
                self._started.set()
                return
            self._started.set()
            loop.run_forever()
        finally:
            self._close_loop()

    async def _setup(self) -> None:
        runner = web.AppRunner(create_app(self.config), handle_signals=False, access_log=None)
        await runner.setup()
        self._runner = runner
        try:
            ssl_context = server_ssl_context(*self.config.tls) if self.config.tls else None
            site = web.TCPSite(runner, self.config.host, self.config.port, ssl_context=ssl_context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        log.debug("server thread %s listening on port %d", self._thread.name, self.port)

    def _close_loop(self) -> None:
        loop = self._loop
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection with GOING_AWAY, shut the server down and join its thread.

        Idempotent. Waits at most about ``timeout`` seconds; logs a warning if the thread is still
        alive afterwards.
        """
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        if self._thread is threading.current_thread():
            raise RuntimeError("stop() called from the server's own thread")
        if self._thread.is_alive() and self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            try:
                future.result(timeout)
            except Exception as exc:  # includes the timeout; stop the loop anyway
                log.warning("server shutdown did not finish cleanly: %r", exc)
                future.cancel()
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("server thread %s did not stop within %.1f s", self._thread.name, timeout)

    def stats(self, timeout: float = 5.0) -> Dict[str, Any]:
        """The numbers of ``/healthz``: {"status": "ok", "sessions": N, "connections": N}."""
        if self._stopped or self._runner is None:
            raise RuntimeError("the server is stopped")
        app = self._runner.app

        async def read() -> Dict[str, Any]:
            return app[HUB].stats()

        return asyncio.run_coroutine_threadsafe(read(), self._loop).result(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return "<ServerHandle %s %s>" % (self.url, "stopped" if self._stopped else "running")
