"""The engine's environment timer (sys stats, network type), route planning, the sys stats
sampler and proxy configuration checks: driven with a fake clock and fake detectors, no sleeps."""

from __future__ import annotations

import socket
from typing import Any, List, Optional, Tuple

import psutil
import pytest

from rts_sync import (
    ConnectionLost,
    InvalidArgumentError,
    LocalProxyConfiguration,
    LocalProxyError,
    LocalProxyState,
    LocalProxyType,
    NetworkType,
    SysStats,
)
from rts_sync._client.config import RuntimeConfig
from rts_sync._client.environment import Environment
from rts_sync._client.netinfo import CellularPath, NetworkSnapshot
from rts_sync._client.proxy import normalize_proxies, select_proxy
from rts_sync._client.sysstats import SysStatsSampler
from rts_sync._client.transport import bind_to_interface


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """An Environment wired to lists instead of a dispatcher and an I/O thread."""

    def __init__(self, interval: float = 2.0) -> None:
        self.clock = FakeClock()
        self.emitted: List[Tuple[Any, str, Tuple[Any, ...]]] = []
        self.changes = 0
        self.active = False
        self.net = NetworkSnapshot(NetworkType.LAN, "eth0")
        self.cellular: List[CellularPath] = []
        self.detections = 0
        self.detect_error: Optional[Exception] = None
        self.env = Environment(
            lambda lane, m, a: self.emitted.append((lane, m, a)), lambda: self.active,
            self._changed, lambda: interval, self.clock, self._detect, lambda: self.cellular)

    def _changed(self) -> None:
        self.changes += 1

    def _detect(self) -> NetworkSnapshot:
        self.detections += 1
        if self.detect_error is not None:
            raise self.detect_error
        return self.net

    def of(self, method: str) -> List[Tuple[Any, ...]]:
        return [a for _, m, a in self.emitted if m == method]


def test_stats_every_interval_and_the_next_wait() -> None:
    rig = Rig(interval=2.0)
    assert rig.env.run_once(rig.clock.now) == pytest.approx(2.0)
    assert rig.of("on_network_type_changed") == [(NetworkType.LAN,)]  # once, at start
    assert rig.of("on_sys_stats") == []
    rig.clock.now += 1.5
    assert rig.env.run_once(rig.clock.now) == pytest.approx(0.5)  # woken early: no tick
    rig.clock.now += 0.5
    assert rig.env.run_once(rig.clock.now) == pytest.approx(2.0)
    [(stats,)] = rig.of("on_sys_stats")
    assert isinstance(stats, SysStats)
    assert [lane for lane, m, _ in rig.emitted if m == "on_sys_stats"] == ["sys"]
    rig.clock.now += 9.0  # a long connect attempt: one tick, not a burst of four
    assert rig.env.run_once(rig.clock.now) == pytest.approx(2.0)
    assert len(rig.of("on_sys_stats")) == 2


def test_interval_changed_at_runtime_moves_the_next_tick() -> None:
    interval = [60.0]
    clock = FakeClock()
    ticks: List[float] = []
    env = Environment(lambda lane, m, a: ticks.append(clock.now) if m == "on_sys_stats" else None,
                      lambda: False, lambda: None, lambda: interval[0], clock,
                      lambda: NetworkSnapshot(NetworkType.LAN, "eth0"), lambda: [])
    assert env.run_once(clock.now) == pytest.approx(60.0)
    clock.now += 1.0
    interval[0] = 0.5  # set_runtime_parameters wakes the supervisor, which calls run_once
    assert env.run_once(clock.now) == pytest.approx(0.5)  # due now: ticked, next in 0.5
    assert ticks == [101.0]


def test_network_checked_only_while_active_and_changes_reported() -> None:
    rig = Rig()
    rig.env.run_once(rig.clock.now)
    assert rig.detections == 1
    rig.clock.now += 2.0
    rig.env.run_once(rig.clock.now)
    assert rig.detections == 1  # idle, not logged in: no network checks
    rig.active = True
    rig.clock.now += 2.0
    rig.env.run_once(rig.clock.now)
    assert rig.detections == 2 and rig.changes == 0  # unchanged
    rig.net = NetworkSnapshot(NetworkType.MOBILE_4G, "wwan0")
    rig.clock.now += 2.0
    rig.env.run_once(rig.clock.now)
    assert rig.of("on_network_type_changed") == [(NetworkType.LAN,), (NetworkType.MOBILE_4G,)]
    assert rig.changes == 1
    # Same type, another interface: no callback, but the session's path changed.
    rig.net = NetworkSnapshot(NetworkType.MOBILE_4G, "wwan1")
    rig.clock.now += 2.0
    rig.env.run_once(rig.clock.now)
    assert len(rig.of("on_network_type_changed")) == 2 and rig.changes == 2


