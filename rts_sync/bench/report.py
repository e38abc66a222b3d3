"""Medians over repeats, the comparison table with ratios and the targets of issue 7, the
terminal table and the optional PNG chart.

Threading: plain functions, called from the bench's main thread.
"""

from __future__ import annotations

import importlib
import statistics
from typing import Any, Callable, Dict, List, Optional, Sequence

from .common import BenchError

__all__ = ["build_rows", "median_of", "plot", "render_table"]

#: Counters where the worst run matters, not the median one.
_WORST = ("lost", "duplicated", "reordered", "unfinished", "not_delivered")

#: The bare websocket-client -> aiohttp relay's RTT p99 from issue 7's side-by-side run (ms);
#: the reliable RTT p99 target is 1.5x this.
BARE_RELAY_P99_MS = 0.45


def median_of(runs: Sequence[Any]) -> Any:
    """The field-by-field median of repeated results (the worst for loss counters)."""
    runs = [r for r in runs if r is not None]
    if not runs:
        return None
    first = runs[0]
    if isinstance(first, dict):
        keys: List[str] = []
        for r in runs:
            keys += [k for k in r if k not in keys]
        out: Dict[str, Any] = {}
        for k in keys:
            vals = [r.get(k) for r in runs if isinstance(r, dict)]
            if (k in _WORST or k.startswith("failed_") or k == "errors") and all(
                    isinstance(v, (int, float)) for v in vals if v is not None):
                nums = [v for v in vals if v is not None]
                out[k] = max(nums) if nums else None
            else:
                out[k] = median_of(vals)
        return out
    if isinstance(first, bool) or not isinstance(first, (int, float)):
        return first
    nums = [r for r in runs if isinstance(r, (int, float))]
    return statistics.median(nums)


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def _num(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    if fmt == "k":
        return "%.1fk" % (v / 1000.0)
    return str(fmt % v)


def _ldr(d: Any) -> Optional[str]:
    if not isinstance(d, dict) or "lost" not in d:
        return None
    return "%d/%d/%d" % (d.get("lost", 0), d.get("duplicated", 0), d.get("reordered", 0))


#: metric, unit, rts, mqtt (raw and formatted), ratio, target, met/verdict.
Row = Dict[str, Any]


def _row(metric: str, rts: Any, mqtt: Any, fmt: str, *, higher_is_better: bool = True,
         target: str = "", check: Optional[Callable[[Any, Any], Optional[bool]]] = None,
         unit: str = "") -> Row:
    ratio = None
    if isinstance(rts, (int, float)) and isinstance(mqtt, (int, float)) and mqtt:
        ratio = rts / mqtt
    verdict = None
    if check is not None and rts is not None:
        verdict = check(rts, ratio)
    return {"metric": metric, "unit": unit, "rts": rts, "mqtt": mqtt, "ratio": ratio,
            "target": target, "met": verdict, "higher_is_better": higher_is_better,
            "rts_text": _num(rts, fmt) if not isinstance(rts, str) else rts,
            "mqtt_text": _num(mqtt, fmt) if not isinstance(mqtt, str) else mqtt,
            "ratio_text": "%.2fx" % ratio if ratio is not None else "",
            "verdict": "" if verdict is None else ("met" if verdict else "GAP")}


def build_rows(rts: Dict[str, Any], mqtt: Dict[str, Any]) -> List[Row]:
    """The comparison rows; ``met`` says whether each target of issue 7 is reached."""
    rows: List[Row] = []
    if rts.get("p2p") or mqtt.get("p2p"):
        rel, unrel = _get(rts, "p2p", "reliable"), _get(rts, "p2p", "unreliable")
        q1, q0 = _get(mqtt, "p2p", "qos1"), _get(mqtt, "p2p", "qos0")
        rows.append(_row("P2P reliable (vs QoS 1) msg/s", _get(rel, "msgs_per_s"),
                         _get(q1, "msgs_per_s"), "k", target=">= 2.0x QoS 1",
                         check=lambda v, r: None if r is None else r >= 2.0))
        rows.append(_row("P2P unreliable (vs QoS 0) msg/s", _get(unrel, "msgs_per_s"),
                         _get(q0, "msgs_per_s"), "k", target=">= 1.2x QoS 0",
                         check=lambda v, r: None if r is None else r >= 1.2))
        rows.append(_row("P2P reliable lost/dup/reordered", _ldr(rel) or "-", _ldr(q1) or "-",
                         "%s", target="0/0/0",
                         check=lambda v, r: v == "0/0/0" if v != "-" else None))
        rows.append(_row("P2P unreliable lost/dup/reordered", _ldr(unrel) or "-",
                         _ldr(q0) or "-", "%s"))
    if rts.get("rtt") or mqtt.get("rtt"):
        rel, unrel = _get(rts, "rtt", "reliable"), _get(rts, "rtt", "unreliable")
        q1, q0 = _get(mqtt, "rtt", "qos1"), _get(mqtt, "rtt", "qos0")
        rows.append(_row("RTT reliable p50 (vs QoS 1) ms", _get(rel, "p50_ms"), _get(q1, "p50_ms"),
                         "%.3f", higher_is_better=False, target="<= QoS 1's",
                         check=lambda v, r: None if r is None else r <= 1.0))
        rows.append(_row("RTT reliable p90 ms", _get(rel, "p90_ms"), _get(q1, "p90_ms"), "%.3f",
                         higher_is_better=False))
        rows.append(_row("RTT reliable p99 ms", _get(rel, "p99_ms"), _get(q1, "p99_ms"), "%.3f",
                         higher_is_better=False,
                         target="<= %.3f (1.5x bare relay %.2f)" % (1.5 * BARE_RELAY_P99_MS,
                                                                    BARE_RELAY_P99_MS),
                         check=lambda v, r: v <= 1.5 * BARE_RELAY_P99_MS))
        rows.append(_row("RTT reliable max ms", _get(rel, "max_ms"), _get(q1, "max_ms"), "%.2f",
                         higher_is_better=False))
        rows.append(_row("RTT unreliable p50 (vs QoS 0) ms", _get(unrel, "p50_ms"),
                         _get(q0, "p50_ms"), "%.3f", higher_is_better=False))
        rows.append(_row("RTT unreliable p99 ms", _get(unrel, "p99_ms"), _get(q0, "p99_ms"),
                         "%.3f", higher_is_better=False))
        if _get(rts, "rtt", "raw") or _get(mqtt, "rtt", "raw"):
            rows.append(_row("RTT reliable p50, raw clients (server alone) ms",
                             _get(rts, "rtt", "raw", "reliable", "p50_ms"),
                             _get(mqtt, "rtt", "raw", "reliable", "p50_ms"), "%.3f",
                             higher_is_better=False))
            rows.append(_row("RTT reliable p99, raw clients (server alone) ms",
                             _get(rts, "rtt", "raw", "reliable", "p99_ms"),
                             _get(mqtt, "rtt", "raw", "reliable", "p99_ms"), "%.3f",
                             higher_is_better=False))
    for members in sorted(rts.get("fanout") or mqtt.get("fanout") or {}, key=int):
        room = _get(rts, "fanout", members, "room")
        q1, q0 = _get(mqtt, "fanout", members, "qos1"), _get(mqtt, "fanout", members, "qos0")
        rows.append(_row("Fan-out %s deliveries/s (vs QoS 1)" % members,
                         _get(room, "deliveries_per_s"), _get(q1, "deliveries_per_s"), "k",
                         target=">= 2x QoS 1" if members == "20" else "",
                         check=(lambda v, r: None if r is None else r >= 2.0)
                         if members == "20" else None))
        rows.append(_row("Fan-out %s deliveries/s (vs QoS 0)" % members,
                         _get(room, "deliveries_per_s"), _get(q0, "deliveries_per_s"), "k"))
        rows.append(_row("Fan-out %s one-way p99 ms (vs QoS 1)" % members,
                         _get(room, "one_way", "p99_ms"), _get(q1, "one_way", "p99_ms"), "%.2f",
                         higher_is_better=False))
        rows.append(_row("Fan-out %s lost/dup/reordered" % members, _ldr(room) or "-",
                         _ldr(q1) or "-", "%s", target="0/0/0",
                         check=lambda v, r: v == "0/0/0" if v != "-" else None))
    if rts.get("idle") or mqtt.get("idle"):
        ri, mi = rts.get("idle"), mqtt.get("idle")
        rows.append(_row("Idle client RSS KiB", _get(ri, "rss_kib_per_client"),
                         _get(mi, "rss_kib_per_client"), "%.1f", higher_is_better=False,
                         target="<= 128", check=lambda v, r: v <= 128))
        rows.append(_row("Idle client threads", _get(ri, "threads_per_client"),
                         _get(mi, "threads_per_client"), "%.2f", higher_is_better=False,
                         target="<= 3", check=lambda v, r: v <= 3))
        rows.append(_row("Idle client CPU %", _get(ri, "cpu_percent_per_client"),
                         _get(mi, "cpu_percent_per_client"), "%.4f", higher_is_better=False,
                         target="< 0.01", check=lambda v, r: v < 0.01))
    if rts.get("capacity") or mqtt.get("capacity"):
        rc, mc = rts.get("capacity"), mqtt.get("capacity")
        rows.append(_row("Server: connections held", _get(rc, "connections"),
                         _get(mc, "connections"), "%d", target=">= 10,000",
                         check=lambda v, r: v >= 10000))
        rows.append(_row("Server: RSS MB holding them", _get(rc, "server", "hold", "rss_mb"),
                         _get(mc, "server", "hold", "rss_mb"), "%.1f", higher_is_better=False,
                         target="< 400", check=lambda v, r: v < 400))
        rows.append(_row("Server: KiB per idle connection",
                         _get(rc, "server", "rss_kib_per_connection"),
                         _get(mc, "server", "rss_kib_per_connection"), "%.1f",
                         higher_is_better=False))
        rows.append(_row("Server: CPU % holding them (heartbeats)",
                         _get(rc, "server", "hold", "cpu_percent"),
                         _get(mc, "server", "hold", "cpu_percent"), "%.1f",
                         higher_is_better=False))
        rows.append(_row("Server: logins/s", _get(rc, "logins_per_s"), _get(mc, "logins_per_s"),
                         "%.0f", target=">= 1,000", check=lambda v, r: v >= 1000))
        rows.append(_row("Server: reliable msg/s (vs QoS 1)", _get(rc, "reliable", "msgs_per_s"),
                         _get(mc, "reliable", "msgs_per_s"), "k"))
        rows.append(_row("Server: its CPU % then", _get(rc, "server", "reliable", "cpu_percent"),
                         _get(mc, "server", "reliable", "cpu_percent"), "%.0f",
                         higher_is_better=False))
        rows.append(_row("Load generator: its CPU % then",
                         _get(rc, "client_cpu_percent", "reliable"),
                         _get(mc, "client_cpu_percent", "reliable"), "%.0f"))
        rows.append(_row("Server: unreliable msg/s (vs QoS 0)",
                         _get(rc, "unreliable", "msgs_per_s"),
                         _get(mc, "unreliable", "msgs_per_s"), "k"))
        rows.append(_row("Server: its CPU % then", _get(rc, "server", "unreliable", "cpu_percent"),
                         _get(mc, "server", "unreliable", "cpu_percent"), "%.0f",
                         higher_is_better=False))
        rows.append(_row("Load generator: its CPU % then",
                         _get(rc, "client_cpu_percent", "unreliable"),
                         _get(mc, "client_cpu_percent", "unreliable"), "%.0f"))
    return rows


def render_table(rows: Sequence[Row], compare: bool) -> str:
    head = ["metric", "rts_sync"] + (["paho/mosquitto", "ratio"] if compare else []) + [
        "target", "status"]
    body = [[r["metric"], r["rts_text"]] + ([r["mqtt_text"], r["ratio_text"]] if compare else [])
            + [r["target"], r["verdict"]] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if 0 < i < len(cells) - 2 else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    return "\n".join(out)


def plot(path: str, rts: Dict[str, Any], mqtt: Dict[str, Any]) -> None:
    """A 2x2 PNG chart: P2P throughput, RTT, fan-out, idle cost. BenchError without
    matplotlib."""
    try:
        mpl = importlib.import_module("matplotlib")
        mpl.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise BenchError("--plot needs matplotlib, which is not installed: "
                         "pip install matplotlib (the table and --json work without it)") from None
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    blue, grey = "#1f77b4", "#999999"

    def bars(ax: Any, labels: List[str], a: List[Optional[float]], b: List[Optional[float]],
             title: str, ylabel: str) -> None:
        xs = list(range(len(labels)))
        ax.bar([x - 0.2 for x in xs], [v or 0 for v in a], 0.4, label="rts_sync", color=blue)
        if any(v is not None for v in b):
            ax.bar([x + 0.2 for x in xs], [v or 0 for v in b], 0.4, label="paho/mosquitto",
                   color=grey)
        ax.set_xticks(xs)
        ax.set_xticklabels(labels)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)

    bars(axes[0][0], ["reliable / QoS 1", "unreliable / QoS 0"],
         [_get(rts, "p2p", "reliable", "msgs_per_s"), _get(rts, "p2p", "unreliable", "msgs_per_s")],
         [_get(mqtt, "p2p", "qos1", "msgs_per_s"), _get(mqtt, "p2p", "qos0", "msgs_per_s")],
         "P2P one-way throughput (64 B)", "messages/s")
    bars(axes[0][1], ["rel. p50", "rel. p99", "unrel. p50", "unrel. p99"],
         [_get(rts, "rtt", "reliable", "p50_ms"), _get(rts, "rtt", "reliable", "p99_ms"),
          _get(rts, "rtt", "unreliable", "p50_ms"), _get(rts, "rtt", "unreliable", "p99_ms")],
         [_get(mqtt, "rtt", "qos1", "p50_ms"), _get(mqtt, "rtt", "qos1", "p99_ms"),
          _get(mqtt, "rtt", "qos0", "p50_ms"), _get(mqtt, "rtt", "qos0", "p99_ms")],
         "Round-trip latency (reliable vs QoS 1, unreliable vs QoS 0)", "ms")
    members = sorted((rts.get("fanout") or {}).keys(), key=int)
    bars(axes[1][0], ["%s members" % m for m in members],
         [_get(rts, "fanout", m, "room", "deliveries_per_s") for m in members],
         [_get(mqtt, "fanout", m, "qos1", "deliveries_per_s") for m in members],
         "Room fan-out (vs QoS 1)", "deliveries/s")
    bars(axes[1][1], ["RSS KiB / client", "threads x10 / client"],
         [_get(rts, "idle", "rss_kib_per_client"),
          (_get(rts, "idle", "threads_per_client") or 0) * 10],
         [_get(mqtt, "idle", "rss_kib_per_client"),
          (_get(mqtt, "idle", "threads_per_client") or 0) * 10 if mqtt.get("idle") else None],
         "Idle client cost", "")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
