"""The public vocabulary: enum values against the reference, handlers, data classes."""

from __future__ import annotations

import dataclasses
import inspect
from enum import IntEnum
from typing import Any

import pytest

from rts_sync import enums, handlers, types
from rts_sync.enums import (
    BusinessCheckCode,
    ConnectionState,
    ConnectionStateChangeReason,
    JoinRoomType,
    LocalProxyError,
    LocalProxyState,
    LocalProxyType,
    LoginErrorCode,
    LoginType,
    LogoutReason,
    MessageConfig,
    NetworkType,
    ReturnStatus,
    RoomErrorCode,
    RoomMessageSendResult,
    RoomWarningCode,
    UserMessageSendResult,
    UserOfflineReason,
    UserOnlineStatus,
)
from rts_sync.handlers import RTSEventHandler, RTSRoomEventHandler
from rts_sync.types import LocalProxyConfiguration, Message, SysStats

# Numbers from reference/volcengine-rts-api.md §1 and §3 (ConnectionStateChangeReason is ours).
EXPECTED: dict[type[IntEnum], dict[str, int]] = {
    LoginErrorCode: {
        "SUCCESS": 0,
        "INVALID_TOKEN": -1000,
        "LOGIN_FAILED": -1001,
        "INVALID_USER_ID": -1002,
        "SERVER_ERROR": -1003,
    },
    LoginType: {"FIRST_LOGIN": 0, "RECONNECTED": 1},
    LogoutReason: {"LOGOUT": 0, "DUPLICATE_LOGIN": 1},
    UserMessageSendResult: {
        "SUCCESS": 0,
        "TIMEOUT": 1,
        "BROKEN": 2,
        "NO_RECEIVER": 3,
        "NO_RELAY_PATH": 4,
        "EXCEED_QPS": 5,
        "E2BS_SEND_FAILED": 17,
        "E2BS_RETURN_FAILED": 18,
        "NOT_JOIN": 100,
        "INIT": 101,
        "NO_CONNECTION": 102,
        "EXCEED_MAX_LENGTH": 103,
        "EMPTY_USER": 104,
        "NOT_LOGIN": 105,
        "SERVER_PARAMS_NOT_SET": 106,
        "UNKNOWN": 1000,
    },
    RoomMessageSendResult: {
        "SUCCESS": 200,
        "TIMEOUT": 1,
        "NETWORK_DISCONNECTED": 2,
        "EXCEED_QPS": 5,
        "NOT_JOIN": 100,
        "INIT": 101,
        "NO_CONNECTION": 102,
        "EXCEED_MAX_LENGTH": 103,
        "UNKNOWN": 1000,
    },
    UserOnlineStatus: {"OFFLINE": 0, "ONLINE": 1, "UNREACHABLE": 2},
    ConnectionState: {
        "DISCONNECTED": 1,
        "CONNECTING": 2,
        "CONNECTED": 3,
        "RECONNECTING": 4,
        "RECONNECTED": 5,
        "LOST": 6,
        "FAILED": 7,
    },
    ConnectionStateChangeReason: {
        "UNKNOWN": -1,
        "LOGIN": 0,
        "CONNECT_SUCCESS": 1,
        "CONNECT_FAILED": 2,
        "NETWORK_LOST": 3,
        "HEARTBEAT_TIMEOUT": 4,
        "SERVER_CLOSED": 5,
        "KICKED": 6,
        "TOKEN_EXPIRED": 7,
        "PROXY_ERROR": 8,
        "NETWORK_CHANGED": 9,
        "LOGOUT": 10,
        "DESTROYED": 11,
        "PROTOCOL_ERROR": 12,
        "RESUMED": 13,
    },
    UserOfflineReason: {
        "QUIT": 0,
        "DROPPED": 1,
        "SWITCH_TO_INVISIBLE": 2,
        "KICKED_BY_ADMIN": 3,
    },
    RoomErrorCode: {
        "SUCCESS": 0,
        "INVALID_TOKEN": -1000,
        "JOIN_ROOM": -1001,
        "DUPLICATE_LOGIN": -1004,
        "KICKED_OUT": -1006,
        "ROOM_ID_ILLEGAL": -1007,
        "TOKEN_EXPIRED": -1009,
        "UPDATE_TOKEN_WITH_INVALID_TOKEN": -1010,
        "ROOM_DISMISS": -1011,
        "ROOM_ALREADY_EXIST": -1013,
        "USER_ID_DIFFERENT": -1014,
        "ABNORMAL_SERVER_STATUS": -1084,
        "INTERNAL": -1111,
    },
    RoomWarningCode: {
        "GET_ROOM_FAILED": -2000,
        "JOIN_ROOM_FAILED": -2001,
        "PUBLISH_STREAM_FAILED": -2002,
        "INVOKE_ERROR": -2005,
        "INVALID_EXPECT_MEDIA_SERVER_ADDRESS": -2007,
        "SEND_CUSTOM_MESSAGE": -2011,
        "USER_NOTIFY_STOP": -2013,
        "ROOM_ALREADY_EXIST": -2015,
        "OLD_ROOM_BEEN_REPLACED": -2016,
    },
    JoinRoomType: {"FIRST": 0, "RECONNECTED": 1},
    NetworkType: {
        "UNKNOWN": -1,
        "DISCONNECTED": 0,
        "LAN": 1,
        "WIFI": 2,
        "MOBILE_2G": 3,
        "MOBILE_3G": 4,
        "MOBILE_4G": 5,
        "MOBILE_5G": 6,
    },
    LocalProxyType: {"SOCKS5": 1, "HTTP_TUNNEL": 2},
    LocalProxyState: {"INITED": 0, "CONNECTED": 1, "ERROR": 2},
    LocalProxyError: {
        "OK": 0,
        "SOCKS5_VERSION_ERROR": 1,
        "SOCKS5_FORMAT_ERROR": 2,
        "SOCKS5_INVALID_VALUE": 3,
        "SOCKS5_USER_PASS_NOT_GIVEN": 4,
        "SOCKS5_TCP_CLOSED": 5,
        "HTTP_TUNNEL_FAILED": 6,
    },
    MessageConfig: {
        "RELIABLE_ORDERED": 0,
        "UNRELIABLE_ORDERED": 1,
        "UNRELIABLE_UNORDERED": 2,
    },
    BusinessCheckCode: {
        "SUCCESS": 0,
        "ALREADY_IN_ROOM": -6001,
        "INPUT_INVALIDATE": -6002,
    },
    ReturnStatus: {
        "SUCCESS": 0,
        "FAILURE": -1,
        "PARAMETER_ERR": -2,
        "WRONG_STATE": -3,
        "HAS_IN_ROOM": -4,
        "HAS_IN_LOGIN": -5,
        "ROOM_ID_IN_USE": -8,
    },
}

