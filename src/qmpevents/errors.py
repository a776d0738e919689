"""The one exception tree of qmpevents.

Every error qmpevents raises on purpose derives from :class:`QMPEventsError`, so a
caller can catch everything of ours with one ``except``::

    QMPEventsError
     +-- ProtocolError             what the peer sent breaks QMP (a remote error)
     |    +-- JSONParseError       the JSON stream itself is malformed or over a limit
     |    +-- MessageError         a JSON value that is not a valid QMP message
     +-- LocalProtocolError        our own side asked for something its state forbids
     +-- SchemaError               a message that the event schema does not accept
     |    +-- ValidationError      one member has the wrong type or value
     +-- CommandError              the server answered a command with an error
     +-- QMPConnectionError        connecting, negotiating or staying connected failed
     |    +-- GreetingError        the server's greeting was missing or malformed
     |    +-- ConnectionLost       the connection ended; pending work cannot finish
     +-- QMPTimeoutError           a bounded wait ran out (also a builtin TimeoutError)
     +-- EventsDropped             a listener's bounded queue overflowed (policy: end)
     +-- ConfigError               a bad command line, scenario or configuration file

Errors that come from input keep that input (``raw``) so that a log or a report
can show exactly what was received.
"""

from __future__ import annotations


class QMPEventsError(Exception):
    """Root of every error that qmpevents raises on purpose."""


class ProtocolError(QMPEventsError):
    """The peer broke the QMP protocol; ``raw`` holds the offending input."""

    def __init__(self, message: str, raw: bytes | None = None) -> None:
        super().__init__(message)
        self.raw = raw


RemoteProtocolError = ProtocolError
"""The name that says whose fault it is: the peer's (h11's local/remote split)."""


class LocalProtocolError(QMPEventsError):
    """This side misused a protocol session: a transition its state does not allow.

    A bug of the caller, never something the peer sent; so it is not a
    :class:`ProtocolError`, and code that counts the peer's violations never
    counts it.
    """


class JSONParseError(ProtocolError):
    """Malformed JSON or a stream limit hit.

    ``desc`` is worded exactly as QEMU words it (``JSON parse error, ...``), so a
    server can send it back unchanged. ``line`` and ``column`` (1-based) locate the
    problem in the stream when the framer tracks positions.
    """

    def __init__(self, desc: str, raw: bytes | None = None, line: int = 0, column: int = 0) -> None:
        where = f"line {line}, column {column}: " if line else ""
        super().__init__(f"{where}{desc}", raw)
        self.desc = desc
        self.line = line
        self.column = column


class MessageError(ProtocolError):
    """A well-formed JSON value that is not a valid QMP message of its role."""


class SchemaError(QMPEventsError):
    """A message that the event schema does not accept."""


class ValidationError(SchemaError):
    """One member of an event is wrong.

    The message reads ``EVENT: path: problem``, for example
    ``QUORUM_REPORT_BAD: data.sector-num: expected int, got str``.
    """

    def __init__(self, event: str, path: str, problem: str, raw: bytes | None = None) -> None:
        super().__init__(f"{event}: {path}: {problem}" if path else f"{event}: {problem}")
        self.event = event
        self.path = path
        self.problem = problem
        self.raw = raw


class CommandError(QMPEventsError):
    """The server answered a command with ``{"error": {"class": ..., "desc": ...}}``."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"{command}: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


class QMPConnectionError(QMPEventsError):
    """Connecting, negotiating or staying connected failed."""


class GreetingError(QMPConnectionError):
    """The server's greeting was missing, late or malformed; ``raw`` holds it."""

    def __init__(self, message: str, raw: bytes | None = None) -> None:
        super().__init__(message)
        self.raw = raw


class ConnectionLost(QMPConnectionError):
    """The connection ended; whatever waited on it cannot complete."""


class QMPTimeoutError(QMPEventsError, TimeoutError):
    """A bounded wait ran out of time."""


class EventsDropped(QMPEventsError):
    """A listener's bounded queue overflowed under the ``disconnect`` policy."""

    def __init__(self, listener: str, dropped: int) -> None:
        super().__init__(f"listener {listener}: queue full, {dropped} event(s) dropped")
        self.listener = listener
        self.dropped = dropped


class ConfigError(QMPEventsError):
    """A bad command line, scenario or configuration file."""
