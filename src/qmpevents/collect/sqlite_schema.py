"""The SQLite layout of the event history, its forward migrations, and where it lives.

The database records its layout version in ``schema_version``; opening an older
database applies the missing migrations in order, in one transaction each, so a
database is always at a version this code knows. A database written by a newer
qmpevents (a version above :data:`SCHEMA_VERSION`) is refused rather than guessed at.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from qmpevents.errors import ConfigError

__all__ = [
    "ACTION_MIGRATIONS",
    "ACTION_VERSION",
    "ARCHIVE_MIGRATIONS",
    "ARCHIVE_VERSION",
    "CONNECTION_MIGRATIONS",
    "CONNECTION_VERSION",
    "LATEST_GAP_STATE",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "connect",
    "default_db_path",
    "has_archive",
    "has_connections",
    "migrate",
    "migrate_actions",
    "migrate_archive",
    "migrate_connections",
    "unwritable_reason",
    "version_of",
]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the two record tables. A gap is identified by (vm, started) so that closing
    # it is an upsert of the same key.
    (
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            vm TEXT NOT NULL,
            name TEXT NOT NULL,
            qemu_seconds INTEGER NOT NULL,
            qemu_micros INTEGER NOT NULL,
            received_at REAL NOT NULL,
            raw BLOB NOT NULL
        )""",
        """CREATE TABLE gaps (
            id INTEGER PRIMARY KEY,
            vm TEXT NOT NULL,
            started REAL NOT NULL,
            ended REAL,
            reason TEXT NOT NULL,
            UNIQUE (vm, started)
        )""",
    ),
    # 2: QEMU's time as one sortable column, and indexes for the history queries
    # (by VM, by event name, by time range); existing rows are backfilled.
    (
        "ALTER TABLE events ADD COLUMN qemu_ts REAL",
        "UPDATE events SET qemu_ts = qemu_seconds + qemu_micros / 1000000.0",
        "CREATE INDEX events_by_time ON events (qemu_ts)",
        "CREATE INDEX events_by_vm ON events (vm, qemu_ts)",
        "CREATE INDEX events_by_name ON events (name, qemu_ts)",
        "CREATE INDEX gaps_by_time ON gaps (started)",
    ),
    # 3: the newest receive time of a VM in O(log n), which a collector restarted after
    # SIGKILL needs for the gap of the time it was not running (History.left_connected).
    ("CREATE INDEX events_by_vm_received ON events (vm, received_at)",),
    # 4: the outbox (see outbox_journal.py). Events are journaled by their own row id;
    # a gap's rows change when it closes, so each write of a gap is journaled as it was,
    # placed after the newest event committed before it. The cursor of each consumer
    # (``nats``) says how far it has published.
    (
        """CREATE TABLE outbox_gaps (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            after_event INTEGER NOT NULL,
            vm TEXT NOT NULL,
            started REAL NOT NULL,
            ended REAL,
            reason TEXT NOT NULL
        )""",
        """CREATE TABLE outbox_cursor (
            consumer TEXT PRIMARY KEY,
            event_id INTEGER NOT NULL,
            gap_seq INTEGER NOT NULL
        )""",
    ),
)
"""Migration ``i`` (0-based) takes a database from version ``i`` to ``i + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The layout version this code writes and reads."""


ARCHIVE_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: a central archive's side tables (qmpevents collect nats://...). Each archived
    # event has its JetStream message id, unique (a redelivery never makes a second
    # row), and the host whose collector published it; each gap its host.
    (
        """CREATE TABLE archive_events (
            event_id INTEGER PRIMARY KEY,
            msg_id TEXT NOT NULL UNIQUE,
            host TEXT
        )""",
        "CREATE INDEX archive_events_by_host ON archive_events (host)",
        """CREATE TABLE archive_gaps (
            gap_id INTEGER PRIMARY KEY,
            host TEXT
        )""",
        "CREATE INDEX archive_gaps_by_host ON archive_gaps (host)",
    ),
)
"""The archive's own layout, versioned apart (``archive_version``) from the history's:
a host's history never has these tables; a central archive's has both."""

ARCHIVE_VERSION = len(ARCHIVE_MIGRATIONS)


ACTION_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: one row per action run (collect/actions), its steps as a JSON array of
    # {"kind", "target", "duration", "ok", "error"}.
    (
        """CREATE TABLE action_runs (
            id INTEGER PRIMARY KEY,
            rule TEXT NOT NULL,
            vm TEXT NOT NULL,
            event TEXT NOT NULL,
            event_ts REAL NOT NULL,
            started REAL NOT NULL,
            duration REAL NOT NULL,
            outcome TEXT NOT NULL,
            steps TEXT NOT NULL
        )""",
        "CREATE INDEX action_runs_by_vm ON action_runs (vm, started)",
    ),
)
"""The action records' layout, versioned apart (``action_version``) like the archive's."""

ACTION_VERSION = len(ACTION_MIGRATIONS)


LATEST_GAP_STATE = (
    "SELECT vm, ended IS NOT NULL AS connected, COALESCE(ended, started) AS since FROM gaps AS g"
    " WHERE started = (SELECT MAX(started) FROM gaps WHERE vm = g.vm)"
)
"""``(vm, connected, since)`` as a history without ``connections`` implies it: a VM whose
latest gap is closed was connected from its end on (a collector that stops opens a
gap for each VM it is connected to), one whose latest gap is open was not."""

