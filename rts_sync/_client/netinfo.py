"""What kind of network this machine is on, and which interface is a cellular modem.

On Linux the answer comes from the interface of the default route, the way netifaces users
find it: ``/proc/net/route`` (IPv4, lowest metric wins) or else ``/proc/net/ipv6_route``, then
that interface's entry in ``/sys/class/net/<if>/``:

=========================================================  ===========================
what sysfs shows                                           :class:`NetworkType`
=========================================================  ===========================
no default route at all                                    ``DISCONNECTED``
a ``wireless`` directory or a ``phy80211`` link            ``WIFI``
a cellular modem: name ``wwan*``/``wwp*``/``rmnet*``/      ``MOBILE_4G`` (see below)
``ccmni*``, ``DEVTYPE=wwan`` in ``uevent``, or link type
raw-IP (519) or PPP (512)
link type 1 (Ethernet; also veth, bridges, dummies)        ``LAN``
anything else (tunnels, VPNs, interfaces that vanished)    ``UNKNOWN``
=========================================================  ===========================

The generation of a cellular link (2G/3G/4G/5G) is not visible in sysfs (only the modem's
management channel, e.g. ModemManager over QMI/MBIM, knows it), so every cellular interface
reports ``MOBILE_4G``, the most common generation. A PPP link is taken as a modem dial-up,
so a PPPoE DSL line also reports ``MOBILE_4G``.

Elsewhere (no ``/proc/net/route``) psutil answers: an interface other than loopback that is
up and has an address means ``LAN``, otherwise ``UNKNOWN``.

Every function that reads the file system takes ``root`` (default ``/``), so it can be tested
over a fake procfs/sysfs tree. Reading costs a few small files, cheap enough for a timer.

Threading: pure functions, safe on any thread.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import psutil

from ..enums import NetworkType

__all__ = [
    "CellularPath",
    "NetworkSnapshot",
    "SharedDetector",
    "cellular_interfaces",
    "classify_interface",
    "default_route_interface",
    "detect",
    "detect_shared",
    "is_cellular",
]

_RTF_UP = 0x0001
_RTF_REJECT = 0x0200
_ARPHRD_ETHER = 1
_ARPHRD_PPP = 512
_ARPHRD_RAWIP = 519
_IFF_UP = 0x1
_CELLULAR_PREFIXES = ("wwan", "wwp", "rmnet", "ccmni")


@dataclass(frozen=True)
class NetworkSnapshot:
    """The network type and the default route's interface (``None`` without one)."""

    type: NetworkType
    interface: Optional[str]


@dataclass(frozen=True)
class CellularPath:
    """A cellular interface a connection can be bound to, with its first IPv4/IPv6 address."""

    interface: str
    address: Optional[str]


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _net_dir(root: str, name: str) -> str:
    return os.path.join(root, "sys", "class", "net", name)


def default_route_interface(root: str = "/") -> Optional[str]:
    """The interface of the default route (IPv4 first, lowest metric), or None."""
    best: Optional[Tuple[int, str]] = None
    text = _read(os.path.join(root, "proc", "net", "route"))
    for line in (text or "").splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue
        try:
            flags, metric = int(cols[3], 16), int(cols[6])
        except ValueError:
            continue
        if cols[1] == "00000000" and cols[7] == "00000000" and flags & _RTF_UP \
                and not flags & _RTF_REJECT and (best is None or metric < best[0]):
            best = (metric, cols[0])
    if best is not None:
        return best[1]
    text = _read(os.path.join(root, "proc", "net", "ipv6_route"))
    for line in (text or "").splitlines():
        cols = line.split()
        if len(cols) < 10 or cols[0] != "0" * 32 or cols[1] != "00" or cols[9] == "lo":
            continue
        try:
            flags, metric = int(cols[8], 16), int(cols[5], 16)
        except ValueError:
            continue
        if flags & _RTF_UP and not flags & _RTF_REJECT and (best is None or metric < best[0]):
            best = (metric, cols[9])
    return best[1] if best is not None else None


