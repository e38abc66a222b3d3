"""One engine's machinery: the three kinds of threads and their wiring, and its lifecycle.

``EngineCore`` owns the I/O thread, the supervisor thread and the callback dispatcher of one
engine, the runtime configuration, the handler and the optional inbox. The public ``RTS`` facade
validates arguments and hands work to it; it never blocks on the network.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

from .._version import __version__
from ..enums import UserOnlineStatus
from ..errors import ClientClosed
from .config import RuntimeConfig
from .dispatcher import Dispatcher
from .environment import Environment
from .events import Emitter
from .io_thread import IOThread
from .operations import Inbox
from .supervisor import HeartbeatPolicy, Supervisor

if TYPE_CHECKING:
    from ..room import RTSRoom

__all__ = ["EngineCore"]

log = logging.getLogger(__name__)
_ids = itertools.count(1)


class EngineCore:
    """Threads, wiring and lifecycle of one engine (see the module docstring).

    Threading: created and destroyed by the app (any thread, including a callback thread);
    the attributes are read from all of the engine's threads.
    """

    def __init__(self, app_id: str, handler: Any, urls: List[str],
                 parameters: Optional[Mapping[str, Any]]) -> None:
        self.id = next(_ids)
        self.app_id = app_id
        self.sdk_version = "rts_sync/" + __version__
        self.business_id: Optional[str] = None
        self.handler = handler
        self.urls = list(urls)
        self.warned_params: set[str] = set()
        self.config = RuntimeConfig().with_parameters(parameters, self.warned_params)
        self.inbox: Optional[Inbox] = (Inbox(self.config.message_queue_size)
                                       if self.config.message_queue_size else None)
        self.emit = Emitter(lambda: self.handler, lambda: self.inbox)
        self._msg_ids = itertools.count(1)
        #: The live RTSRoom objects by room id (created and destroyed by app threads).
        self.rooms: Dict[str, RTSRoom] = {}
        self._lock = threading.Lock()
        self.destroyed = False
        name = str(self.id)
        self.dispatcher = Dispatcher(name, self.config.dispatcher_threads,
                                     self.config.callback_queue_size,
                                     on_drained=lambda: self.io.submit(self.io.resume_reading))
        self.io = IOThread(self, name)
        #: Proxies, cellular path, network type and sys stats (driven by the supervisor).
        self.env = Environment.for_engine(self)
        self.supervisor = Supervisor(
            name, self.io, lambda: self.urls,
            lambda: HeartbeatPolicy(self.config.heartbeat_interval, self.config.heartbeat_timeout),
            lambda: self.config.connect_timeout, env=self.env, config=lambda: self.config)
        self.dispatcher.start()
        self.io.start()
        self.supervisor.start()
        log.info("engine %d created for app %s, servers %s", self.id, app_id, self.urls)

    def next_msg_id(self) -> int:
        """The next message id (P2P and server messages share one sequence, from 1)."""
        return next(self._msg_ids)  # itertools.count is atomic under the GIL

    def in_callback_thread(self) -> bool:
        return self.dispatcher.in_worker()

    def check_alive(self) -> None:
        if self.destroyed:
            raise ClientClosed("the engine was destroyed")

    def rooms_joined(self) -> int:
        """How many rooms this engine is in (read from the I/O thread's state)."""
        return sum(1 for st in list(self.io.rooms.values()) if st.joined)

    @staticmethod
    def online_status_enum(value: int) -> Any:
        try:
            return UserOnlineStatus(value)
        except ValueError:
            return value

    def destroy(self, timeout: float = 2.0) -> None:
        """Stop everything; idempotent; callable from any thread, callbacks included."""
        with self._lock:
            if self.destroyed:
                return
            self.destroyed = True
        log.info("destroying engine %d", self.id)
        self.supervisor.stop(timeout)
        self.io.stop(timeout)
        if self.inbox is not None:
            self.inbox.close()
        self.dispatcher.stop(timeout)
        with self._lock:
            rooms, self.rooms = list(self.rooms.values()), {}
        for room in rooms:
            room._destroyed = True
