"""Messages to the application server (P2Server): ``set_server_params`` and
``send_server_message`` / ``send_server_binary_message``.

The facade functions (:func:`set_server_params`, :func:`send_server_message`) run on the app's
thread: they validate, then hand the work to the I/O thread. :class:`ServerMessages` is the I/O
thread's part (a mixin of IOThread, through Messaging): the SET_SERVER_PARAMS request, the
params the server accepted (``server_params``, kept across connection losses so a re-login can
apply them again with :meth:`ServerMessages.reapply_server_params`), and the results of server
sends, which carry the application server's response body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Hashable, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from ..enums import UserMessageSendResult as R
from ..errors import InvalidArgumentError, InvalidStateError, RTSError, error_for
from ..protocol import MAX_PAYLOAD, Op, TargetKind, payload_size
from .dispatcher import Task
from .events import CONN_LANE
from .operations import Operation, SendOperation

if TYPE_CHECKING:
    from ..protocol import Connection
    from .core import EngineCore
    from .io_thread import FailFn, ResponseFn

__all__ = ["PARAMS_SET", "ServerMessages", "ServerSendOperation", "send_server_message",
           "set_server_params"]

Tasks = List[Tuple[Hashable, Task]]

#: The code of a successful SET_SERVER_PARAMS (the seed's ``onServerParamsSetResult(200)``).
PARAMS_SET = 200


class ServerSendOperation(SendOperation):
    """A :class:`SendOperation` of a server message: ``result()`` is the application server's
    response body (bytes).

    Threading: thread-safe, like every Operation.
    """


# ---------------------------------------------------------------------- facade (app threads)
def _check_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def set_server_params(core: EngineCore, signature: str, url: str) -> Operation:
    """``RTS.set_server_params``: validate, then send the request from the I/O thread."""
    core.check_alive()
    for name, value in (("signature", signature), ("url", url)):
        if not isinstance(value, str):
            raise TypeError("%s must be a str, not %s" % (name, type(value).__name__))
    if not signature:
        raise InvalidArgumentError("signature must not be empty", -2)
    if not _check_url(url):
        raise InvalidArgumentError("url must be an http:// or https:// URL with a host, got %r"
                                   % (url,), -2)
    if not core.io.logged_in:
        raise InvalidStateError("set_server_params needs a login", -3)
    op = Operation(core.in_callback_thread)
    core.io.submit(core.io.set_server_params, op, signature, url)
    return op


def send_server_message(core: EngineCore, message: Union[str, bytes]) -> ServerSendOperation:
    """``RTS.send_server_message`` / ``send_server_binary_message`` after the type check: a
    ServerSendOperation that fails at once (103, 105, 5) or is handed to the I/O thread."""
    core.check_alive()
    op = ServerSendOperation(core.next_msg_id(), core.in_callback_thread)
    try:
        size = payload_size(message)
    except UnicodeEncodeError:
        raise InvalidArgumentError("message is not valid Unicode text (lone surrogate)",
                                   -2) from None
    code: Optional[R] = None
    if size > MAX_PAYLOAD:
        code = R.EXCEED_MAX_LENGTH
    elif not core.io.logged_in:
        code = R.NOT_LOGIN
    elif core.io.backlog >= core.config.outbox_size:
        code = R.EXCEED_QPS
    if code is not None:
        tasks: Tasks = []
        _fail(core, op, code, "", tasks)
        core.dispatcher.submit_many(tasks)
        return op
    core.io.send_now(op, TargetKind.SERVER, "", 0, message)
    return op


def _fail(core: EngineCore, op: SendOperation, code: int, detail: str, tasks: Tasks) -> None:
    try:
        code = R(code)
    except ValueError:
        pass
    err = error_for("send", code, "server message %d failed: %s"
                    % (op.msg_id, detail or getattr(code, "name", str(code))))
    tasks.append(core.emit.task(CONN_LANE, "on_server_message_send_result",
                                (op.msg_id, code, b""), op, error=err))


# ---------------------------------------------------------------------- I/O thread
class ServerMessages:
    """The I/O thread's part of server messages (mixed into IOThread through Messaging).

    Threading: every method runs on the I/O thread; other threads may read ``server_params``.
    """

    #: (signature, url) the server accepted last; kept when the connection is lost (a re-login
    #: applies them again: :meth:`reapply_server_params`), cleared by ``logout``.
    server_params: Optional[Tuple[str, str]] = None

    if TYPE_CHECKING:
        core: EngineCore
        conn: Optional[Connection]
        logged_in: bool

        def _request(self, op: int, args: List[Any], on_response: ResponseFn,
                     on_fail: FailFn) -> None: ...

    def set_server_params(self, op: Optional[Operation], signature: str, url: str) -> None:
        """Send SET_SERVER_PARAMS; ``on_server_params_set_result(code)`` fires with its result
        (200 on success) and ``op``, if any, resolves to 200 or fails with the code."""
        emit = self.core.emit
        method = "on_server_params_set_result"

        def ok(code: int, result: Any, tasks: Tasks) -> None:
            if code == PARAMS_SET:
                self.server_params = (signature, url)
                tasks.append(emit.task(CONN_LANE, method, (PARAMS_SET,), op, PARAMS_SET))
                return
            reason = result.get("reason", "") if isinstance(result, dict) else ""
            fail(error_for("send", code, "set_server_params failed: %s" % (reason or code)),
                 tasks)

        def fail(err: RTSError, tasks: Tasks) -> None:
            code: Any = err.code
            try:
                code = R(code)
            except ValueError:
                pass
            tasks.append(emit.task(CONN_LANE, method, (code,), op, error=err))

        if not self.logged_in or self.conn is None:
            tasks: Tasks = []
            fail(error_for("send", R.NOT_LOGIN, "set_server_params needs a login"), tasks)
            self.core.dispatcher.submit_many(tasks)
            return
        self._request(Op.SET_SERVER_PARAMS, [signature, url], ok, fail)

    def reapply_server_params(self) -> None:
        """After a re-login on a new server session: set the kept params again (the result
        callback fires again, as with the seed's Web SDK). No effect without params."""
        params = self.server_params
        if params is not None and self.logged_in and self.conn is not None:
            self.set_server_params(None, params[0], params[1])

    def _server_send_done(self, op: SendOperation, code: int, body: Optional[bytes],
                          tasks: Tasks) -> None:
        if code == R.SUCCESS:
            answer = body or b""
            tasks.append(self.core.emit.task(CONN_LANE, "on_server_message_send_result",
                                             (op.msg_id, R.SUCCESS, answer), op, answer))
        else:
            _fail(self.core, op, code, "", tasks)

    def _server_send_failed(self, op: SendOperation, code: int, detail: str,
                            tasks: Tasks) -> None:
        _fail(self.core, op, code, detail, tasks)
