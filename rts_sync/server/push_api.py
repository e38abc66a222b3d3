"""The push API for application servers, shaped like Volcengine's RTC OpenAPI (reference §5).

``POST /?Action=SendUnicast&Version=2020-12-01`` (or ``Action=SendBroadcast``; Version
``2020-12-01`` or ``2023-07-20``) with a JSON body, signed with Volcengine's V4 signature
(:mod:`rts_sync.server.signing`) by an access key configured with ``rts-server --access-key
AK:SK``. Code written for Volcengine's API works by pointing its host at this server (scheme
http). Bodies:

- SendUnicast: ``{"AppId", "From", "To", "Binary", "Message"}``: to the logged-in user ``To``,
  who gets ``on_message_received(From, Message)`` (``on_binary_message_received`` when Binary).
- SendBroadcast: ``{"AppId", "RoomId", "From", "Binary", "Message"}``: to every member of the
  room, who get ``on_room_message_received(From, Message)`` (or the binary callback).

``Message`` is text, or base64 of the bytes when ``Binary`` is true (at most ``max_payload``
bytes either way); ``From`` follows the id rule ``[a-zA-Z0-9_@\\-.]{1,128}``. Every answer is
``{"ResponseMetadata": {"RequestId", "Action", "Version", "Service": "rtc", "Region", "Error"?:
{"Code", "CodeN"?, "Message"}}, "Result"?: {"Message": "success"}}`` with status 200 on success and
the error's status otherwise (:data:`ERRORS` lists them; docs/protocol.md documents them).

Threading: everything here runs on the server's event loop; nothing is thread-safe.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import time
from typing import Any, Dict, Mapping, Optional, Tuple

from aiohttp import web

from .. import protocol as p
from ..enums import RoomMessageSendResult
from ..errors import LocalProtocolError
from .hub import Hub
from .session import Session, TokenBucket
from .signing import DEFAULT_REGION, AuthError, ReplayCache, verify_request

__all__ = ["ERRORS", "PUSH_ACTIONS", "PUSH_VERSIONS", "PushAPI"]

log = logging.getLogger(__name__)

#: API versions accepted (both of Volcengine's RTC OpenAPI versions; the bodies are the same).
PUSH_VERSIONS = ("2020-12-01", "2023-07-20")
#: Actions served.
PUSH_ACTIONS = ("SendUnicast", "SendBroadcast")
#: Actions of Volcengine's API that RTS SDK clients cannot receive: refused with a clear error.
UNRECEIVABLE_ACTIONS = ("SendRoomUnicast", "BatchSendRoomUnicast")

#: Every error the push API answers: code -> (HTTP status, CodeN or None, when).
ERRORS: Dict[str, Tuple[int, Optional[int], str]] = {
    "MissingParameter": (400, 100002, "Action, Version or a required body field is missing"),
    "MissingAuthenticationToken": (401, 100003, "no Authorization header"),
    "MissingRequestInfo": (400, 100004, "no X-Date header"),
    "MissingSignature": (401, 100005, "Authorization has no Signature"),
    "InvalidTimestamp": (403, 100006, "X-Date malformed or more than push_clock_skew away"),
    "InvalidActionOrVersion": (404, 100008, "unknown Action or Version"),
    "InvalidAccessKey": (401, 100009, "the access key id is not configured on this server"),
    "SignatureDoesNotMatch": (401, 100010, "wrong secret key, or the request was changed"),
    "InvalidAuthorization": (400, None, "Authorization malformed, or host / x-date not signed"),
    "InvalidCredential": (400, None, "Credential is not AK/date/region/service/request"),
    "ReplayedRequest": (403, None, "a request with this signature was already accepted"),
    "AccessDenied": (403, None, "no access keys are configured on this server"),
    "InvalidParameter": (400, None, "a body field has the wrong type or format"),
    "MessageTooLarge": (400, None, "Message over max_payload bytes (after base64 decoding)"),
    "UnsupportedOperation": (400, None, "SendRoomUnicast / BatchSendRoomUnicast (not receivable "
                                        "by the RTS SDK)"),
    "AppNotFound": (404, None, "AppId is not an app of this server"),
    "UserNotOnline": (404, None, "SendUnicast: To is not logged in"),
    "RoomNotFound": (404, None, "SendBroadcast: nobody is in RoomId"),
    "FlowLimitExceeded": (429, None, "over push_qps for this app, or too many recent signatures"),
    "ServiceUnavailable": (503, None, "cluster mode: Redis is unavailable, or did not take the "
                                      "message within message_timeout (it may or may not be "
                                      "delivered; retry)"),
}

_UNAVAILABLE = "cluster store (Redis) unavailable: the message may not be delivered"


class PushError(Exception):
    """An error answer: one of :data:`ERRORS` and what exactly is wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message


