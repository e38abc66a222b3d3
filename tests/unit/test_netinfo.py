"""Network type detection over fake procfs/sysfs trees built in tmp_path (no mocks: the same
files the kernel shows, with the same formats)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import pytest

from rts_sync import NetworkType
from rts_sync._client import netinfo

ROUTE_HEADER = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow"
                "\tIRTT\n")


def route(iface: str, dest: str = "00000000", mask: str = "00000000", flags: str = "0003",
          metric: int = 0) -> str:
    return "%s\t%s\t010200C0\t%s\t0\t0\t%d\t%s\t0\t0\t0\n" % (iface, dest, flags, metric, mask)


V6_DEFAULT = ("00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
              "fd000000000000000000000000000001 00000400 00000002 00000000 00000003 %8s\n")
V6_LO_REJECT = ("00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
                "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n")


def make_tree(root: Path, routes: str = "", ipv6: str = "",
              ifaces: Optional[Dict[str, Dict[str, str]]] = None) -> Path:
    """/proc/net/{route,ipv6_route} and /sys/class/net/<if>/<file> (a dict value of "/" is a
    directory)."""
    (root / "proc" / "net").mkdir(parents=True)
    (root / "proc" / "net" / "route").write_text(ROUTE_HEADER + routes)
    (root / "proc" / "net" / "ipv6_route").write_text(ipv6)
    for name, files in (ifaces or {}).items():
        d = root / "sys" / "class" / "net" / name
        d.mkdir(parents=True)
        for fname, content in files.items():
            if content == "/":
                (d / fname).mkdir()
            else:
                (d / fname).write_text(content + "\n")
    return root


def eth(flags: str = "0x1003") -> Dict[str, str]:
    return {"type": "1", "flags": flags, "uevent": "INTERFACE=x\nIFINDEX=2"}


def test_ethernet_default_route_is_lan(tmp_path: Path) -> None:
    root = make_tree(tmp_path, route("eth0") + route("eth0", "000200C0", "00FFFFFF", "0001"),
                     ifaces={"eth0": eth(), "lo": {"type": "772", "flags": "0x9"}})
    assert netinfo.default_route_interface(str(root)) == "eth0"
    assert netinfo.detect(str(root)) == netinfo.NetworkSnapshot(NetworkType.LAN, "eth0")


def test_wireless_directory_or_phy_link_is_wifi(tmp_path: Path) -> None:
    root = make_tree(tmp_path, route("wlp2s0"), ifaces={
        "wlp2s0": dict(eth(), wireless="/"), "wlan1": dict(eth(), phy80211="/")})
    assert netinfo.detect(str(root)).type == NetworkType.WIFI
    assert netinfo.classify_interface("wlan1", str(root)) == NetworkType.WIFI


@pytest.mark.parametrize("name,files", [
    ("wwan0", eth()),                                            # by name, even on type 1
    ("wwp0s20f0u6i12", eth()),                                   # systemd's name for a wwan
    ("rmnet_data0", {"type": "519", "flags": "0x1091"}),         # Qualcomm, raw IP
    ("ccmni0", {"type": "1", "flags": "0x1003"}),                # MediaTek
    ("usb0", {"type": "1", "flags": "0x1003", "uevent": "DEVTYPE=wwan\nINTERFACE=usb0"}),
    ("modem1", {"type": "519", "flags": "0x1091"}),              # raw-IP link type
    ("ppp0", {"type": "512", "flags": "0x10d1"}),                # PPP dial-up
])
def test_cellular_modems_are_mobile_4g(tmp_path: Path, name: str, files: Dict[str, str]) -> None:
    root = make_tree(tmp_path, route(name), ifaces={name: files})
    assert netinfo.is_cellular(name, str(root))
    assert netinfo.detect(str(root)) == netinfo.NetworkSnapshot(NetworkType.MOBILE_4G, name)


def test_no_default_route_is_disconnected(tmp_path: Path) -> None:
    root = make_tree(tmp_path, route("eth0", "000200C0", "00FFFFFF", "0001"),
                     ipv6=V6_LO_REJECT, ifaces={"eth0": eth()})
    assert netinfo.default_route_interface(str(root)) is None
    assert netinfo.detect(str(root)) == netinfo.NetworkSnapshot(NetworkType.DISCONNECTED, None)


def test_route_that_is_down_or_rejecting_does_not_count(tmp_path: Path) -> None:
    root = make_tree(tmp_path, route("eth0", flags="0002") + route("eth1", flags="0201"),
                     ifaces={"eth0": eth(), "eth1": eth()})
    assert netinfo.default_route_interface(str(root)) is None


def test_lowest_metric_wins(tmp_path: Path) -> None:
    root = make_tree(tmp_path, route("wwan0", metric=700) + route("wlan0", metric=600),
                     ifaces={"wwan0": eth(), "wlan0": dict(eth(), wireless="/")})
    assert netinfo.detect(str(root)) == netinfo.NetworkSnapshot(NetworkType.WIFI, "wlan0")


def test_ipv6_only_default_route(tmp_path: Path) -> None:
    root = make_tree(tmp_path, ipv6=V6_LO_REJECT + V6_DEFAULT % "enp1s0",
                     ifaces={"enp1s0": eth()})
    assert netinfo.default_route_interface(str(root)) == "enp1s0"
    assert netinfo.detect(str(root)).type == NetworkType.LAN


def test_tunnels_and_vanished_interfaces_are_unknown(tmp_path: Path) -> None:
    root = make_tree(tmp_path, route("tun0"), ifaces={"tun0": {"type": "65534", "flags": "0x1091"}})
    assert netinfo.detect(str(root)) == netinfo.NetworkSnapshot(NetworkType.UNKNOWN, "tun0")
    root2 = make_tree(tmp_path / "b", route("gone0"))
    assert netinfo.detect(str(root2)).type == NetworkType.UNKNOWN


def test_garbage_lines_are_skipped(tmp_path: Path) -> None:
    root = make_tree(tmp_path, "short line\n" + route("eth0", flags="zz") + route("eth1"),
                     ipv6="x y z\n", ifaces={"eth1": eth()})
    assert netinfo.default_route_interface(str(root)) == "eth1"


def test_cellular_interfaces_are_the_modems_that_are_up(tmp_path: Path) -> None:
    root = make_tree(tmp_path, route("eth0"), ifaces={
        "eth0": eth(), "wwan0": eth(), "wwan1": eth(flags="0x1002"),  # wwan1 is down
        "rmnet0": {"type": "519", "flags": "0x1091"}, "lo": {"type": "772", "flags": "0x9"}})
    paths = netinfo.cellular_interfaces(str(root), with_addresses=False)
    assert [p.interface for p in paths] == ["rmnet0", "wwan0"]
    assert netinfo.cellular_interfaces(str(tmp_path / "nothing")) == []


def test_without_procfs_the_portable_answer(tmp_path: Path) -> None:
    # No /proc/net/route under this root: psutil's view of the running system answers.
    snap = netinfo.detect(str(tmp_path))
    assert snap.type in (NetworkType.LAN, NetworkType.UNKNOWN)
    assert (snap.interface is None) == (snap.type == NetworkType.UNKNOWN)


def test_the_running_system(tmp_path: Path) -> None:
    snap = netinfo.detect()
    assert isinstance(snap.type, NetworkType)
    if snap.type == NetworkType.DISCONNECTED:
        assert snap.interface is None


def test_shared_detector_reads_once_per_max_age_for_every_caller() -> None:
    import threading

    calls: List[int] = []
    snap = netinfo.NetworkSnapshot(NetworkType.LAN, "eth0")
    shared = netinfo.SharedDetector(max_age=3600.0,
                                    detect_fn=lambda: calls.append(1) or snap)
    threads = [threading.Thread(target=shared) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert shared() == snap and len(calls) == 1  # 51 callers, one read
    fresh = netinfo.SharedDetector(max_age=0.0, detect_fn=lambda: calls.append(1) or snap)
    fresh()
    fresh()
    assert len(calls) == 3  # max_age 0: every call reads
