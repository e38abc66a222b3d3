"""``rts-demo``: two clients talking through an embedded server, printing what happens.

Starts the real server on a loopback port in a background thread, logs alice and bob in, checks
each other's online status, exchanges text and binary messages both ways, logs out, and exits 0
(1 if anything did not happen as it should).
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import List, Optional

import rts_sync
from rts_sync.token import mint_login_token

APP_ID = "demoapp00000000000000001"
APP_KEY = "demo-app-key"


class Printer(rts_sync.RTSEventHandler):
    """Prints every callback it gets, prefixed with the user's name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: List[object] = []
        self.got_all = threading.Event()
        self.expect = 0

    def say(self, text: str) -> None:
        print("[%-5s] %s" % (self.name, text), flush=True)

    def on_connection_state_changed(self, state: int, reason: int) -> None:
        self.say("connection %s (%s)" % (rts_sync.ConnectionState(state).name,
                                         rts_sync.ConnectionStateChangeReason(reason).name))

    def on_login_result(self, uid: str, error_code: int, elapsed: int) -> None:
        self.say("login %s: code %d after %d ms" % (uid, error_code, elapsed))

    def on_get_peer_online_status(self, peer_user_id: str, status: int) -> None:
        self.say("%s is %s" % (peer_user_id, rts_sync.UserOnlineStatus(status).name))

    def on_message_received(self, uid: str, message: str) -> None:
        self.say("text from %s: %r" % (uid, message))
        self._got(message)

    def on_binary_message_received(self, uid: str, message: bytes) -> None:
        self.say("binary from %s: %r" % (uid, message))
        self._got(message)

    def on_message_send_result(self, msgid: int, error: int) -> None:
        self.say("message %d: %s" % (msgid, rts_sync.UserMessageSendResult(error).name))

    def on_logout(self, reason: int) -> None:
        self.say("logged out (%s)" % rts_sync.LogoutReason(reason).name)

    def _got(self, message: object) -> None:
        self.received.append(message)
        if len(self.received) >= self.expect:
            self.got_all.set()


def run(timeout: float = 10.0) -> int:
    from rts_sync.testing import serve_in_thread

    with serve_in_thread(apps={APP_ID: APP_KEY}) as server:
        print("server listening at %s" % server.url, flush=True)
        a, b = Printer("alice"), Printer("bob")
        a.expect = b.expect = 2
        with rts_sync.create_rts(APP_ID, a, server_url=server.url) as alice, \
                rts_sync.create_rts(APP_ID, b, server_url=server.url) as bob:
            alice.login(mint_login_token(APP_ID, APP_KEY, "alice"), "alice").result(timeout)
            bob.login(mint_login_token(APP_ID, APP_KEY, "bob"), "bob").result(timeout)
            online = alice.get_peer_online_status("bob").result(timeout)
            bob.get_peer_online_status("alice").result(timeout)
            ops = [alice.send_message("bob", "hello bob"),
                   alice.send_binary_message("bob", b"\x00\x01\x02"),
                   bob.send_message("alice", "hi alice, got it"),
                   bob.send_binary_message("alice", bytes([0xFF, 0xFE]))]
            results = [op.result(timeout) for op in ops]
            ok = a.got_all.wait(timeout) and b.got_all.wait(timeout)
            alice.logout().result(timeout)
            gone = bob.get_peer_online_status("alice").result(timeout)
            bob.logout().result(timeout)
    ok = (ok and online == rts_sync.UserOnlineStatus.ONLINE
          and gone == rts_sync.UserOnlineStatus.OFFLINE and all(r == 0 for r in results)
          and b.received == ["hello bob", b"\x00\x01\x02"]
          and a.received == ["hi alice, got it", b"\xff\xfe"])
    print("demo %s" % ("succeeded" if ok else "FAILED"), flush=True)
    return 0 if ok else 1


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="rts-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per step")
    args = parser.parse_args(argv)
    return run(args.timeout)


if __name__ == "__main__":
    sys.exit(main())
