"""P2Server: clients' SERVER sends forwarded to their application server over HTTP.

A client names its application server with SET_SERVER_PARAMS ``[signature, url]``; each of its
SERVER sends then becomes ``POST url`` with the JSON body of reference §4 ::

    {"message": "<text, or base64 of the bytes>", "binary": false, "signature": "<signature>"}

and the headers ``Content-Type: application/json``, ``X-Rts-App-Id`` (the client's app id) and
``X-Rts-User-Id`` (the sender's uid). HTTP 200 answers RESULT 0 with the response body (at most
``max_payload`` bytes; a longer answer is RESULT 18); any other status answers 18
(E2BS_RETURN_FAILED); no answer within ``app_server_timeout`` (connect refused, DNS failure,
timeout) answers 17 (E2BS_SEND_FAILED). Redirects are not followed (a 3xx is 18).

The event loop never waits for an application server: each message is forwarded by a task of
its own, through one pooled ``aiohttp.ClientSession`` per server. At most
``app_server_concurrency`` requests per app are in flight; further ones wait for a slot, and
``app_server_timeout`` bounds the wait and the request together, so nothing waits for ever. A
session with ``app_server_concurrency`` messages outstanding is paced: its connection is read no
further until one finishes, so a client cannot queue without bound, and a slow application
server delays neither other clients nor, below that bound, the same client's other messages.

Threading: everything here runs on the server's event loop; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import deque
from typing import Any, Deque, Dict, Optional, Set, Tuple
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from .. import protocol as p
from .._version import __version__
from ..enums import UserMessageSendResult
from .config import Limits
from .metrics import Metrics
from .session import Session

__all__ = ["APP_ID_HEADER", "USER_ID_HEADER", "Forwarder", "check_server_params"]

log = logging.getLogger(__name__)

#: Headers of every forwarded message: the sender's app id and uid.
APP_ID_HEADER = "X-Rts-App-Id"
USER_ID_HEADER = "X-Rts-User-Id"
#: Longest accepted url in SET_SERVER_PARAMS.
MAX_URL_LENGTH = 2048


def check_server_params(args: Tuple[Any, ...]) -> Optional[str]:
    """Why SET_SERVER_PARAMS ``[signature, url]`` is unacceptable, or None if it is fine."""
    signature, url = args
    if not isinstance(signature, str) or not signature:
        return "signature must be non-empty text"
    if not isinstance(url, str) or not url:
        return "url must be non-empty text"
    if len(url) > MAX_URL_LENGTH:
        return "url longer than %d characters" % MAX_URL_LENGTH
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return "url is not valid: %s" % exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "url must be http:// or https:// with a host"
    return None


class _Slots:
    """A FIFO of at most ``n`` holders, with a deadline for waiters (one per app)."""

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiters: Deque[asyncio.Future[bool]] = deque()

    async def acquire(self, timeout: float) -> bool:
        """Take a slot within ``timeout`` seconds; False if none came free in time."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(fut)

        def expire() -> None:
            if not fut.done():
                fut.set_result(False)

        timer = loop.call_later(max(timeout, 0.0), expire)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result():
                self.release()  # granted just as we were cancelled: pass it on
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(True)
                return
        self.free += 1


