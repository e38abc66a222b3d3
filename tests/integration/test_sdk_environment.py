"""System stats, the network type at start, the business id (client rule and server metrics) and
several engines in one process, through the public API against the real server."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import psutil
import pytest
from conftest import APP_ID, OTHER_APP_ID, OTHER_APP_KEY, WAIT, login, token

from rts_sync import (
    InvalidArgumentError,
    InvalidStateError,
    LocalProxyConfiguration,
    LocalProxyType,
    LoginError,
    NetworkType,
    SysStats,
    UserMessageSendResult,
    UserOnlineStatus,
)
from rts_sync._client import netinfo


def test_sys_stats_every_interval_with_sane_fields(engines: Any) -> None:
    t0 = time.monotonic()
    rts, rec = engines(parameters={"stats_interval": 0.2})  # never logged in: still reported
    stats = [a[0] for a in rec.wait_count("stats", 6)]
    elapsed = time.monotonic() - t0
    # The first comes one interval after start, so six need at least 1.2 s; at the default
    # interval (2 s) they would take 12 s and the wait above would have failed.
    assert elapsed >= 6 * 0.2
    vm = psutil.virtual_memory()
    mb = 1024 * 1024
    for s in stats:
        assert isinstance(s, SysStats)
        assert s.cpu_cores == psutil.cpu_count()
        assert 0.0 <= s.cpu_app_usage <= 1.0 and 0.0 <= s.cpu_total_usage <= 1.0
        assert s.full_memory == vm.total // mb
        assert 1 < s.memory_usage < s.full_memory
        assert 0 < s.free_memory <= s.full_memory and 0 < s.total_memory_usage <= s.full_memory
        assert 0.0 < s.memory_ratio < 100.0 and 0.0 < s.total_memory_ratio <= 100.0
    rss = psutil.Process().memory_info().rss / mb
    assert abs(stats[-1].memory_usage - rss) < max(64.0, rss * 0.5)
    assert all(t.startswith("rts-cb-") for n, _, t in rec.events if n == "stats")


def test_stats_interval_can_change_at_runtime(engines: Any) -> None:
    rts, rec = engines(parameters={"stats_interval": 60.0})
    with pytest.raises(InvalidArgumentError):
        rts.set_runtime_parameters({"stats_interval": 0.01})
    rts.set_runtime_parameters({"stats_interval": 0.2})
    rec.wait_count("stats", 3)  # at 60 s a tick these would take minutes


def test_network_type_reported_once_at_start(engines: Any) -> None:
    rts, rec = engines(parameters={"stats_interval": 0.2})
    [(kind,)] = rec.wait_count("network", 1)
    assert kind == netinfo.detect().type and isinstance(kind, NetworkType)
    rec.wait_count("stats", 3)
    assert len(rec.of("network")) == 1  # unchanged network: no more callbacks


def _metric(server: Any, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(server.http_url + "/metrics", timeout=WAIT).read().decode()
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("%s{%s} " % (name, want)):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_business_id_rules_and_server_counts_traffic_per_business_id(engines: Any,
                                                                     server: Any) -> None:
    alice, _ = engines()
    with pytest.raises(InvalidArgumentError) as ei:
        alice.set_business_id("no spaces")
    assert ei.value.code == -6002
    with pytest.raises(InvalidArgumentError):
        alice.set_business_id("x" * 129)
    with pytest.raises(TypeError):
        alice.set_business_id(7)  # type: ignore[arg-type]
    assert alice.set_business_id("shop.eu-1_@a") == 0
    assert alice.login(token("alice"), "alice").result(WAIT) == 0
    bob, bob_rec = login(engines, "bob")
    for i in range(3):
        assert alice.send_message("bob", "m%d" % i).result(WAIT) == UserMessageSendResult.SUCCESS
    assert bob.send_message("alice", "plain").result(WAIT) == 0
    room_a, room_b = alice.create_room("biz-room"), bob.create_room("biz-room")
    assert room_a.join_room().result(WAIT) == 0 and room_b.join_room().result(WAIT) == 0
    assert room_a.send_room_message("hello room").result(WAIT) == 200
    bob_rec.wait_count("msg", 3)

    def count(bid: str, kind: str) -> float:
        return _metric(server, "rts_business_messages_total", app=APP_ID, business_id=bid,
                       kind=kind)

    assert count("shop.eu-1_@a", "peer") == 3 and count("shop.eu-1_@a", "room") == 1
    assert count("", "peer") == 1
    # After joining a room the business id is fixed (-6001) until the engine leaves its rooms.
    with pytest.raises(InvalidStateError) as ei2:
        alice.set_business_id("other")
    assert ei2.value.code == -6001
    room_a.leave_room().result(WAIT)
    assert alice.set_business_id("other") == 0


def test_several_engines_in_one_process_are_isolated(engines: Any, server: Any) -> None:
    a1, a1_rec = login(engines, "alice")                        # app 1
    b1, b1_rec = login(engines, "bob")                          # app 1
    a2, a2_rec = login(engines, "alice", app_id=OTHER_APP_ID)   # app 2, same uid
    assert a1_rec.of("logout") == [] and a2_rec.of("logout") == []  # no duplicate-login kick
    # Messages stay inside an app; message ids are per engine.
    op1 = b1.send_message("alice", "for app 1")
    assert op1.msg_id == 1 and op1.result(WAIT) == 0
    op2 = a2.send_message("bob", "bob is not in app 2")
    assert op2.msg_id == 1
    assert op2.exception(WAIT).code == UserMessageSendResult.NO_RECEIVER  # type: ignore[union-attr]
    assert a1_rec.wait_count("msg", 1) == [("bob", "for app 1")]
    assert a2_rec.of("msg") == []
    assert a2.get_peer_online_status("bob").result(WAIT) == UserOnlineStatus.OFFLINE
    assert a1.get_peer_online_status("bob").result(WAIT) == UserOnlineStatus.ONLINE
    # Settings are per engine: a dead proxy on one does not touch the others' connections.
    c3, c3_rec = engines(app_id=OTHER_APP_ID)
    c3.set_local_proxy([LocalProxyConfiguration(LocalProxyType.SOCKS5, "127.0.0.1", 9)])
    with pytest.raises(LoginError):
        c3.login(token("carol", OTHER_APP_ID, OTHER_APP_KEY), "carol").result(WAIT)
    assert a2.send_message("alice", "self").result(WAIT) == 0
    # Each engine has its own threads; destroying one leaves the rest working.
    names = {t for rec in (a1_rec, b1_rec, a2_rec) for _, _, t in rec.events}
    assert len({n.split("-")[2] for n in names}) == 3
    b1.destroy()
    assert a1.get_peer_online_status("bob").result(WAIT) == UserOnlineStatus.OFFLINE
    assert a2.send_message("alice", "still here").result(WAIT) == 0
    assert a2_rec.wait_count("msg", 2)[-1] == ("alice", "still here")
    assert len(c3_rec.of("proxy")) == 1 and a1_rec.of("proxy") == []
