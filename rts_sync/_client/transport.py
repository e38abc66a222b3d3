"""The one code path that makes the SDK's connections: socket, (proxy), TCP_NODELAY, (TLS), handshake.

Each attempt gets a fresh socket made here (never one reused across attempts), with
``TCP_NODELAY`` set by us (websocket-client sets it only on sockets it creates itself),
optionally bound to one interface (the cellular path), connected directly or through a local
proxy (:mod:`.proxy`, PySocks), wrapped in TLS by us for ``wss://`` (websocket-client skips TLS
on a socket handed to it), then websocket-client performs the HTTP upgrade on it. Foreign
exceptions are translated at this boundary into :class:`~rts_sync.errors.TransportError`
subclasses, keeping the cause.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any, Callable, List, Optional, Tuple
from urllib.parse import urlsplit

import websocket

from ..errors import ConnectionLost, ConnectTimeout, InvalidArgumentError, TransportError
from ..types import LocalProxyConfiguration
from .netinfo import CellularPath
from .proxy import ProxyStateFn, open_tunnel
from .tls import client_ssl_context

__all__ = ["Connector", "bind_to_interface", "parse_server_url"]

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


def bind_to_interface(sock: socket.socket, path: CellularPath) -> None:
    """Make ``sock`` leave through ``path.interface``: ``SO_BINDTODEVICE`` where the system has
    it and allows it (Linux, as root or with CAP_NET_RAW), else bind to the interface's address."""
    opt = getattr(socket, "SO_BINDTODEVICE", None)
    if opt is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, path.interface.encode() + b"\0")
            return
        except OSError as exc:
            log.debug("SO_BINDTODEVICE %s: %s; binding to its address", path.interface, exc)
    if not path.address:
        raise ConnectionLost("cannot bind to %s: it has no address" % path.interface)
    try:
        sock.bind((path.address, 0))
    except OSError as exc:
        raise ConnectionLost("cannot bind to %s (%s): %s"
                             % (path.interface, path.address, exc)) from exc


def _no_proxy_state(*args: object) -> None:
    pass


class Connector:
    """Opens connections; ``abort()`` from another thread interrupts one in progress.

    ``ca_file()`` is the ``tls_ca_file`` runtime parameter at each attempt ("" = the system's
    CAs).

    Threading: ``connect`` runs on the supervisor thread; ``abort`` may be called from any thread.
    """

    def __init__(self, ca_file: Callable[[], str] = lambda: "") -> None:
        self._ca_file = ca_file
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

    def connect(self, url: str, timeout: float,
                proxy: Optional[LocalProxyConfiguration] = None,
                path: Optional[CellularPath] = None,
                on_proxy_state: Optional[ProxyStateFn] = None) -> socket.socket:
        """A connected socket that has completed the WebSocket handshake, in blocking mode.

        Through ``proxy`` when given (its states go to ``on_proxy_state``; a failure raises
        ProxyError); leaving through ``path``'s interface when given.
        """
        secure, host, port = parse_server_url(url)
        if proxy is not None:
            return self._connect_proxied(url, host, port, secure, timeout, proxy, path,
                                         on_proxy_state or _no_proxy_state)
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
                return self._open(sock, addr, url, host, secure, timeout, path)
            except TransportError as exc:
                sock.close()
                errors.append(str(exc))
                if isinstance(exc, ConnectTimeout):
                    raise
            finally:
                with self._lock:
                    self._current = None
        raise ConnectionLost("cannot connect to %s: %s" % (url, "; ".join(errors) or "no address"))

    def _started(self, sock: socket.socket) -> None:
        with self._lock:
            if self._aborted:
                raise ConnectionLost("connect aborted")
            self._current = sock

    @staticmethod
    def _prepare(sock: socket.socket, path: Optional[CellularPath]) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if path is not None:
            bind_to_interface(sock, path)

    def _connect_proxied(self, url: str, host: str, port: int, secure: bool, timeout: float,
                         proxy: LocalProxyConfiguration, path: Optional[CellularPath],
                         on_state: ProxyStateFn) -> socket.socket:
        try:
            sock = open_tunnel(proxy, host, port, timeout, on_state,
                               lambda s: self._prepare(s, path), self._started)
        finally:
            with self._lock:
                self._current = None
        with self._lock:
            self._current = sock
        try:
            return self._open(sock, None, url, host, secure, timeout, None)
        except TransportError:
            sock.close()
            raise
        finally:
            with self._lock:
                self._current = None

    def _tls_context(self) -> ssl.SSLContext:
        ca_file = self._ca_file()
        try:
            return client_ssl_context(ca_file)
        except OSError as exc:  # the file is gone or holds no certificate
            raise ConnectionLost("TLS: cannot use tls_ca_file %r: %s" % (ca_file, exc)) from exc

    def _open(self, sock: socket.socket, addr: Any, url: str, host: str, secure: bool,
              timeout: float, path: Optional[CellularPath]) -> socket.socket:
        """Connect ``sock`` to ``addr`` (None: it is connected already), then TLS and upgrade."""
        sock.settimeout(timeout)
        try:
            if addr is not None:
                self._prepare(sock, path)
                sock.connect(addr)
            if secure:
                sock = self._tls_context().wrap_socket(sock, server_hostname=host)
            ws = websocket.WebSocket(skip_utf8_validation=True)
            ws.connect(url, socket=sock, timeout=timeout,  # type: ignore[no-untyped-call]
                       suppress_origin=True)
        except socket.timeout as exc:
            raise ConnectTimeout("connecting to %s timed out after %gs" % (url, timeout)) from exc
        except ssl.SSLCertVerificationError as exc:
            raise ConnectionLost("TLS certificate verification failed for %s: %s"
                                 % (url, exc.verify_message or exc)) from exc
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