class Forwarder:
    """Forwards SERVER sends to application servers (see the module docstring).

    ``start()`` (on the server's startup) opens the pooled HTTP client, ``close()`` (on cleanup)
    cancels what is in flight and closes it.

    Threading: not thread-safe; owned by the server's event loop.
    """

    def __init__(self, limits: Limits, metrics: Metrics) -> None:
        self.limits = limits
        self.metrics = metrics
        self._client: Optional[aiohttp.ClientSession] = None
        self._slots: Dict[str, _Slots] = {}
        #: Messages outstanding (waiting or in flight) per session, and the pacing wake-ups.
        self._outstanding: Dict[Session, int] = {}
        self._wakers: Dict[Session, asyncio.Event] = {}
        self._tasks: Set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, app: Optional[web.Application] = None) -> None:
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                headers={"User-Agent": "rts_sync/%s" % __version__},
                timeout=aiohttp.ClientTimeout(total=self.limits.app_server_timeout))

    async def close(self, app: Optional[web.Application] = None) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    @property
    def in_flight(self) -> int:
        """Messages being forwarded now (waiting for a slot or for their answer)."""
        return len(self._tasks)

    # ------------------------------------------------------------------ requests
    def set_params(self, session: Session, args: Tuple[Any, ...]) -> Tuple[int, Any]:
        """SET_SERVER_PARAMS ``[signature, url]``: the RESPONSE's (code, result); 200 when set."""
        problem = check_server_params(args)
        if problem is not None:
            log.info("connection %d (uid %s): SET_SERVER_PARAMS refused: %s", session.cid,
                     session.uid, problem)
            return UserMessageSendResult.UNKNOWN, {"reason": problem}
        session.server_params = (args[0], args[1])
        log.debug("connection %d (uid %s): app server url %s", session.cid, session.uid, args[1])
        return 200, None

    async def forward(self, session: Session, seq: int, payload: p.Payload) -> Optional[int]:
        """A SERVER send: the result code to send now (106 without params), or None when the
        result comes later from the forwarding task. Paces the session (see the module
        docstring) before taking the message."""
        params = session.server_params
        if params is None:
            return UserMessageSendResult.SERVER_PARAMS_NOT_SET
        limit = self.limits.app_server_concurrency
        while self._outstanding.get(session, 0) >= limit and not session.closing:
            waker = self._wakers.setdefault(session, asyncio.Event())
            waker.clear()
            await waker.wait()
        if session.closing:
            return None
        if self._client is None:  # not started, or shutting down
            return UserMessageSendResult.E2BS_SEND_FAILED
        self.metrics.messages["server"] += 1
        self._outstanding[session] = self._outstanding.get(session, 0) + 1
        task = asyncio.get_running_loop().create_task(
            self._run(session, seq, params, session.app_id or "", session.uid or "", payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    def _done(self, session: Session) -> None:
        n = self._outstanding.get(session, 0) - 1
        if n <= 0:
            self._outstanding.pop(session, None)
        else:
            self._outstanding[session] = n
        waker = self._wakers.pop(session, None)
        if waker is not None:
            waker.set()

    async def _run(self, session: Session, seq: int, params: Tuple[str, str], app_id: str,
                   uid: str, payload: p.Payload) -> None:
        try:
            code, body = await self._deliver(params, app_id, uid, payload)
            self.metrics.app_server[{0: "ok", 17: "unreachable"}.get(code, "failed")] += 1
            if await session.wait_for_room():
                session.post_result_body(code, seq, body if code == 0 else None)
        finally:
            self._done(session)

    async def _deliver(self, params: Tuple[str, str], app_id: str, uid: str,
                       payload: p.Payload) -> Tuple[int, bytes]:
        """POST one message; (result code, response body)."""
        signature, url = params
        binary = isinstance(payload, bytes)
        message = base64.b64encode(payload).decode("ascii") if isinstance(payload, bytes) else payload
        data = json.dumps({"message": message, "binary": binary, "signature": signature},
                          ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", APP_ID_HEADER: app_id,
                   USER_ID_HEADER: uid}
        timeout = self.limits.app_server_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        slots = self._slots.get(app_id)
        if slots is None:
            slots = self._slots[app_id] = _Slots(self.limits.app_server_concurrency)
        if not await slots.acquire(timeout):
            log.info("app %s: no free slot for the app server within %.1f s (%d in flight)",
                     app_id, timeout, self.limits.app_server_concurrency)
            return UserMessageSendResult.E2BS_SEND_FAILED, b""
        try:
            return await self._post(url, data, headers, deadline - loop.time(), app_id, uid)
        finally:
            slots.release()

    async def _post(self, url: str, data: bytes, headers: Dict[str, str], remaining: float,
                    app_id: str, uid: str) -> Tuple[int, bytes]:
        client = self._client
        assert client is not None
        limit = self.limits.max_payload
        try:
            async with client.post(url, data=data, headers=headers, allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=max(remaining, 0.001))
                                   ) as resp:
                if resp.status != 200:
                    log.info("app server %s answered %s from %s: HTTP %d (result 18)", url,
                             app_id, uid, resp.status)
                    return UserMessageSendResult.E2BS_RETURN_FAILED, b""
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > limit:
                        log.warning("app server %s answered %s with more than max_payload (%d) "
                                    "bytes: result 18 instead of a truncated answer", url, uid,
                                    limit)
                        return UserMessageSendResult.E2BS_RETURN_FAILED, b""
                return UserMessageSendResult.SUCCESS, bytes(body)
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            log.info("app server %s did not answer within %.1f s (result 17)", url,
                     self.limits.app_server_timeout)
        except aiohttp.ClientError as exc:
            log.info("app server %s unreachable (result 17): %r", url, exc)
        except (OSError, ValueError) as exc:  # e.g. an invalid url the checks let through
            log.info("app server %s: cannot send (result 17): %r", url, exc)
        return UserMessageSendResult.E2BS_SEND_FAILED, b""
