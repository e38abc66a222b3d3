"""Two users chat peer to peer through a server started in this process.

Run: python examples/p2p_chat.py   (needs: pip install 'rts_sync[server]')
"""

import rts_sync
from rts_sync.testing import serve_in_thread
from rts_sync.token import mint_login_token

APP_ID, APP_KEY = "exampleapp00000000000001", "example-key"


class Chat(rts_sync.RTSEventHandler):
    # Runs on the engine's callback thread, never on its network threads.
    def __init__(self, me):
        self.me = me

    def on_message_received(self, uid, message):
        print("%s got from %s: %s" % (self.me, uid, message))

    def on_binary_message_received(self, uid, message):
        print("%s got %d bytes from %s" % (self.me, len(message), uid))


with serve_in_thread(apps={APP_ID: APP_KEY}) as server:
    with rts_sync.create_rts(APP_ID, Chat("alice"), server_url=server.url) as alice, \
         rts_sync.create_rts(APP_ID, None, {"message_queue_size": 100},
                             server_url=server.url) as bob:
        alice.login(mint_login_token(APP_ID, APP_KEY, "alice"), "alice").result(timeout=10)
        bob.login(mint_login_token(APP_ID, APP_KEY, "bob"), "bob").result(timeout=10)
        print("bob is", alice.get_peer_online_status("bob").result(timeout=10).name)

        # Scripts can wait on each send; SUCCESS means bob's SDK has the message.
        alice.send_message("bob", "hi bob!").result(timeout=10)
        alice.send_binary_message("bob", b"\x01\x02\x03").result(timeout=10)

        # Bob uses the pull-style queue instead of a handler.
        for msg in bob.messages(timeout=1):
            print("bob got from %s: %r" % (msg.uid, msg.message))
            if msg.binary:
                break
        bob.send_message("alice", "hello alice").result(timeout=10)
        try:
            alice.send_message("carol", "anyone?").result(timeout=10)
        except rts_sync.NoReceiverError as exc:
            print("carol is not logged in:", exc)
