"""Runtime parameters of an engine: the documented keys, their defaults and their validation.

``create_rts(parameters=...)`` and ``RTS.set_runtime_parameters(...)`` take a dict of these keys.
Unknown keys are ignored with one warning each (the seed's parameters are reserved JSON, so users
may pass keys meant for other SDK builds, such as ``rtc.device_id``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Mapping, Optional, Set

from ..errors import InvalidArgumentError

__all__ = ["PARAMETER_DOCS", "RuntimeConfig"]

log = logging.getLogger(__name__)

#: Every documented key with what it means; README's API section repeats this table.
PARAMETER_DOCS: Dict[str, str] = {
    "heartbeat_interval": "seconds between heartbeats while connected (default 5.0)",
    "heartbeat_timeout": "seconds without any frame from the server before the link is "
                         "declared dead (default 8.0; must exceed heartbeat_interval and stay "
                         "below twice it)",
    "connect_timeout": "seconds for TCP connect + TLS + WebSocket handshake, and then for the "
                       "server's WELCOME (default 10.0)",
    "request_timeout": "seconds to wait for the server's answer to a request such as login or "
                       "an online-status query (default 10.0)",
    "send_timeout": "seconds after which a reliable message without a result fails with "
                    "TIMEOUT (default 15.0)",
    "outbox_size": "most sends and requests queued for the I/O thread; past it a send fails "
                   "(default 100000)",
    "callback_queue_size": "most callbacks waiting for the dispatcher; past it the I/O thread "
                           "stops reading until it drains (default 10000)",
    "dispatcher_threads": "most callback threads of this engine: one runs while that is "
                          "enough, more start while every one is busy (a slow callback stalls "
                          "only its own peer's or room's events) and end after 30 s idle; "
                          "events for one peer or room stay in order (default 4)",
    "message_queue_size": "size of the pull-style queue behind RTS.messages(); 0 turns it off "
                          "(default 0)",
    "reconnect_backoff_base": "seconds: the first reconnect waits up to this long, each later "
                              "one up to twice the previous (full jitter) (default 0.2)",
    "reconnect_backoff_cap": "seconds: the longest wait between reconnect attempts (default 10)",
    "lost_after": "seconds of reconnecting after which the state becomes LOST (the SDK keeps "
                  "trying) (default 10)",
    "stable_after": "seconds a connection must last before the backoff starts again from the "
                    "first step (default 10)",
    "stats_interval": "seconds between on_sys_stats callbacks, which are also the ticks at "
                      "which the network type is checked while logged in or connecting "
                      "(default 2.0, at least 0.1)",
    "tls_ca_file": "path of a PEM file of the CA certificates that wss:// servers must be "
                   "signed by, instead of the system's trusted CAs (default \"\": the system's); "
                   "certificate and host name are verified either way",
}


@dataclass(frozen=True)
class RuntimeConfig:
    """Validated runtime parameters (see :data:`PARAMETER_DOCS`).

    Threading: immutable; a changed configuration is a new object swapped in whole.
    """

    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 8.0
    connect_timeout: float = 10.0
    request_timeout: float = 10.0
    send_timeout: float = 15.0
    outbox_size: int = 100000
    callback_queue_size: int = 10000
    dispatcher_threads: int = 4
    message_queue_size: int = 0
    stats_interval: float = 2.0
    reconnect_backoff_base: float = 0.2
    reconnect_backoff_cap: float = 10.0
    lost_after: float = 10.0
    stable_after: float = 10.0
    tls_ca_file: str = ""

    def with_parameters(self, params: Optional[Mapping[str, Any]],
                        warned: Optional[Set[str]] = None) -> RuntimeConfig:
        """A copy with ``params`` applied; raises InvalidArgumentError for a bad value."""
        if params is None:
            return self
        if not isinstance(params, Mapping):
            raise TypeError("parameters must be a dict, not %s" % type(params).__name__)
        known = {f.name: f.type for f in fields(self)}
        changes: Dict[str, Any] = {}
        for key, value in params.items():
            if key not in known:
                if warned is None or key not in warned:
                    log.warning("ignoring unknown runtime parameter %r (known: %s)",
                                key, ", ".join(sorted(known)))
                    if warned is not None:
                        warned.add(key)
                continue
            if known[key] == "str":
                changes[key] = _ca_file(key, value)
            else:
                changes[key] = _coerce(key, value, known[key] == "int")
        cfg = replace(self, **changes)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not self.heartbeat_interval < self.heartbeat_timeout < 2 * self.heartbeat_interval:
            raise InvalidArgumentError(
                "heartbeat_timeout (%g) must be above heartbeat_interval (%g) and below twice it"
                % (self.heartbeat_timeout, self.heartbeat_interval))
        if self.dispatcher_threads > 64:
            raise InvalidArgumentError("dispatcher_threads must be at most 64")
        if self.stats_interval < 0.1:
            raise InvalidArgumentError("stats_interval must be at least 0.1 s")


def _ca_file(key: str, value: Any) -> str:
    """A readable file path (or "" for none)."""
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidArgumentError("runtime parameter %s must be a file path, got %r" % (key, value))
    path = os.fspath(value)
    if path and not os.path.isfile(path):
        raise InvalidArgumentError("runtime parameter %s: no such file: %r" % (key, path))
    return str(path)


def _coerce(key: str, value: Any, integral: bool) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError("runtime parameter %s must be a number, got %r" % (key, value))
    if integral:
        if int(value) != value:
            raise InvalidArgumentError("runtime parameter %s must be a whole number" % key)
        value = int(value)
        low = 0 if key == "message_queue_size" else 1
        if value < low:
            raise InvalidArgumentError("runtime parameter %s must be >= %d" % (key, low))
        return value
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgumentError("runtime parameter %s must be a positive number" % key)
    return value