def _link_type(root: str, name: str) -> Optional[int]:
    text = _read(os.path.join(_net_dir(root, name), "type"))
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def is_cellular(name: str, root: str = "/") -> bool:
    """True when ``name`` looks like a cellular modem's network interface."""
    if name.startswith(_CELLULAR_PREFIXES):
        return True
    uevent = _read(os.path.join(_net_dir(root, name), "uevent")) or ""
    if "DEVTYPE=wwan" in uevent.split():
        return True
    return _link_type(root, name) in (_ARPHRD_RAWIP, _ARPHRD_PPP)


def classify_interface(name: str, root: str = "/") -> NetworkType:
    """The network type of one interface, from sysfs (see the module docstring)."""
    base = _net_dir(root, name)
    if not os.path.isdir(base):
        return NetworkType.UNKNOWN
    if os.path.isdir(os.path.join(base, "wireless")) or os.path.exists(
            os.path.join(base, "phy80211")):
        return NetworkType.WIFI
    if is_cellular(name, root):
        return NetworkType.MOBILE_4G
    if _link_type(root, name) == _ARPHRD_ETHER:
        return NetworkType.LAN
    return NetworkType.UNKNOWN


def _is_up(root: str, name: str) -> bool:
    flags = _read(os.path.join(_net_dir(root, name), "flags"))
    try:
        return flags is not None and bool(int(flags, 16) & _IFF_UP)
    except ValueError:
        return False


def _first_address(name: str) -> Optional[str]:
    addrs = psutil.net_if_addrs().get(name, [])
    for family in (socket.AF_INET, socket.AF_INET6):
        for a in addrs:
            if a.family == family and a.address:
                return a.address.split("%", 1)[0]
    return None


def cellular_interfaces(root: str = "/", with_addresses: bool = True) -> List[CellularPath]:
    """Cellular interfaces that are administratively up, sorted by name.

    Addresses come from psutil (the running system), so pass ``with_addresses=False`` when
    ``root`` is a fake tree.
    """
    try:
        names = sorted(os.listdir(os.path.join(root, "sys", "class", "net")))
    except OSError:
        return []
    return [CellularPath(n, _first_address(n) if with_addresses else None)
            for n in names if is_cellular(n, root) and _is_up(root, n)]


def _detect_portable() -> NetworkSnapshot:
    stats = psutil.net_if_stats()
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        st = stats.get(name)
        if st is None or not st.isup or name.startswith("lo"):
            continue
        if any(a.family in (socket.AF_INET, socket.AF_INET6) and a.address
               and not a.address.startswith(("127.", "::1", "fe80")) for a in addrs):
            return NetworkSnapshot(NetworkType.LAN, name)
    return NetworkSnapshot(NetworkType.UNKNOWN, None)


def detect(root: str = "/") -> NetworkSnapshot:
    """The current network type and default interface (see the module docstring)."""
    if not os.path.exists(os.path.join(root, "proc", "net", "route")):
        return _detect_portable()
    name = default_route_interface(root)
    if name is None:
        return NetworkSnapshot(NetworkType.DISCONNECTED, None)
    return NetworkSnapshot(classify_interface(name, root), name)


class SharedDetector:
    """:func:`detect` shared by every engine of the process: a snapshot younger than
    ``max_age`` seconds is reused, so N idle engines read ``/proc/net/route`` and ``/sys`` once
    per interval between them, not N times (it was most of an idle engine's CPU).

    Threading: thread-safe (the supervisor threads of all engines call it).
    """

    def __init__(self, max_age: float = 1.0,
                 detect_fn: Callable[[], NetworkSnapshot] = lambda: detect()) -> None:
        self.max_age = max_age
        self._detect = detect_fn
        self._lock = threading.Lock()
        self._snap: Optional[NetworkSnapshot] = None
        self._at = 0.0

    def __call__(self) -> NetworkSnapshot:
        with self._lock:
            now = time.monotonic()
            if self._snap is None or now - self._at >= self.max_age:
                self._snap, self._at = self._detect(), now
            return self._snap


#: The process-wide detector the engines use.
detect_shared = SharedDetector()

