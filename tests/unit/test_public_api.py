"""The public surface is locked: adding or removing a name must be a deliberate change here."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import rts_sync
from rts_sync.handlers import RTSEventHandler

EXPECTED = [
    "AppServerFailedError", "AppServerUnreachableError", "BusinessCheckCode", "ClientClosed",
    "ConnectTimeout", "ConnectionBrokenError", "ConnectionLost", "ConnectionState",
    "ConnectionStateChangeReason", "DEFAULT_SERVER_URL", "ExceedQpsError", "InvalidArgumentError",
    "InvalidStateError", "JoinRoomType", "LocalProtocolError", "LocalProxyConfiguration",
    "LocalProxyError", "LocalProxyState", "LocalProxyType", "LoginError", "LoginErrorCode",
    "LoginType", "LogoutError", "LogoutReason", "Message", "MessageConfig",
    "MessageTooLargeError", "NetworkType", "NoReceiverError", "NotJoinedError",
    "NotLoggedInError", "Operation", "ProtocolError", "ProxyError", "RTS", "RTSError",
    "RTSEventHandler", "RTSRoom", "RTSRoomEventHandler", "RemoteProtocolError", "RequestTimeout",
    "ReturnStatus", "RoomError", "RoomErrorCode", "RoomMessageSendResult", "RoomWarningCode",
    "SendError", "SendOperation", "SendTimeoutError", "ServerParamsNotSetError", "SysStats",
    "TransportError", "UserMessageSendResult", "UserOfflineReason", "UserOnlineStatus",
    "__version__", "create_rts", "destroy_rts", "get_sdk_version", "token",
]


def test_all_is_exactly_the_public_names() -> None:
    assert sorted(rts_sync.__all__) == sorted(EXPECTED)
    for name in rts_sync.__all__:
        assert hasattr(rts_sync, name), name


def test_py_typed_ships() -> None:
    assert (Path(rts_sync.__file__).parent / "py.typed").exists()


def test_rts_methods_follow_the_seed_names_and_order() -> None:
    sig = {n: list(inspect.signature(getattr(rts_sync.RTS, n)).parameters)[1:]
           for n in ("login", "send_message", "send_binary_message", "get_peer_online_status",
                     "update_login_token", "set_business_id", "set_rts_event_handler")}
    assert sig == {
        "login": ["token", "uid"],
        "send_message": ["uid", "message", "config"],
        "send_binary_message": ["uid", "message", "config"],
        "get_peer_online_status": ["peer_user_id"],
        "update_login_token": ["token"],
        "set_business_id": ["business_id"],
        "set_rts_event_handler": ["handler"],
    }
    assert list(inspect.signature(rts_sync.create_rts).parameters) == [
        "app_id", "handler", "parameters", "server_url"]


def test_errors_carry_codes_and_builtin_bases() -> None:
    assert issubclass(rts_sync.InvalidArgumentError, ValueError)
    assert issubclass(rts_sync.InvalidStateError, RuntimeError)
    assert rts_sync.NoReceiverError().code == 3 and rts_sync.MessageTooLargeError().code == 103
    assert rts_sync.TransportError.retriable and not rts_sync.LoginError.retriable
    assert str(rts_sync.LoginError("nope", -1000)) == "nope (code -1000)"


def test_sdk_version_and_handler_defaults() -> None:
    assert rts_sync.get_sdk_version() == rts_sync.__version__
    assert RTSEventHandler().on_login_result("a", 0, 1) is None


@pytest.mark.parametrize("url", ["http://x/rts", "ws://", "nonsense", "ws://host:99999/rts"])
def test_create_rts_rejects_bad_server_urls(url: str) -> None:
    with pytest.raises(rts_sync.InvalidArgumentError):
        rts_sync.create_rts("rtsapp000000000000000001", server_url=url)


def test_create_rts_argument_types() -> None:
    with pytest.raises(TypeError):
        rts_sync.create_rts(5)  # type: ignore[arg-type]
    with pytest.raises(rts_sync.InvalidArgumentError):
        rts_sync.create_rts("")
    with pytest.raises(rts_sync.InvalidArgumentError):
        rts_sync.create_rts("a", server_url=[])
    with pytest.raises(TypeError):
        rts_sync.create_rts("a", server_url=[5])  # type: ignore[list-item]
    with pytest.raises(rts_sync.InvalidArgumentError):
        rts_sync.create_rts("a", parameters={"heartbeat_timeout": 100}, server_url="ws://h/rts")
    with pytest.raises(TypeError):
        rts_sync.destroy_rts("not an engine")  # type: ignore[arg-type]
