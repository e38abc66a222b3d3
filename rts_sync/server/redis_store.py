"""Cluster mode's layout in Redis: key names, Lua scripts, stream entries and the clients.

Every key starts with ``rts:``; ids (app, uid, room) match ``[a-zA-Z0-9_@\\-.]``, so a space
separates the parts of a value. One Redis instance (or a primary with replicas / Sentinel) is
shared by all nodes; the scripts build no key names, but several touch keys of different
slots, so Redis Cluster (sharded) is not supported (ROUTE_SCRIPT also reads a node's heartbeat key).

==============================  =====================================================================
key                             what
==============================  =====================================================================
``rts:nodes``                   set: ids of the nodes that registered
``rts:node:<node>``             string with a TTL of ``node_timeout``: the node's heartbeat
``rts:s:<node>``                stream: the node's inbox (messages, results, room events, kicks)
``rts:nu:<node>``               set of ``"<app> <uid>"`` logged in on the node (for reaping it)
``rts:nr:<node>``               set of ``"<app> <room> <uid>"`` room memberships on the node
``rts:u:<app>:<uid>``           string ``"<node> <session id>"``: where the uid is logged in
``rts:r:<app>:<room>``          hash uid -> node: the room's members
``rts:kicked:<session id>``     string with a TTL: the session was ended by a login elsewhere
``rts:reap:<node>``             lock (``SET NX PX``) of the node reaping a dead node
``rts:inv`` (pub/sub channel)   ``"<app> <uid>"`` whose presence changed (cache invalidation)
``rts:ss:<session>``            hash (cluster resume): ``node``, ``in``, ``out``, ``meta`` of a session
``rts:sq:<session>``            sorted set (cluster resume): frames its client has not acknowledged, by seq
``rts:ns:<node>``               set (cluster resume): ids of the sessions the node serves
``rts:sr:<session>``            list (cluster resume): ``"<seq> <code>"`` results owed to a session in transit
==============================  =====================================================================

Stream entries have one field ``d``: a CBOR array ``[kind, origin node, n, ...]`` where ``n``
numbers the entries from one origin to one target (1, 2, 3, ...), so a batch written again
after a Redis error is not taken twice.

Threading: nothing here holds state but constants and pure functions.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import cbor2

__all__ = [
    "CLOSE_SESSION_SCRIPT",
    "EXPIRE_SESSION_SCRIPT",
    "INV_CHANNEL",
    "JOIN_SCRIPT",
    "JOURNAL_SCRIPT",
    "LEAVE_SCRIPT",
    "MOVE_SCRIPT",
    "NODES",
    "PRESENCE_CAD",
    "PRESENCE_CAD_NODE",
    "ROUTE_SCRIPT",
    "TAKEOVER_SCRIPT",
    "decode_entry",
    "encode_entry",
    "kicked_key",
    "node_key",
    "node_rooms_key",
    "node_sessions_key",
    "node_users_key",
    "owed_key",
    "pairs",
    "presence_key",
    "reap_key",
    "room_key",
    "session_key",
    "session_stream_key",
    "stream_key",
    "text",
]

NODES = "rts:nodes"
INV_CHANNEL = "rts:inv"
#: An inbox stream keeps at most about this many entries (the owner trims what it has read).
STREAM_MAXLEN = 200_000
#: An inbox nobody writes to or reads from expires after this long (a node that died).
STREAM_TTL_MS = 120_000

# Entry kinds.
PEER = "p"
RESULT = "r"
ROOM_MSG = "m"
JOINED = "j"
LEFT = "l"
KICK = "k"
# Cluster resume: a node asks another for a session / the session was handed over / the result
# of a session's SEND, addressed to the session wherever it is / a room member changed node.
RELEASE = "R"
RELEASED = "D"
SESSION_RESULT = "S"
MOVED = "M"
#: A room message for one member whose session is moving to the target node.
ROOM_ONE = "o"

#: Cluster resume: the keys of a live session expire only if nobody writes them for this long
#: (a node writing to a session whose keys are gone writes them all again).
SESSION_TTL_MS = 24 * 3600 * 1000


def node_key(node: str) -> str:
    return "rts:node:" + node


def stream_key(node: str) -> str:
    return "rts:s:" + node


def node_users_key(node: str) -> str:
    return "rts:nu:" + node


def node_rooms_key(node: str) -> str:
    return "rts:nr:" + node


def presence_key(app_id: str, uid: str) -> str:
    return "rts:u:%s:%s" % (app_id, uid)


def room_key(app_id: str, room_id: str) -> str:
    return "rts:r:%s:%s" % (app_id, room_id)


def kicked_key(session_id: str) -> str:
    return "rts:kicked:" + session_id


def reap_key(node: str) -> str:
    return "rts:reap:" + node


def session_key(session_id: str) -> str:
    return "rts:ss:" + session_id


def session_stream_key(session_id: str) -> str:
    return "rts:sq:" + session_id


def node_sessions_key(node: str) -> str:
    return "rts:ns:" + node


def owed_key(session_id: str) -> str:
    return "rts:sr:" + session_id


#: Delete a presence key only if it still holds ARGV[1] (this node's session).
PRESENCE_CAD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: Delete a presence key only if it names node ARGV[1] (reaping a dead node).
PRESENCE_CAD_NODE = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ' ' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: Join: KEYS = [room hash, node rooms set]; ARGV = [uid, node, membership]. Returns
#: [previous node or '', flat HGETALL after the join].
JOIN_SCRIPT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return {old or '', redis.call('HGETALL', KEYS[1])}
"""

