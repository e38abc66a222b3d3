"""Three users in one room: presence and broadcasts, through a server started in this process.

Run: python examples/room_chat.py   (needs: pip install 'rts_sync[server]')
"""

import threading

import rts_sync
from rts_sync.testing import serve_in_thread
from rts_sync.token import mint_login_token

APP_ID, APP_KEY = "exampleapp00000000000001", "example-key"


class Room(rts_sync.RTSRoomEventHandler):
    # Runs on the engine's callback thread, one room's events in order.
    def __init__(self, me):
        self.me, self.heard = me, threading.Semaphore(0)

    def on_user_joined(self, uid, elapsed):
        print("%s sees %s join" % (self.me, uid))

    def on_user_leave(self, uid, reason):
        print("%s sees %s leave (%s)" % (self.me, uid, rts_sync.UserOfflineReason(reason).name))

    def on_room_message_received(self, uid, message):
        print("%s hears %s: %s" % (self.me, uid, message))
        self.heard.release()


with serve_in_thread(apps={APP_ID: APP_KEY}) as server:
    names = ["alice", "bob", "carol"]
    engines = [rts_sync.create_rts(APP_ID, server_url=server.url) for _ in names]
    rooms, handlers = [], []
    for rts, name in zip(engines, names):
        rts.login(mint_login_token(APP_ID, APP_KEY, name), name).result(timeout=10)
        room, handler = rts.create_room("lobby"), Room(name)
        room.set_rts_room_event_handler(handler)
        room.join_room().result(timeout=10)
        rooms.append(room)
        handlers.append(handler)

    rooms[0].send_room_message("hello, room").result(timeout=10)  # 200: fanned out
    rooms[1].send_room_message("hi alice").result(timeout=10)
    for h, expected in zip(handlers, (1, 1, 2)):  # nobody hears their own messages
        for _ in range(expected):
            h.heard.acquire(timeout=10)

    rooms[2].leave_room().result(timeout=10)
    for rts in engines:
        rts.destroy()
