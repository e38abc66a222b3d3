"""The one code path that makes the SDK's connections: socket, TCP_NODELAY, (TLS), handshake.

Each attempt gets a fresh socket made here (never one reused across attempts), with
``TCP_NODELAY`` set by us (websocket-client sets it only on sockets it creates itself), then
websocket-client performs the HTTP upgrade on it. Foreign exceptions are translated at this
boundary into :class:`~rts_sync.errors.TransportError` subclasses, keeping the cause.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any, List, Optional, Tuple
from urllib.parse import urlsplit

import websocket

from ..errors import ConnectionLost, ConnectTimeout, InvalidArgumentError, TransportError

__all__ = ["Connector", "parse_server_url"]

log = logging.getLogger(__name__)


def parse_server_url(url: str) -> Tuple[bool, str, int]:
    """(secure, host, port) of a ``ws://`` or ``wss://`` URL; InvalidArgumentError otherwise."""
    if not isinstance(url, str):
        raise TypeError("server_url must be a str, not %s" % type(url).__name__)
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise InvalidArgumentError("server_url must look like ws://host:port/rts, got %r" % url)
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError as exc:
        raise InvalidArgumentError("bad port in server_url %r" % url) from exc
    return parts.scheme == "wss", parts.hostname, port


class Connector:
    """Opens connections; ``abort()`` from another thread interrupts one in progress.

    Threading: ``connect`` runs on the supervisor thread; ``abort`` may be called from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Optional[socket.socket] = None
        self._aborted = False

    def abort(self) -> None:
        """Interrupt a connect in progress and refuse further ones."""
        with self._lock:
            self._aborted = True
            sock = self._current
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def connect(self, url: str, timeout: float) -> socket.socket:
        """A connected socket that has completed the WebSocket handshake, in blocking mode."""
        secure, host, port = parse_server_url(url)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConnectionLost("cannot resolve %s: %s" % (host, exc)) from exc
        errors: List[str] = []
        for family, stype, proto, _, addr in infos:
            sock = socket.socket(family, stype, proto)
            with self._lock:
                if self._aborted:
                    sock.close()
                    raise ConnectionLost("connect aborted")
                self._current = sock
            try:
                return self._open(sock, addr, url, host, secure, timeout)
            except TransportError as exc:
                sock.close()
                errors.append(str(exc))
                if isinstance(exc, ConnectTimeout):
                    raise
            finally:
                with self._lock:
                    self._current = None
        raise ConnectionLost("cannot connect to %s: %s" % (url, "; ".join(errors) or "no address"))

    def _open(self, sock: socket.socket, addr: Any, url: str, host: str, secure: bool,
              timeout: float) -> socket.socket:
        sock.settimeout(timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(addr)
            if secure:
                ctx = ssl.create_default_context()
                sock = ctx.wrap_socket(sock, server_hostname=host)
            ws = websocket.WebSocket(skip_utf8_validation=True)
            ws.connect(url, socket=sock, timeout=timeout,  # type: ignore[no-untyped-call]
                       suppress_origin=True)
        except socket.timeout as exc:
            raise ConnectTimeout("connecting to %s timed out after %gs" % (url, timeout)) from exc
        except ssl.SSLError as exc:
            raise ConnectionLost("TLS with %s failed: %s" % (url, exc)) from exc
        except websocket.WebSocketBadStatusException as exc:
            raise ConnectionLost("%s refused the WebSocket upgrade: %s" % (url, exc)) from exc
        except (OSError, websocket.WebSocketException) as exc:
            raise ConnectionLost("connecting to %s failed: %s" % (url, exc)) from exc
        with self._lock:
            if self._aborted:
                raise ConnectionLost("connect aborted")
        return sock
