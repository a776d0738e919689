"""The states of both protocol sessions, and the one table of moves each allows.

h11 keeps a connection's life in a table of allowed transitions; so do we. A
session asks :func:`client_move` or :func:`server_move` for every change of state, so no change can
happen that the table does not list, and a move the table forbids raises
:class:`~qmpevents.errors.LocalProtocolError`: a bug of the caller, never the
peer's doing (what the peer sends wrong is a ``ProtocolError`` instead).
"""

from __future__ import annotations

import enum
from typing import Final

from qmpevents.errors import LocalProtocolError

__all__ = [
    "CLIENT_MOVES",
    "SERVER_MOVES",
    "ClientState",
    "ServerState",
    "client_move",
    "server_move",
]


class ClientState(enum.Enum):
    """Where a client connection is in its life."""

    AWAITING_GREETING = "awaiting-greeting"
    NEGOTIATING = "negotiating"
    READY = "ready"
    CLOSED = "closed"


class ServerState(enum.Enum):
    """Where a monitor connection is: QEMU's capabilities-negotiation, then command mode."""

    NEGOTIATING = "negotiating"
    READY = "ready"
    CLOSED = "closed"


_C = ClientState
CLIENT_MOVES: Final[dict[tuple[ClientState, str], ClientState]] = {
    (_C.AWAITING_GREETING, "greeting"): _C.NEGOTIATING,
    (_C.NEGOTIATING, "send-negotiation"): _C.NEGOTIATING,
    (_C.NEGOTIATING, "send-command"): _C.NEGOTIATING,  # answered CommandNotFound
    (_C.NEGOTIATING, "negotiated"): _C.READY,
    (_C.NEGOTIATING, "negotiation-refused"): _C.NEGOTIATING,
    (_C.READY, "send-command"): _C.READY,
    **{(state, "eof"): _C.CLOSED for state in ClientState},
}
"""(state, what happens) -> the next state, for a client session."""

_S = ServerState
SERVER_MOVES: Final[dict[tuple[ServerState, str], ServerState]] = {
    (_S.NEGOTIATING, "negotiated"): _S.READY,
    (_S.READY, "dispatch"): _S.READY,
    **{(state, "eof"): _S.CLOSED for state in ServerState},
    (_S.CLOSED, "reopen"): _S.NEGOTIATING,
}
"""(state, what happens) -> the next state, for a server session."""


def client_move(state: ClientState, happening: str) -> ClientState:
    """The client state after ``happening``; LocalProtocolError when not allowed."""
    try:
        return CLIENT_MOVES[(state, happening)]
    except KeyError:
        raise LocalProtocolError(f"cannot {happening} in state {state.value}") from None


def server_move(state: ServerState, happening: str) -> ServerState:
    """The server state after ``happening``; LocalProtocolError when not allowed."""
    try:
        return SERVER_MOVES[(state, happening)]
    except KeyError:
        raise LocalProtocolError(f"cannot {happening} in state {state.value}") from None
