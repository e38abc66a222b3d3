"""Data classes of the public API: system stats, local proxy settings, received messages.

All are frozen dataclasses with snake_case fields (reference §3.8, §3.9).

Threading: every class here is immutable, so instances are safe to share between threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .enums import LocalProxyType

__all__ = [
    "LocalProxyConfiguration",
    "Message",
    "SysStats",
]


@dataclass(frozen=True)
class SysStats:
    """CPU and memory statistics, passed to ``on_sys_stats`` every 2 s (reference §3.9).

    Attributes:
        cpu_cores: Number of CPU cores.
        cpu_app_usage: CPU usage of this process, a fraction from 0 to 1.
        cpu_total_usage: CPU usage of the whole system, a fraction from 0 to 1.
        memory_usage: Memory used by this process, in MB.
        full_memory: Total memory of the device, in MB.
        total_memory_usage: Memory used by the whole system, in MB.
        free_memory: Free memory that can be allocated, in MB.
        memory_ratio: Memory of this process relative to the device's, in percent (0..100).
        total_memory_ratio: Memory used by the system relative to the device's, in
            percent (0..100).

    Threading: immutable, safe to share between threads.
    """

    cpu_cores: int
    cpu_app_usage: float
    cpu_total_usage: float
    memory_usage: float
    full_memory: int
    total_memory_usage: int
    free_memory: int
    memory_ratio: float
    total_memory_ratio: float


@dataclass(frozen=True)
class LocalProxyConfiguration:
    """One local proxy for ``RTS.set_local_proxy`` (reference §1, §3.8).

    Attributes:
        local_proxy_type: :class:`~rts_sync.enums.LocalProxyType` (an ``int`` 1 or 2 is
            accepted and converted to the enum).
        local_proxy_ip: Host name or IP address of the proxy, non-empty.
        local_proxy_port: TCP port of the proxy, 1..65535.
        local_proxy_username: User name for the proxy, ``""`` for none.
        local_proxy_password: Password for the proxy, ``""`` for none; left out of ``repr``.

    Raises:
        TypeError: a field has the wrong type.
        ValueError: a field has a bad value (unknown proxy type, empty host, port out of
            range).

    Threading: immutable, safe to share between threads.
    """

    local_proxy_type: LocalProxyType
    local_proxy_ip: str
    local_proxy_port: int
    local_proxy_username: str = ""
    local_proxy_password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        proxy_type: object = self.local_proxy_type
        if isinstance(proxy_type, bool) or not isinstance(proxy_type, int):
            raise TypeError(
                f"local_proxy_type must be a LocalProxyType or int, not {type(proxy_type).__name__}"
            )
        try:
            coerced = LocalProxyType(proxy_type)
        except ValueError:
            known = ", ".join(f"{m.name} ({m.value})" for m in LocalProxyType)
            raise ValueError(f"local_proxy_type must be one of {known}, not {proxy_type}") from None
        object.__setattr__(self, "local_proxy_type", coerced)

        ip: object = self.local_proxy_ip
        if not isinstance(ip, str):
            raise TypeError(f"local_proxy_ip must be a str, not {type(ip).__name__}")
        if not ip:
            raise ValueError("local_proxy_ip must not be empty")

        port: object = self.local_proxy_port
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"local_proxy_port must be an int, not {type(port).__name__}")
        if not 1 <= port <= 65535:
            raise ValueError(f"local_proxy_port must be in 1..65535, not {port}")

        for name in ("local_proxy_username", "local_proxy_password"):
            value: object = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__}")


@dataclass(frozen=True)
class Message:
    """A received message, as yielded by the pull-style receive queue (``RTS.messages``).

    Attributes:
        kind: ``"peer"`` for a peer-to-peer message (``on_message_received`` /
            ``on_binary_message_received``), ``"room"`` for a room broadcast
            (``on_room_message_received`` / ``on_room_binary_message_received``).
        uid: The sender's uid (for messages pushed by an application server, its
            ``From`` id).
        message: The payload: ``str`` for a text message, ``bytes`` for a binary one.
        room_id: The room the broadcast came from; ``None`` for peer messages.

    Raises:
        ValueError: ``kind`` is neither ``"peer"`` nor ``"room"``.
        TypeError: ``message`` is neither ``str`` nor ``bytes``.

    Threading: immutable, safe to share between threads.
    """

    kind: str
    uid: str
    message: str | bytes
    room_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("peer", "room"):
            raise ValueError(f"kind must be 'peer' or 'room', not {self.kind!r}")
        payload: object = self.message
        if not isinstance(payload, (str, bytes)):
            raise TypeError(f"message must be str or bytes, not {type(payload).__name__}")

    @property
    def binary(self) -> bool:
        """``True`` if the payload is ``bytes`` (a binary message), ``False`` for text."""
        return isinstance(self.message, bytes)