def _request_id() -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + secrets.token_hex(8).upper()


class PushAPI:
    """Serves ``POST /`` (see the module docstring).

    Threading: not thread-safe; owned by the server's event loop.
    """

    def __init__(self, hub: Hub, access_keys: Mapping[str, str]) -> None:
        self.hub = hub
        self.limits = hub.limits
        self.access_keys = dict(access_keys)
        self.replays = ReplayCache()
        self._buckets: Dict[str, TokenBucket] = {}

    async def handle(self, request: web.Request) -> web.Response:
        action = request.query.get("Action", "")
        version = request.query.get("Version", "")
        meta: Dict[str, Any] = {"RequestId": _request_id(), "Action": action,
                                "Version": version, "Service": "rtc", "Region": DEFAULT_REGION}
        try:
            await self._serve(request, action, version, meta)
        except PushError as exc:
            return self._error(meta, exc.code, exc.message, request)
        except AuthError as exc:
            return self._error(meta, exc.code, exc.message, request, exc.status)
        self.hub.metrics.push[(self._action_label(action), "ok")] += 1
        return web.json_response({"ResponseMetadata": meta, "Result": {"Message": "success"}})

    def _error(self, meta: Dict[str, Any], code: str, message: str, request: web.Request,
               status: Optional[int] = None) -> web.Response:
        known_status, code_n, _ = ERRORS.get(code, (400, None, ""))
        error: Dict[str, Any] = {"Code": code, "Message": message}
        if code_n is not None:
            error["CodeN"] = code_n
        meta["Error"] = error
        self.hub.metrics.push[(self._action_label(meta["Action"]), code)] += 1
        log.info("push API %s from %s refused: %s: %s", meta["Action"] or "(no action)",
                 request.remote, code, message)
        return web.json_response({"ResponseMetadata": meta}, status=status or known_status)

    @staticmethod
    def _action_label(action: str) -> str:
        return action if action in PUSH_ACTIONS + UNRECEIVABLE_ACTIONS else "other"

    # ------------------------------------------------------------------ the request
    async def _serve(self, request: web.Request, action: str, version: str,
                     meta: Dict[str, Any]) -> None:
        if not action or not version:
            raise PushError("MissingParameter", "The request is missing %s parameter."
                            % ("Action" if not action else "Version"))
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PushError("InvalidParameter", "the request body is too large") from None
        if not self.access_keys:
            raise PushError("AccessDenied", "the push API needs an access key: start the server "
                            "with --access-key AK:SK (serve_in_thread(access_keys={AK: SK}))")
        now = time.time()
        skew = self.limits.push_clock_skew
        signed = verify_request(request.method, request.path, request.query.items(),
                                request.headers.items(), body, self.access_keys, now, skew)
        meta["Region"] = signed.region
        if action not in PUSH_ACTIONS + UNRECEIVABLE_ACTIONS or version not in PUSH_VERSIONS:
            raise PushError("InvalidActionOrVersion", "Could not find operation %s for version %s."
                            % (action[:64], version[:32]))
        seen = self.replays.add(signed.signature, signed.timestamp + skew, now)
        if seen is False:
            raise PushError("ReplayedRequest", "this request (same signature) was already "
                            "accepted; sign every request anew")
        if seen is None:
            raise PushError("FlowLimitExceeded", "too many signed requests within %d s" % skew)
        if action in UNRECEIVABLE_ACTIONS:
            raise PushError("UnsupportedOperation", "%s messages cannot be received by RTS SDK "
                            "clients; use SendUnicast to reach a logged-in user or SendBroadcast "
                            "for a room" % action)
        fields = self._fields(body)
        app = self.hub.apps.get(_text(fields, "AppId"))
        if app is None:
            raise PushError("AppNotFound", "AppId %r is not an app of this server"
                            % fields["AppId"][:64])
        scope = self.hub.config.access_key_apps.get(signed.access_key)
        if scope is not None and app.app_id not in scope:
            raise PushError("AccessDenied", "access key %s may not push to app %s"
                            % (signed.access_key, app.app_id))
        sender = _id(fields, "From")
        payload = self._payload(fields)
        if not self._allow(app.app_id, now):
            raise PushError("FlowLimitExceeded", "over %g push API calls per second for this app"
                            % self.limits.push_qps)
        cluster = self.hub.cluster
        if action == "SendUnicast":
            to = _id(fields, "To")
            if cluster is not None and to not in app.sessions:  # on another node, or nowhere
                sent = await cluster.push_unicast(app.app_id, to, sender, payload)
                if sent is None:
                    raise PushError("ServiceUnavailable", _UNAVAILABLE)
                if not sent:
                    raise PushError("UserNotOnline", "user %r is not logged in" % to)
                self.hub.metrics.messages["push_unicast"] += 1
                return
            await self._unicast(app.sessions, to, sender, payload)
        else:
            room_id = _id(fields, "RoomId")
            room = app.rooms.rooms.get(room_id)
            if room is None or not room.members:
                sent = None if cluster is None else await cluster.push_broadcast(
                    app.app_id, room_id, sender, payload)  # members on other nodes only
                if sent is None and cluster is not None:
                    raise PushError("ServiceUnavailable", _UNAVAILABLE)
                if sent:
                    self.hub.metrics.messages["push_broadcast"] += 1
                    return
                raise PushError("RoomNotFound", "nobody is in room %r" % room_id)
            code = await app.rooms.broadcast(None, sender, room_id, payload)
            if code == RoomMessageSendResult.TIMEOUT:
                raise PushError("ServiceUnavailable", _UNAVAILABLE)
            if code != RoomMessageSendResult.SUCCESS:
                raise PushError("RoomNotFound", "nobody is in room %r" % room_id)
            self.hub.metrics.messages["push_broadcast"] += 1

    @staticmethod
    def _fields(body: bytes) -> Dict[str, Any]:
        try:
            fields = json.loads(body)
        except ValueError:
            raise PushError("InvalidParameter", "the body is not JSON") from None
        if not isinstance(fields, dict):
            raise PushError("InvalidParameter", "the body must be a JSON object")
        return fields

    def _payload(self, fields: Dict[str, Any]) -> p.Payload:
        binary = fields.get("Binary", False)
        if not isinstance(binary, bool):
            raise PushError("InvalidParameter", "Binary must be true or false")
        message = _text(fields, "Message", empty=True)
        payload: p.Payload
        if binary:
            try:
                payload = base64.b64decode(message, validate=True)
            except (binascii.Error, ValueError):
                raise PushError("InvalidParameter",
                                "Message must be base64 when Binary is true") from None
        else:
            payload = message
        try:
            size = p.payload_size(payload)
        except UnicodeEncodeError:
            raise PushError("InvalidParameter", "Message is not valid Unicode text") from None
        if size > self.limits.max_payload:
            raise PushError("MessageTooLarge", "Message is %d bytes, over the limit of %d"
                            % (size, self.limits.max_payload))
        return payload

    def _allow(self, app_id: str, now: float) -> bool:
        rate = self.limits.push_qps
        if rate <= 0:
            return True
        bucket = self._buckets.get(app_id)
        if bucket is None:
            bucket = self._buckets[app_id] = TokenBucket(rate, now)
        return bucket.take(now)

    async def _unicast(self, sessions: Mapping[str, Session], to: str, sender: str,
                       payload: p.Payload) -> None:
        receiver = sessions.get(to)
        if receiver is None:
            raise PushError("UserNotOnline", "user %r is not logged in" % to)
        # Paced like any sender: wait until the receiver's queue has room.
        if not await receiver.wait_for_room() or sessions.get(to) is not receiver:
            raise PushError("UserNotOnline", "user %r is not logged in" % to)
        try:
            _, frame = receiver.conn.deliver(p.DeliverKind.PEER, sender, None, payload,
                                             reliable=True)
        except LocalProtocolError:
            raise PushError("UserNotOnline", "user %r is not logged in" % to) from None
        receiver.push(frame)
        self.hub.metrics.messages["push_unicast"] += 1


def _text(fields: Dict[str, Any], name: str, empty: bool = False) -> str:
    if name not in fields:
        raise PushError("MissingParameter", "The request is missing %s parameter." % name)
    value = fields[name]
    if not isinstance(value, str) or (not value and not empty):
        raise PushError("InvalidParameter", "%s must be a non-empty string" % name)
    return value


def _id(fields: Dict[str, Any], name: str) -> str:
    value = _text(fields, name)
    if not p.is_valid_id(value):
        raise PushError("InvalidParameter", "%s must match [a-zA-Z0-9_@\\-.]{1,128}, got %r"
                        % (name, value[:140]))
    return value
