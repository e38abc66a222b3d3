"""rts-bench: a smoke run of every workload side by side with paho-mqtt through mosquitto, and the
clear errors for a missing broker or package (no traceback).

Needs the Debian package mosquitto and the extra ``bench`` (paho-mqtt), which .ci/run installs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

pytest.importorskip("paho.mqtt.client", reason="needs the extra bench (paho-mqtt)")

WORKLOADS = ["p2p", "rtt", "fanout", "idle", "capacity"]


def _bench(*args: str, timeout: float = 90.0, env: Dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rts_sync.bench", "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})), stdin=subprocess.DEVNULL)


def _check_p2p(p2p: Dict[str, Any], reliable: str, unreliable: str) -> None:
    rel, unrel = p2p[reliable], p2p[unreliable]
    for res in (rel, unrel):
        assert res["msgs_per_s"] > 100, res
        assert res["sent"] > 0 and res["received"] > 0, res
    assert (rel["lost"], rel["duplicated"], rel["reordered"]) == (0, 0, 0), rel
    assert rel["received"] == rel["sent"], rel
    assert unrel["duplicated"] == 0, unrel


def _check_rtt(res: Dict[str, Any]) -> None:
    assert res["n"] > 0 and res["lost"] == 0, res
    assert 0 < res["p50_ms"] <= res["p90_ms"] <= res["p99_ms"] <= res["max_ms"] < 1000, res


def _check_fanout(res: Dict[str, Any], reliable: bool) -> None:
    assert res["deliveries_per_s"] > 100, res
    assert res["deliveries"] == res["members"] * res["messages"], res
    assert res["one_way"]["n"] > 0 and res["one_way"]["p99_ms"] > 0, res
    if reliable:
        assert (res["lost"], res["duplicated"], res["reordered"]) == (0, 0, 0), res


def _check_idle(res: Dict[str, Any], max_threads: float) -> None:
    assert res["clients"] >= 1
    assert 0 < res["threads_per_client"] <= max_threads, res
    assert res["rss_kib_per_client"] < 10240, res  # sane: well under 10 MiB per client
    assert 0 <= res["cpu_percent_total"] < 100, res


def _check_capacity(res: Dict[str, Any]) -> None:
    assert res["connections"] == res["attempted"] and not res["errors"], res
    assert res["logins_per_s"] > 10, res
    for mode in ("reliable", "unreliable"):
        assert res[mode]["delivered"] > 0 and res[mode]["msgs_per_s"] > 0, res
    server = res["server"]
    assert server["hold"]["rss_mb"] > 1 and server["hold"]["cpu_percent"] is not None, server


def test_quick_smoke_run_with_mqtt_comparison(tmp_path: Path) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    args = ["--quick", "--compare", "mqtt", "--json", str(out)]
    try:
        import matplotlib  # noqa: F401
        args += ["--plot", str(png)]
    except ImportError:
        png = None  # type: ignore[assignment]
    res = _bench(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr
    doc = json.loads(out.read_text())
    assert doc["workloads"] == WORKLOADS and doc["quick"] is True
    assert doc["machine"]["nproc"] >= 1 and doc["versions"]["paho-mqtt"]
    rts, mqtt = doc["results"]["rts"], doc["results"]["mqtt"]
    for wl in WORKLOADS:
        assert rts.get(wl) and mqtt.get(wl), wl

    _check_p2p(rts["p2p"], "reliable", "unreliable")
    _check_p2p(mqtt["p2p"], "qos1", "qos0")
    assert mqtt["p2p"]["qos1"]["tcp_nodelay"] is True
    for key in ("reliable", "unreliable"):
        _check_rtt(rts["rtt"][key])
    for key in ("qos1", "qos0"):
        _check_rtt(mqtt["rtt"][key])
    for raw in (rts["rtt"]["raw"], mqtt["rtt"]["raw"]):  # raw clients: the server alone
        _check_rtt(raw["reliable"])
        _check_rtt(raw["unreliable"])
    (members,) = rts["fanout"].keys()
    _check_fanout(rts["fanout"][members]["room"], reliable=True)
    _check_fanout(mqtt["fanout"][members]["qos1"], reliable=True)
    _check_fanout(mqtt["fanout"][members]["qos0"], reliable=False)
    _check_idle(rts["idle"], max_threads=4)
    _check_idle(mqtt["idle"], max_threads=1)
    _check_capacity(rts["capacity"])
    _check_capacity(mqtt["capacity"])

    rows: List[Dict[str, Any]] = doc["rows"]
    ratio = {r["metric"]: r["ratio"] for r in rows}
    assert ratio["P2P reliable (vs QoS 1) msg/s"] > 0
    # the terminal table names every workload's rows and the ratios
    for text in ("P2P reliable", "RTT reliable p50", "Fan-out %s" % members, "Idle client RSS",
                 "Server: logins/s", "ratio"):
        assert text in res.stdout, text
    if png is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_mosquitto_is_a_clear_error(tmp_path: Path) -> None:
    res = _bench("--quick", "--compare", "mqtt", "--mosquitto", str(tmp_path / "no-mosquitto"),
                 timeout=30)
    assert res.returncode == 2
    assert "mosquitto" in res.stderr and "apt-get install mosquitto" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_mosquitto_not_installed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from rts_sync.bench import procs
    from rts_sync.bench.__main__ import main

    monkeypatch.setattr(procs.shutil, "which", lambda name: None)
    monkeypatch.setattr(procs.os, "access", lambda path, mode: False)
    assert main(["--quick", "--compare", "mqtt", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "mosquitto broker, which is not installed" in err and "apt-get install mosquitto" in err
    assert "Traceback" not in err


def test_missing_paho_and_matplotlib_are_clear_errors(tmp_path: Path) -> None:
    # Modules that fail to import, first on sys.path, stand for packages that are not installed.
    (tmp_path / "paho").mkdir()
    (tmp_path / "paho" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    (tmp_path / "matplotlib.py").write_text("raise ImportError('hidden by the test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    res = _bench("--quick", "--compare", "mqtt", env=env, timeout=30)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "paho-mqtt" in res.stderr and "rts_sync[bench]" in res.stderr
    res = _bench("--quick", "--workloads", "p2p", "--plot", str(tmp_path / "x.png"), env=env,
                 timeout=30)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "matplotlib" in res.stderr


def test_bad_arguments_are_clear_errors() -> None:
    res = _bench("--workloads", "p2p,nope", timeout=30)
    assert res.returncode == 2 and "nope" in res.stderr and "Traceback" not in res.stderr
    res = _bench("--url", "ws://127.0.0.1:9/rts", timeout=30)
    assert res.returncode == 2 and "--app" in res.stderr
