"""Connections through a local proxy (PySocks): SOCKS5 or HTTP CONNECT, and what went wrong.

:func:`normalize_proxies` validates what ``RTS.set_local_proxy`` was given; :func:`select_proxy`
picks the one the signaling connection uses (SOCKS5 when both kinds are set, as the seed says);
:func:`open_tunnel` makes one connection attempt through it and reports the proxy's states:

* ``INITED`` when the TCP connection to the proxy is up,
* ``CONNECTED`` when the proxy has opened the tunnel to the server,
* ``ERROR`` with a :class:`LocalProxyError` otherwise, and the attempt raises
  :class:`~rts_sync.errors.ProxyError` (``raise ... from`` the PySocks exception).

How PySocks' failures map to ``LocalProxyError``:

==================================================  =======================================
failure                                             error
==================================================  =======================================
SOCKS5: TCP to the proxy refused/unreachable,       ``SOCKS5_TCP_CLOSED``
proxy closed or reset the connection, timed out,
or refused to open the tunnel (reply code != 0)
SOCKS5: first byte of a reply is not version 5      ``SOCKS5_VERSION_ERROR``
(e.g. an HTTP proxy), or the auth reply not 1
SOCKS5: the proxy chose an authentication method    ``SOCKS5_INVALID_VALUE``
we did not offer
SOCKS5: malformed reply (bad address type, ...)     ``SOCKS5_FORMAT_ERROR``
SOCKS5: the proxy wants a username and password     ``SOCKS5_USER_PASS_NOT_GIVEN``
and none were given, or it rejected the given ones
HTTP tunnel: anything (refused, closed, 407,        ``HTTP_TUNNEL_FAILED``
403, not an HTTP proxy, timed out)
==================================================  =======================================

The HTTP ``CONNECT`` exchange is done by our subclass of PySocks' socket, because PySocks reads
only the status line of the proxy's answer: header lines arriving in a later TCP segment would
then be read by the WebSocket handshake as the server's answer. Ours reads the whole header
block and nothing past it.

Threading: functions run on the supervisor thread; the state callback is called there and must
only queue work.
"""

from __future__ import annotations

import base64
import socket
from typing import Any, Callable, List, Optional, Sequence, Tuple

import socks

from ..enums import LocalProxyError, LocalProxyState, LocalProxyType
from ..errors import InvalidArgumentError, ProxyError
from ..types import LocalProxyConfiguration

__all__ = ["ProxyStateFn", "TunnelSocket", "normalize_proxies", "open_tunnel", "select_proxy"]

#: on_state(type, state, error), called on the supervisor thread.
ProxyStateFn = Callable[[LocalProxyType, LocalProxyState, LocalProxyError], None]

_E = LocalProxyError
_MAX_HEAD = 65536


def normalize_proxies(configurations: Sequence[LocalProxyConfiguration]
                      ) -> Tuple[LocalProxyConfiguration, ...]:
    """Validate ``set_local_proxy``'s argument: at most one configuration per type.

    TypeError for a wrong type; InvalidArgumentError (code -2) for a bad combination.
    """
    if isinstance(configurations, (str, bytes)) or not isinstance(configurations, (list, tuple)):
        raise TypeError("configurations must be a list of LocalProxyConfiguration, not %s"
                        % type(configurations).__name__)
    seen = set()
    for cfg in configurations:
        if not isinstance(cfg, LocalProxyConfiguration):
            raise TypeError("configurations must hold LocalProxyConfiguration, not %s"
                            % type(cfg).__name__)
        if cfg.local_proxy_type in seen:
            raise InvalidArgumentError("more than one %s proxy configured"
                                       % cfg.local_proxy_type.name, -2)
        seen.add(cfg.local_proxy_type)
        user, password = cfg.local_proxy_username, cfg.local_proxy_password
        if bool(user) != bool(password):
            raise InvalidArgumentError("a proxy username needs a password and vice versa", -2)
        if len(user.encode()) > 255 or len(password.encode()) > 255:
            raise InvalidArgumentError("proxy username and password are at most 255 bytes", -2)
    return tuple(configurations)


def select_proxy(proxies: Sequence[LocalProxyConfiguration]
                 ) -> Optional[LocalProxyConfiguration]:
    """The proxy for the signaling connection: SOCKS5 if configured, else the HTTP tunnel."""
    for kind in (LocalProxyType.SOCKS5, LocalProxyType.HTTP_TUNNEL):
        for cfg in proxies:
            if cfg.local_proxy_type == kind:
                return cfg
    return None