def test_a_failing_detector_does_not_stop_the_timer(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    rig.detect_error = OSError("no /proc")
    assert rig.env.run_once(rig.clock.now) == pytest.approx(2.0)
    assert "network type detection failed" in caplog.text
    assert rig.of("on_network_type_changed") == []


class BrokenSampler(SysStatsSampler):
    def sample(self) -> SysStats:
        raise PermissionError("psutil: access denied")


def test_a_failing_sampler_skips_a_tick_and_keeps_the_timer(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    emitted: List[str] = []
    env = Environment(lambda lane, m, a: emitted.append(m), lambda: False, lambda: None,
                      lambda: 1.0, clock, lambda: NetworkSnapshot(NetworkType.LAN, "eth0"),
                      lambda: [], BrokenSampler())
    clock.now += 1.0
    assert env.run_once(clock.now) == pytest.approx(1.0)
    assert emitted == ["on_network_type_changed"]
    assert "sampling system stats failed" in caplog.text


def test_routes_primary_then_cellular_when_enabled() -> None:
    rig = Rig()
    socks = LocalProxyConfiguration(LocalProxyType.SOCKS5, "127.0.0.1", 1080)
    http = LocalProxyConfiguration(LocalProxyType.HTTP_TUNNEL, "127.0.0.1", 3128)
    rig.env.run_once(rig.clock.now)
    assert rig.env.routes() == [(None, None)]
    rig.cellular = [CellularPath("wwan0", "10.0.0.2")]
    assert rig.env.routes() == [(None, None)]  # enhancement is off by default
    rig.env.cellular_enhancement = True
    rig.env.proxies = (http, socks)
    assert rig.env.routes() == [(socks, None), (socks, CellularPath("wwan0", "10.0.0.2"))]
    # The default route already is the modem: no second path through the same interface.
    rig.net = NetworkSnapshot(NetworkType.MOBILE_4G, "wwan0")
    rig.active = True
    rig.clock.now += 2.0
    rig.env.run_once(rig.clock.now)
    assert rig.env.routes() == [(socks, None)]


def test_proxy_states_go_to_the_connection_lane() -> None:
    rig = Rig()
    rig.env.on_proxy_state(LocalProxyType.SOCKS5, LocalProxyState.ERROR,
                           LocalProxyError.SOCKS5_TCP_CLOSED)
    assert rig.emitted == [("conn", "on_local_proxy_state_changed",
                            (LocalProxyType.SOCKS5, LocalProxyState.ERROR,
                             LocalProxyError.SOCKS5_TCP_CLOSED))]


def test_sampler_fields_and_units() -> None:
    clock = FakeClock()
    sampler = SysStatsSampler(clock=clock)
    burn = sum(i * i for i in range(200000))  # some CPU time of ours between the samples
    assert burn > 0
    clock.now += 0.5
    s = sampler.sample()
    vm = psutil.virtual_memory()
    mb = 1024 * 1024
    assert s.cpu_cores == psutil.cpu_count() and s.cpu_cores >= 1
    assert 0.0 <= s.cpu_app_usage <= 1.0 and 0.0 <= s.cpu_total_usage <= 1.0
    assert s.full_memory == vm.total // mb
    assert 0 < s.memory_usage < s.full_memory
    assert abs(s.memory_usage - psutil.Process().memory_info().rss / mb) < 64
    assert s.total_memory_usage + s.free_memory == pytest.approx(s.full_memory, abs=2)
    assert s.memory_ratio == pytest.approx(100.0 * s.memory_usage / (vm.total / mb), rel=1e-6)
    assert 0.0 < s.total_memory_ratio <= 100.0
    # A sample right after another (no wall time passed) reports 0, never a division error.
    assert sampler.sample().cpu_app_usage == 0.0


def test_normalize_and_select_proxies() -> None:
    socks = LocalProxyConfiguration(LocalProxyType.SOCKS5, "127.0.0.1", 1080, "u", "p")
    http = LocalProxyConfiguration(LocalProxyType.HTTP_TUNNEL, "::1", 3128)
    assert normalize_proxies([]) == () and select_proxy(()) is None
    assert normalize_proxies([http, socks]) == (http, socks)
    assert select_proxy((http, socks)) is socks and select_proxy((http,)) is http
    for bad in ("127.0.0.1:1080", None, {socks}):
        with pytest.raises(TypeError):
            normalize_proxies(bad)  # type: ignore[arg-type]
    for pair in ([socks, socks], [LocalProxyConfiguration(1, "h", 1, "", "p")],
                 [LocalProxyConfiguration(2, "h", 1, "u", "p" * 256)]):
        with pytest.raises(InvalidArgumentError) as ei:
            normalize_proxies(pair)
        assert ei.value.code == -2


def test_stats_interval_parameter() -> None:
    assert RuntimeConfig().stats_interval == 2.0
    assert RuntimeConfig().with_parameters({"stats_interval": 0.2}).stats_interval == 0.2
    for bad in (0, 0.05, -1, "2", float("nan")):
        with pytest.raises(InvalidArgumentError):
            RuntimeConfig().with_parameters({"stats_interval": bad})


def test_bind_to_interface_falls_back_to_the_address() -> None:
    # SO_BINDTODEVICE fails for an interface that does not exist (or without root): then the
    # socket is bound to the interface's address, and without one the attempt fails cleanly.
    with socket.socket() as s:
        bind_to_interface(s, CellularPath("nosuchif0", "127.0.0.1"))
        assert s.getsockname()[0] == "127.0.0.1"
    with socket.socket() as s, pytest.raises(ConnectionLost):
        bind_to_interface(s, CellularPath("nosuchif0", None))
    with socket.socket() as s, pytest.raises(ConnectionLost):
        bind_to_interface(s, CellularPath("nosuchif0", "192.0.2.1"))  # not ours: EADDRNOTAVAIL