#: Leave: KEYS = [room hash, node rooms set]; ARGV = [uid, node, membership]. Removes the
#: member only if it is still on this node. Returns [1, flat HGETALL after] or [0].
LEAVE_SCRIPT = """
redis.call('SREM', KEYS[2], ARGV[3])
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return {1, redis.call('HGETALL', KEYS[1])}
end
return {0}
"""

#: Cluster resume, one session's part of a node's write: KEYS = [session hash, session frames,
#: node sessions set]; ARGV = [node, checkpoint 0/1, in, out, client's ack, release 0/1,
#: session id, meta or '', ttl ms, then seq, entry pairs]. Returns 1 written, 0 the session's
#: keys are gone (write a checkpoint), 2 another node serves the session now.
JOURNAL_SCRIPT = """
local node = ARGV[1]
local cur = redis.call('HGET', KEYS[1], 'node')
if ARGV[2] == '1' then
  if cur and cur ~= node then return 2 end
  redis.call('DEL', KEYS[2])
  redis.call('SADD', KEYS[3], ARGV[7])
elseif not cur then
  return 0
elseif cur ~= node then
  return 2
end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'meta', ARGV[8]) end
redis.call('HSET', KEYS[1], 'node', node, 'in', ARGV[3], 'out', ARGV[4])
for i = 10, #ARGV, 2 do
  redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1])
end
local acked = tonumber(ARGV[5])
if acked > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', acked) end
redis.call('PEXPIRE', KEYS[1], ARGV[9])
redis.call('PEXPIRE', KEYS[2], ARGV[9])
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'node', '')
  redis.call('SREM', KEYS[3], ARGV[7])
end
return 1
"""

#: Cluster resume, taking a session over: KEYS = [session hash, presence, node users set,
#: node sessions set, old node's sessions set, session frames, owed results]; ARGV = [node,
#: old node, session id, "<app> <uid>", ttl ms]. Returns {1, hash, owed results} done, {0} no
#: such session, {2, node} another node serves it, {3} its uid logged in again since (the
#: session was replaced).
TAKEOVER_SCRIPT = """
local cur = redis.call('HGET', KEYS[1], 'node')
if not cur then return {0} end
if cur ~= ARGV[2] and cur ~= '' then return {2, cur} end
local pv = redis.call('GET', KEYS[2])
if pv then
  local sp = string.find(pv, ' ', 1, true)
  if not sp or string.sub(pv, sp + 1) ~= ARGV[3] then return {3} end
end
redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[3])
redis.call('HSET', KEYS[1], 'node', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[6], ARGV[5])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('SREM', KEYS[5], ARGV[3])
local owed = redis.call('LRANGE', KEYS[7], 0, -1)
redis.call('DEL', KEYS[7])
return {1, redis.call('HGETALL', KEYS[1]), owed}
"""

#: Cluster resume, the result of a SEND for a session that is not on the routing node: KEYS =
#: [session hash, owed results list]; ARGV = [seq, code, ttl ms]. Returns the node serving the
#: session (send it there), '*' when the session is in transit (released, or its node is dead:
#: the result is kept for whoever takes it over) or '' when the session is gone.
ROUTE_SCRIPT = """
local n = redis.call('HGET', KEYS[1], 'node')
if not n then return '' end
if n == '' or redis.call('EXISTS', 'rts:node:' .. n) == 0 then
  redis.call('RPUSH', KEYS[2], ARGV[1] .. ' ' .. ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return '*'
end
return n
"""

#: Cluster resume, a room member moving with its session: KEYS = [room hash, node rooms set,
#: old node's rooms set]; ARGV = [uid, node, membership]. Returns [previous node or '' (it had
#: been removed), flat HGETALL after].
MOVE_SCRIPT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SREM', KEYS[3], ARGV[3])
return {old or '', redis.call('HGETALL', KEYS[1])}
"""

#: Cluster resume, a session ended on its node: KEYS = [session hash, session frames, node
#: sessions set]; ARGV = [node, session id]. Deletes the keys if the node still serves it.
CLOSE_SESSION_SCRIPT = """
redis.call('SREM', KEYS[3], ARGV[2])
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] then
  return redis.call('DEL', KEYS[1], KEYS[2])
end
return 0
"""

#: Cluster resume, reaping a dead node: KEYS = [session hash, session frames]; ARGV = [dead
#: node, ms]. Its sessions stay resumable for ms (the resume window), unless taken over.
EXPIRE_SESSION_SCRIPT = """
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


def text(value: Any) -> str:
    """A Redis reply (bytes or str) as text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def pairs(flat: List[Any]) -> Dict[str, str]:
    """A flat HGETALL reply ``[k1, v1, k2, v2, ...]`` as a dict of text."""
    return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def encode_entry(kind: str, origin: str, n: int, fields: Tuple[Any, ...]) -> bytes:
    return cbor2.dumps([kind, origin, n, *fields])


def decode_entry(data: bytes) -> Optional[List[Any]]:
    """The entry's list, or None if it is not one of ours."""
    try:
        value = cbor2.loads(data)
    except Exception:  # cbor2 raises several types for garbage
        return None
    if (not isinstance(value, list) or len(value) < 3 or not isinstance(value[0], str)
            or not isinstance(value[1], str) or not isinstance(value[2], int)):
        return None
    return value