class TunnelSocket(socks.socksocket):
    """PySocks' socket, telling when the TCP connection to the proxy is up (``on_tcp``),
    recording the SOCKS5 replies (to classify errors) and doing HTTP CONNECT completely.

    Threading: used by one thread (the supervisor's).
    """

    def __init__(self, family: socket.AddressFamily, on_tcp: Callable[[], None]) -> None:
        super().__init__(family, socket.SOCK_STREAM)
        self.on_tcp = on_tcp
        self.reads: List[bytes] = []

    def _readall(self, file: Any, count: int) -> bytes:
        data: bytes = super()._readall(file, count)  # type: ignore[misc]
        self.reads.append(data)
        return data

    def _negotiate_socks5(self, *dest_addr: Any) -> None:
        self.on_tcp()
        super()._negotiate_SOCKS5(*dest_addr)  # type: ignore[misc]

    def _negotiate_http(self, dest_addr: str, dest_port: int) -> None:
        self.on_tcp()
        user, password = self.proxy[4], self.proxy[5]
        host = "[%s]" % dest_addr if ":" in dest_addr else dest_addr.encode("idna").decode()
        lines = ["CONNECT %s:%d HTTP/1.1" % (host, dest_port), "Host: %s:%d" % (host, dest_port)]
        if user and password:
            lines.append("Proxy-Authorization: Basic "
                         + base64.b64encode(user + b":" + password).decode("ascii"))
        self.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        head = self._read_head()
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise socks.GeneralProxyError("the proxy is not an HTTP proxy: %r" % status[:80])
        if parts[1] != "200":
            raise socks.HTTPError("the HTTP proxy refused the tunnel: %s" % status)
        self.proxy_sockname = ("0.0.0.0", 0)
        self.proxy_peername = (dest_addr, dest_port)

    def _read_head(self) -> bytes:
        """The proxy's answer up to and including the blank line, and not one byte more."""
        buf = b""
        while True:
            peek = socket.socket.recv(self, 4096, socket.MSG_PEEK)
            if not peek:
                raise socks.GeneralProxyError("Connection closed unexpectedly")
            end = (buf + peek).find(b"\r\n\r\n")
            take = len(peek) if end < 0 else end + 4 - len(buf)
            while take > 0:
                got = socket.socket.recv(self, take)
                if not got:
                    raise socks.GeneralProxyError("Connection closed unexpectedly")
                buf += got
                take -= len(got)
            if end >= 0:
                return buf
            if len(buf) > _MAX_HEAD:
                raise socks.GeneralProxyError("the HTTP proxy's answer has no end")

    _proxy_negotiators = {socks.SOCKS5: _negotiate_socks5, socks.HTTP: _negotiate_http}


def _unwrap(exc: socks.ProxyError) -> socks.ProxyError:
    """PySocks wraps its own errors raised during negotiation (they are OSErrors too) in
    ``GeneralProxyError("Socket error", inner)``; the inner one says what happened."""
    inner = getattr(exc, "socket_err", None)
    return inner if isinstance(inner, socks.ProxyError) else exc


def _socks5_error(exc: socks.ProxyError, reads: List[bytes]) -> LocalProxyError:
    exc = _unwrap(exc)
    if isinstance(exc, socks.SOCKS5AuthError):
        return _E.SOCKS5_USER_PASS_NOT_GIVEN
    if isinstance(exc, (socks.ProxyConnectionError, socks.SOCKS5Error)):
        return _E.SOCKS5_TCP_CLOSED
    if "invalid data" not in exc.msg:
        return _E.SOCKS5_TCP_CLOSED  # closed unexpectedly, reset, timed out
    # PySocks says "sent invalid data" for every malformed reply; the replies tell which.
    if not reads or reads[0][:1] != b"\x05":
        return _E.SOCKS5_VERSION_ERROR
    if len(reads) == 1:
        return _E.SOCKS5_INVALID_VALUE  # a method we did not offer
    i = 1
    if reads[0][1:2] == b"\x02":
        if reads[1][:1] != b"\x01":
            return _E.SOCKS5_VERSION_ERROR
        i = 2
    if len(reads) > i and reads[i][:1] != b"\x05":
        return _E.SOCKS5_VERSION_ERROR
    return _E.SOCKS5_FORMAT_ERROR


def open_tunnel(cfg: LocalProxyConfiguration, host: str, port: int, timeout: float,
                on_state: ProxyStateFn,
                prepare: Callable[[socket.socket], None],
                started: Callable[[socket.socket], None]) -> socket.socket:
    """A plain socket connected to ``host:port`` through the proxy ``cfg`` (blocking, with
    ``timeout``). ``prepare(sock)`` runs before the TCP connect (options, binding);
    ``started(sock)`` lets the caller abort it from another thread. Raises ProxyError."""
    kind = LocalProxyType(cfg.local_proxy_type)
    where = "%s proxy %s:%d" % (kind.name, cfg.local_proxy_ip, cfg.local_proxy_port)

    def fail(error: LocalProxyError, detail: str) -> ProxyError:
        on_state(kind, LocalProxyState.ERROR, error)
        return ProxyError("%s: %s (%s)" % (where, detail, error.name))

    tcp_error = _E.SOCKS5_TCP_CLOSED if kind == LocalProxyType.SOCKS5 else _E.HTTP_TUNNEL_FAILED
    try:
        infos = socket.getaddrinfo(cfg.local_proxy_ip, cfg.local_proxy_port,
                                   type=socket.SOCK_STREAM)
    except OSError as exc:
        raise fail(tcp_error, "cannot resolve the proxy: %s" % exc) from exc
    family, _, _, _, addr = infos[0]
    sock = TunnelSocket(family, lambda: on_state(kind, LocalProxyState.INITED, _E.OK))
    sock.set_proxy(socks.SOCKS5 if kind == LocalProxyType.SOCKS5 else socks.HTTP,
                   str(addr[0]), int(addr[1]), rdns=True,
                   username=cfg.local_proxy_username or None,
                   password=cfg.local_proxy_password or None)
    try:
        prepare(sock)
        sock.settimeout(timeout)
        started(sock)
        sock.connect((host, port))
    except socks.ProxyError as exc:
        sock.close()
        error = (_socks5_error(exc, sock.reads) if kind == LocalProxyType.SOCKS5
                 else _E.HTTP_TUNNEL_FAILED)
        raise fail(error, str(_unwrap(exc))) from exc
    except OSError as exc:
        sock.close()
        raise fail(tcp_error, str(exc)) from exc
    except BaseException:  # binding failed, or the connect was aborted
        sock.close()
        raise
    on_state(kind, LocalProxyState.CONNECTED, _E.OK)
    plain = socket.socket(family, socket.SOCK_STREAM, 0, sock.detach())
    plain.settimeout(timeout)
    return plain