ENGINE_CALLBACKS: dict[str, tuple[str, ...]] = {
    "on_sys_stats": ("stats",),
    "on_network_type_changed": ("type",),
    "on_create_room_state_changed": ("room_id", "error_code"),
    "on_connection_state_changed": ("state", "reason"),
    "on_login_result": ("uid", "error_code", "elapsed"),
    "on_logout": ("reason",),
    "on_server_params_set_result": ("error",),
    "on_get_peer_online_status": ("peer_user_id", "status"),
    "on_message_received": ("uid", "message"),
    "on_binary_message_received": ("uid", "message"),
    "on_message_send_result": ("msgid", "error"),
    "on_server_message_send_result": ("msgid", "error", "message"),
    "on_local_proxy_state_changed": ("type", "state", "error"),
}

ROOM_CALLBACKS: dict[str, tuple[str, ...]] = {
    "on_room_state_changed": ("room_id", "uid", "state", "extra_info"),
    "on_leave_room": (),
    "on_user_joined": ("uid", "elapsed"),
    "on_user_leave": ("uid", "reason"),
    "on_room_message_received": ("uid", "message"),
    "on_room_binary_message_received": ("uid", "message"),
    "on_room_message_send_result": ("msgid", "error"),
}

STATS = SysStats(
    cpu_cores=8,
    cpu_app_usage=0.05,
    cpu_total_usage=0.3,
    memory_usage=42.5,
    full_memory=16384,
    total_memory_usage=8000,
    free_memory=8384,
    memory_ratio=0.26,
    total_memory_ratio=48.8,
)