CONNECTION_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: each VM's connection as the collector last recorded it (ConnectionState):
    # connected or not, since when; written in the transaction of the gap it opens or
    # closes. A collector restarted after SIGKILL reads it (History.left_connected).
    # An older history's VMs are filled in from their latest gaps, as it implied them.
    (
        """CREATE TABLE connections (
            vm TEXT PRIMARY KEY,
            connected INTEGER NOT NULL,
            since REAL NOT NULL
        )""",
        f"INSERT INTO connections (vm, connected, since) {LATEST_GAP_STATE}",
    ),
)
"""The connection states' layout, versioned apart (``connection_version``) like the
archive's; a history gets it from its collector's writer (:mod:`.sqlite_store`)."""

CONNECTION_VERSION = len(CONNECTION_MIGRATIONS)


def has_connections(conn: sqlite3.Connection) -> bool:
    """Whether the database has the connection states (an older one may not, yet)."""
    return _has_table(conn, "connections")


def migrate_connections(conn: sqlite3.Connection) -> int:
    """Create or update the connection states of a writable connection; return the old version.

    The history's own migrations must have run first (:func:`connect`).
    """
    return _migrate_part(conn, "connection", CONNECTION_MIGRATIONS)


def migrate_actions(conn: sqlite3.Connection) -> int:
    """Create or update the action tables of a writable connection; return the old version."""
    return _migrate_part(conn, "action", ACTION_MIGRATIONS)


def has_archive(conn: sqlite3.Connection) -> bool:
    """Whether the database is a central archive (has the archive tables)."""
    return _has_table(conn, "archive_events")


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(query, (name,)).fetchone() is not None


def migrate_archive(conn: sqlite3.Connection) -> int:
    """Create or update the archive tables of a writable connection; return the old version.

    The history's own migrations must have run first (:func:`connect`).
    """
    return _migrate_part(conn, "archive", ARCHIVE_MIGRATIONS)


def _migrate_part(
    conn: sqlite3.Connection, part: str, migrations: tuple[tuple[str, ...], ...]
) -> int:
    """Bring the ``part`` tables (versioned in ``<part>_version``) to ``len(migrations)``.

    Each step commits on its own; returns the version found.
    """
    path = Path(conn.execute("PRAGMA database_list").fetchone()[2])
    table = f"{part}_version"  # one of a few fixed names, never user input
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)")
    row = conn.execute(f"SELECT version FROM {table}").fetchone()
    current = int(row[0]) if row else 0
    if current > len(migrations):
        raise ConfigError(
            f"{path}: {part} tables are at version {current}, this qmpevents knows up to "
            f"{len(migrations)}; upgrade qmpevents to write it"
        )
    for version in range(current, len(migrations)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in migrations[version]:
                conn.execute(statement)
            conn.execute(f"DELETE FROM {table}")
            conn.execute(f"INSERT INTO {table} (version) VALUES (?)", (version + 1,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return current


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/qmpevents/events.db``, or ``~/.local/share/qmpevents/events.db``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "qmpevents" / "events.db"


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to the history at ``path``, WAL mode, at :data:`SCHEMA_VERSION`.

    For writing, the parent directory is created and the database migrated. A
    read-only connection never creates or migrates anything; it raises
    ``sqlite3.OperationalError`` when the file is missing. Both raise
    :class:`~qmpevents.errors.ConfigError` for a database newer than this code and
    for a file that is not a qmpevents history (not SQLite, or another program's).

    ``path`` is always a file path, never an SQLite URI: ``file:ev.db?mode=memory`` is
    the file of that name (SQLite is given the absolute path, which no URI starts like).
    """
    if readonly:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            version = _version_or_refuse(conn, path)
            if version == 0:
                raise ConfigError(f"{path}: not a qmpevents history database (no schema version)")
            _check_not_newer(path, version)
        except BaseException:
            conn.close()
            raise
        return conn
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: transactions are explicit (BEGIN ... COMMIT), one per batch.
    conn = sqlite3.connect(os.path.abspath(path), isolation_level=None, check_same_thread=False)
    try:
        _version_or_refuse(conn, path)  # before anything writes to a foreign file
        conn.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL loses nothing when the process dies (SIGKILL); only an
        # OS crash or power loss can lose the last commits, and it costs no fsync per batch.
        conn.execute("PRAGMA synchronous=NORMAL")
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def unwritable_reason(path: Path, error: BaseException) -> str:
    """Why the history at ``path`` could not be opened for writing, ``error`` being what failed.

    Names the culprit when the path itself is wrong (a directory, a parent that is a
    file); otherwise the error's own words.
    """
    if str(path) in ("", "."):
        return "an empty path is not a file"
    if path.is_dir():
        return "it is a directory"
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is not a directory"
            break
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error) or type(error).__name__


def version_of(conn: sqlite3.Connection) -> int:
    """The layout version of the database (0 for an empty one)."""
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not has_table:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def _version_or_refuse(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version; ConfigError for a file that is not an SQLite database at all.

    Such a file, or another program's database, is a permanent problem: retrying
    would only lose every record while looking busy.
    """
    try:
        version = version_of(conn)
    except sqlite3.DatabaseError as error:
        if isinstance(error, sqlite3.OperationalError):
            raise  # locked, unreadable: may pass
        raise ConfigError(f"{path}: not a qmpevents history database ({error})") from None
    if version == 0:
        foreign = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        if foreign:
            raise ConfigError(
                f"{path}: not a qmpevents history database (it has tables: "
                f"{', '.join(sorted(foreign))})"
            )
    return version


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply the migrations that take the database to ``target``; return the old version."""
    path = Path(conn.execute("PRAGMA database_list").fetchone()[2])
    current = _version_or_refuse(conn, path)
    _check_not_newer(path, current)
    for version in range(current, target):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return current


def _check_not_newer(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{path}: history database is at schema version {version}, this qmpevents "
            f"knows up to {SCHEMA_VERSION}; upgrade qmpevents to read it"
        )
