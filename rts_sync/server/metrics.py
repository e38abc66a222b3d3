"""The server's counters and their Prometheus text rendering (no prometheus_client needed)."""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Mapping, Optional, Tuple

__all__ = ["Metrics"]


#: Distinct (app, business id) pairs counted one by one; the rest are summed as ``_other``,
#: so clients choosing business ids cannot grow the metrics without bound.
MAX_BUSINESS_IDS = 1000


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Monotonic counters of one server; gauges are passed in when rendering.

    Threading: not thread-safe; owned by the server's event loop.
    """

    def __init__(self) -> None:
        self.frames_in = 0
        self.protocol_errors = 0
        self.slow_consumer_disconnects = 0
        self.messages: Counter[str] = Counter()
        self.logins: Counter[str] = Counter()
        self.room_deliveries = 0
        #: Messages forwarded to application servers, by outcome (ok, failed, unreachable).
        self.app_server: Counter[str] = Counter()
        #: Push API calls by (action, result): result "ok" or the error code.
        self.push: Counter[Tuple[str, str]] = Counter()
        #: Messages by (app, business id or "", kind): traffic per business id.
        self.business: Counter[Tuple[str, str, str]] = Counter()

    def count_message(self, kind: str, app_id: Optional[str], business_id: Optional[str]) -> None:
        """One message accepted for delivery, from a session with this app and business id."""
        messages, business = self.messages, self.business
        messages[kind] = messages.get(kind, 0) + 1
        key = (app_id or "", business_id or "", kind)
        n = business.get(key)
        if n is None:
            if len(business) >= MAX_BUSINESS_IDS:
                key = (key[0], "_other", kind)
            n = business.get(key, 0)
        business[key] = n + 1

    def render(self, connections: int, sessions: Mapping[str, int],
               rooms: Mapping[str, Tuple[int, int]]) -> str:
        """The Prometheus text exposition (format 0.0.4) of every metric."""
        out: List[str] = []

        def metric(name: str, kind: str, help_text: str,
                   samples: List[Tuple[Dict[str, str], float]]) -> None:
            out.append("# HELP %s %s" % (name, help_text))
            out.append("# TYPE %s %s" % (name, kind))
            for labels, value in samples:
                text = ",".join('%s="%s"' % (k, _label(v)) for k, v in sorted(labels.items()))
                out.append("%s%s %s" % (name, "{%s}" % text if text else "", _num(value)))

        metric("rts_connections", "gauge", "Open WebSocket connections.", [({}, connections)])
        metric("rts_sessions", "gauge", "Logged-in sessions per app.",
               [({"app": app}, n) for app, n in sorted(sessions.items())])
        kinds = dict(self.messages)
        kinds.setdefault("peer", 0)
        metric("rts_messages_total", "counter", "Messages accepted for delivery, by kind.",
               [({"kind": k}, n) for k, n in sorted(kinds.items())])
        metric("rts_business_messages_total", "counter",
               "Messages accepted for delivery, by app, business id (set_business_id; empty: "
               "none) and kind.",
               [({"app": a, "business_id": b, "kind": k}, n)
                for (a, b, k), n in sorted(self.business.items())])
        metric("rts_rooms", "gauge", "Rooms with at least one member, per app.",
               [({"app": app}, n) for app, (n, _) in sorted(rooms.items())])
        metric("rts_room_members", "gauge", "Room memberships, per app.",
               [({"app": app}, m) for app, (_, m) in sorted(rooms.items())])
        metric("rts_room_deliveries_total", "counter", "Room messages written to members.",
               [({}, self.room_deliveries)])
        metric("rts_frames_in_total", "counter", "Frames received from clients.",
               [({}, self.frames_in)])
        metric("rts_protocol_errors_total", "counter",
               "Connections closed for violating the protocol.", [({}, self.protocol_errors)])
        metric("rts_slow_consumer_disconnects_total", "counter",
               "Connections closed because they stopped reading.",
               [({}, self.slow_consumer_disconnects)])
        metric("rts_logins_total", "counter", "Login attempts, by result.",
               [({"result": r}, n) for r, n in sorted(self.logins.items())])
        metric("rts_app_server_requests_total", "counter",
               "Messages forwarded to application servers, by outcome.",
               [({"result": r}, n) for r, n in sorted(self.app_server.items())])
        metric("rts_push_requests_total", "counter", "Push API calls, by action and result.",
               [({"action": a, "result": r}, n) for (a, r), n in sorted(self.push.items())])
        return "\n".join(out) + "\n"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
