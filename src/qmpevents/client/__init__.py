"""The asyncio QMP client: connect, execute commands, listen for typed events.

- :func:`connect` / :class:`QMPClient` (:mod:`.connection`): one QMP connection,
  its commands, its listeners and its reconnection.
- :class:`EventListener` and :class:`EventWaiter` (:mod:`.listeners`): bounded
  event queues with filters; the markers :class:`Gap` (nobody was listening),
  :class:`RunState` (the VM's state changed meanwhile) and :class:`Dropped`
  (a listener overflowed) arrive in the same stream.
- :class:`SyncClient` (:mod:`.sync`): the same client for blocking scripts.
"""

from qmpevents.client.connection import QMPClient, connect
from qmpevents.client.listeners import (
    Dropped,
    EventListener,
    EventWaiter,
    Gap,
    ListenerItem,
    OverflowPolicy,
    RunState,
)
from qmpevents.client.sync import SyncClient, SyncWaiter

__all__ = [
    "Dropped",
    "EventListener",
    "EventWaiter",
    "Gap",
    "ListenerItem",
    "OverflowPolicy",
    "QMPClient",
    "RunState",
    "SyncClient",
    "SyncWaiter",
    "connect",
]