# Sample arguments by parameter name, for calling every callback.
SAMPLE_ARGS: dict[str, Any] = {
    "stats": STATS,
    "type": 1,
    "room_id": "room1",
    "error_code": 0,
    "state": 0,
    "reason": -1,
    "uid": "alice",
    "elapsed": 12,
    "error": 0,
    "peer_user_id": "bob",
    "status": 1,
    "message": "hi",
    "msgid": 1,
    "extra_info": '{"elapsed":1187,"join_type":0}',
}


# --- enums -------------------------------------------------------------------------------


@pytest.mark.parametrize("enum_cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_enum_values_match_reference(enum_cls: type[IntEnum]) -> None:
    assert {m.name: m.value for m in enum_cls} == EXPECTED[enum_cls]
    for name, value in EXPECTED[enum_cls].items():
        assert enum_cls[name] == value
        assert enum_cls(value).name == name


def test_every_enum_is_covered_and_exported() -> None:
    exported = {getattr(enums, name) for name in enums.__all__}
    assert exported == set(EXPECTED)
    assert enums.__all__ == sorted(enums.__all__)
    for enum_cls in exported:
        assert issubclass(enum_cls, IntEnum)


def test_enum_members_are_documented() -> None:
    source = inspect.getsource(enums)
    for enum_cls in EXPECTED:
        assert enum_cls.__doc__ and "Threading:" in enum_cls.__doc__
        body = inspect.getsource(enum_cls).splitlines()
        for member in enum_cls:
            line = next(i for i, t in enumerate(body) if t.strip().startswith(member.name + " ="))
            above = [t.strip() for t in body[:line] if t.strip()]
            assert above[-1].startswith("#:"), (enum_cls.__name__, member.name)
    assert "our addition" in source.lower()


def test_int_enums_compare_with_plain_ints() -> None:
    code: int = RoomMessageSendResult.SUCCESS
    assert code == 200
    assert LoginErrorCode(-1000) is LoginErrorCode.INVALID_TOKEN
    assert int(ConnectionStateChangeReason.UNKNOWN) == -1


# --- handlers ----------------------------------------------------------------------------


def _public_methods(cls: type) -> list[str]:
    return sorted(n for n, v in vars(cls).items() if callable(v) and not n.startswith("_"))


@pytest.mark.parametrize(
    ("cls", "expected"),
    [(RTSEventHandler, ENGINE_CALLBACKS), (RTSRoomEventHandler, ROOM_CALLBACKS)],
    ids=["engine", "room"],
)
def test_handler_methods(cls: type, expected: dict[str, tuple[str, ...]]) -> None:
    assert _public_methods(cls) == sorted(expected)
    assert cls.__doc__ and "Threading:" in cls.__doc__
    handler = cls()
    for name, params in expected.items():
        method = getattr(cls, name)
        sig = inspect.signature(method)
        names = tuple(sig.parameters)[1:]
        assert names == params, name
        for p in list(sig.parameters.values())[1:]:
            assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            assert p.default is inspect.Parameter.empty
        doc = method.__doc__ or ""
        assert "rts-cb-" in doc, name
        assert getattr(handler, name)(*(SAMPLE_ARGS[p] for p in params)) is None


def test_handlers_module_exports() -> None:
    assert handlers.__all__ == ["RTSEventHandler", "RTSRoomEventHandler"]


def test_handler_subclass_overrides_with_own_names() -> None:
    seen: list[tuple[Any, ...]] = []

    class Mine(RTSEventHandler):
        def on_login_result(self, u: str, code: int, ms: int) -> None:
            seen.append((u, code, ms))

    Mine().on_login_result("alice", LoginErrorCode.SUCCESS, 5)
    assert seen == [("alice", 0, 5)]


# --- types -------------------------------------------------------------------------------


def test_types_module_exports() -> None:
    assert types.__all__ == sorted(types.__all__)
    assert set(types.__all__) == {"LocalProxyConfiguration", "Message", "SysStats"}


def test_sys_stats_fields_and_immutability() -> None:
    assert [f.name for f in dataclasses.fields(SysStats)] == [
        "cpu_cores",
        "cpu_app_usage",
        "cpu_total_usage",
        "memory_usage",
        "full_memory",
        "total_memory_usage",
        "free_memory",
        "memory_ratio",
        "total_memory_ratio",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        STATS.cpu_cores = 4  # type: ignore[misc]
    assert STATS == dataclasses.replace(STATS)
    assert hash(STATS) == hash(dataclasses.replace(STATS))
    assert SysStats.__doc__ and "Threading:" in SysStats.__doc__


def test_local_proxy_configuration_valid() -> None:
    cfg = LocalProxyConfiguration(LocalProxyType.SOCKS5, "127.0.0.1", 1080)
    assert cfg.local_proxy_username == "" and cfg.local_proxy_password == ""
    two: Any = 2
    coerced = LocalProxyConfiguration(two, "proxy.example", 65535, "u", "secret")
    assert coerced.local_proxy_type is LocalProxyType.HTTP_TUNNEL
    assert "secret" not in repr(coerced)
    one: Any = 1
    assert LocalProxyConfiguration(one, "h", 1).local_proxy_type is LocalProxyType.SOCKS5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.local_proxy_port = 1  # type: ignore[misc]
    assert LocalProxyConfiguration.__doc__ and "Threading:" in LocalProxyConfiguration.__doc__


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        ((3, "h", 1080), ValueError, "local_proxy_type"),
        ((0, "h", 1080), ValueError, "local_proxy_type"),
        (("socks5", "h", 1080), TypeError, "local_proxy_type"),
        ((True, "h", 1080), TypeError, "local_proxy_type"),
        ((1.0, "h", 1080), TypeError, "local_proxy_type"),
        ((1, "", 1080), ValueError, "local_proxy_ip"),
        ((1, None, 1080), TypeError, "local_proxy_ip"),
        ((1, b"h", 1080), TypeError, "local_proxy_ip"),
        ((1, "h", 0), ValueError, "local_proxy_port"),
        ((1, "h", 65536), ValueError, "local_proxy_port"),
        ((1, "h", -1), ValueError, "local_proxy_port"),
        ((1, "h", "1080"), TypeError, "local_proxy_port"),
        ((1, "h", 1080.0), TypeError, "local_proxy_port"),
        ((1, "h", True), TypeError, "local_proxy_port"),
        ((1, "h", 1080, None), TypeError, "local_proxy_username"),
        ((1, "h", 1080, "u", 123), TypeError, "local_proxy_password"),
    ],
)
def test_local_proxy_configuration_invalid(args: tuple[Any, ...], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        LocalProxyConfiguration(*args)


def test_message() -> None:
    text = Message("peer", "alice", "hi")
    assert text.room_id is None and text.binary is False
    data = Message("room", "bob", b"\x00\x01", room_id="r1")
    assert data.binary is True and data.room_id == "r1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        text.message = "changed"  # type: ignore[misc]
    with pytest.raises(ValueError, match="kind"):
        Message("group", "alice", "hi")
    with pytest.raises(TypeError, match="message"):
        Message("peer", "alice", 5)  # type: ignore[arg-type]
    assert Message.__doc__ and "Threading:" in Message.__doc__
