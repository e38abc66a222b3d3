"""The counters of one cluster node and their Prometheus text (appended to ``/metrics``)."""

from __future__ import annotations

from typing import List

__all__ = ["ClusterMetrics"]


class ClusterMetrics:
    """Monotonic counters of this node's cluster traffic; gauges are passed in when rendering.

    Threading: not thread-safe; owned by the server's event loop.
    """

    def __init__(self) -> None:
        self.entries_out = 0
        self.entries_in = 0
        self.batches = 0
        self.redis_errors = 0
        self.remote_peer = 0
        self.remote_room = 0
        self.redirects = 0
        self.kicks = 0
        self.nodes_reaped = 0

    def render(self, node: str, healthy: bool, nodes: int, queued: int, pending: int) -> str:
        out: List[str] = []

        def metric(name: str, kind: str, help_text: str, value: float, labels: str = "") -> None:
            out.append("# HELP %s %s" % (name, help_text))
            out.append("# TYPE %s %s" % (name, kind))
            out.append("%s%s %d" % (name, labels, value))

        metric("rts_cluster_node_info", "gauge", "This node's id in the cluster.", 1,
               '{node="%s"}' % node)
        metric("rts_cluster_redis_up", "gauge", "1 while Redis answers (the node is healthy).",
               1 if healthy else 0)
        metric("rts_cluster_nodes", "gauge", "Live nodes seen by this node, itself included.",
               nodes)
        metric("rts_cluster_queued_entries", "gauge",
               "Entries waiting to be written to other nodes' inboxes.", queued)
        metric("rts_cluster_pending_remote", "gauge",
               "Reliable messages sent to other nodes waiting for the receiver's ACK.", pending)
        metric("rts_cluster_entries_out_total", "counter",
               "Entries written to other nodes' inboxes.", self.entries_out)
        metric("rts_cluster_entries_in_total", "counter",
               "Entries taken from this node's inbox.", self.entries_in)
        metric("rts_cluster_write_batches_total", "counter",
               "Pipelined batches written to Redis.", self.batches)
        metric("rts_cluster_redis_errors_total", "counter",
               "Redis commands that failed (connection lost, timeout).", self.redis_errors)
        metric("rts_cluster_remote_peer_messages_total", "counter",
               "Peer messages sent to a receiver on another node.", self.remote_peer)
        metric("rts_cluster_remote_room_messages_total", "counter",
               "Room messages fanned out to other nodes.", self.remote_room)
        metric("rts_cluster_redirects_total", "counter",
               "Peer messages passed on because the receiver had moved to another node.",
               self.redirects)
        metric("rts_cluster_kicks_total", "counter",
               "Sessions here ended by a login of the same uid on another node.", self.kicks)
        metric("rts_cluster_nodes_reaped_total", "counter",
               "Dead nodes whose users this node removed.", self.nodes_reaped)
        return "\n".join(out) + "\n"
