"""One SQLAlchemy-backed store for everything fort-hub keeps: SQLite (embedded default) or
PostgreSQL (production), chosen by URL."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import time
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, create_engine, event, inspect, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError, InvalidatePoolError, SQLAlchemyError

from . import schema

log = logging.getLogger("fort_hub.store")

#: every engine of this process, so that a forked child drops (without closing) the pooled
#: connections it inherited, as SQLAlchemy recommends
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forget_inherited_connections() -> None:
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_connections)
T = TypeVar("T")
UTC = dt.UTC


class StoreError(RuntimeError):
    """The store could not be reached or refused the operation. Callers fail closed."""


class StoreUnavailable(StoreError):
    """The database is down or unreachable."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def isoformat(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` / ``postgres://`` and use the psycopg 3 driver for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    u = make_url(url)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_engine(url: str, busy_timeout_ms: int) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if make_url(url).database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # durable: fsync at every commit
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # take the write lock at BEGIN, so read-then-write transactions serialize cleanly;
        # read-only transactions (Store.reading) do not block writers
        if conn.get_execution_options().get("fort_readonly"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


#: a pooled PostgreSQL connection left unused for longer than this many seconds is pinged before
#: it is handed out again (the ``Store(ping_after_idle_s=...)`` default)
PING_AFTER_IDLE_S = 5.0


def _postgresql_engine(url: str, ping_after_idle_s: float) -> Engine:
    """A pooled PostgreSQL engine that pings a connection only when it has sat idle for
    *ping_after_idle_s*: SQLAlchemy's ``pool_pre_ping`` pings at every checkout, about 0.1 ms of
    CPU per transaction (docs/benchmarks.md, Scale, parts 8 and 9), for connections a busy pool
    used a moment ago. A connection whose ping finds the server gone is replaced and the rest of
    the pool dropped (as ``pool_pre_ping`` does); any other ping error drops that connection
    only. After a server restart, the transactions already under way on connections used within
    the window fail (StoreUnavailable: their callers fail closed) and the first failure drops the
    pool, so the next ones connect afresh."""
    engine = create_engine(
        url, pool_size=5, max_overflow=10, connect_args={"connect_timeout": 5},
    )  # fmt: skip

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn, record):
        if record is not None:
            record.info["fort_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn, record, _proxy):
        since = record.info.pop("fort_idle_since", None)
        if since is None or time.monotonic() - since < ping_after_idle_s:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as e:
            gone = engine.dialect.is_disconnect(e, dbapi_conn, None)
            error = InvalidatePoolError if gone else DisconnectionError
            raise error(f"idle connection failed its ping: {e}") from e

    return engine


class Store:
    """The fort store. ``Store("sqlite:///fort.sqlite")`` or
    ``Store("postgresql://fort@db/fort")``.

    Repositories hang off it: :attr:`audit` (the tamper-evident audit log) and :attr:`usage`
    (atomic counters for quotas and rate limits). Services add their own small repositories over
    the tables in :mod:`fort_hub.store.schema`, using :meth:`transaction`.

    Every method is synchronous; from tornado handlers use :meth:`run` (a thread pool) so the
    event loop never blocks on the database.

    On PostgreSQL a pooled connection unused for *ping_after_idle_s* seconds is pinged before it
    is used again, and replaced if the server dropped it (:func:`_postgresql_engine`).
    """

    def __init__(
        self, url: str, *, create: bool = True, busy_timeout_ms: int = 30_000,
        ping_after_idle_s: float = PING_AFTER_IDLE_S,
    ):  # fmt: skip
        self.url = normalize_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        #: how long a writer waits for another writer's lock (SQLite busy_timeout; PostgreSQL
        #: lock_timeout of the audit writer) before failing closed
        self.busy_timeout_ms = int(busy_timeout_ms)
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(self.url, busy_timeout_ms)
        elif self.dialect == "postgresql":
            self.engine = _postgresql_engine(self.url, ping_after_idle_s)
        else:
            raise StoreError(
                f"unsupported store URL {redact_url(self.url)!r}: use sqlite or postgresql"
            )
        _ENGINES.add(self.engine)
        self._read_options: dict[str, Any] = {"fort_readonly": True}
        if self.dialect == "postgresql":
            self._read_options["isolation_level"] = "AUTOCOMMIT"
        from .audit import AuditLog
        from .usage import UsageCounters

        self.audit = AuditLog(self)
        self.usage = UsageCounters(self)
        if create:
            self.create_schema()

    def __repr__(self) -> str:
        return f"Store({redact_url(self.url)!r})"

    @property
    def insert(self) -> Callable:
        """The dialect's ``insert`` (with ``on_conflict_do_*``)."""
        return postgresql.insert if self.dialect == "postgresql" else sqlite.insert

    @contextmanager
    def transaction(self):
        """A connection in one transaction; commits on success. Database errors become
        :class:`StoreUnavailable` (connection problems) or :class:`StoreError`."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise _wrap(e) from e

    @contextmanager
    def reading(self):
        """Like :meth:`transaction`, for reads only (takes no write lock on SQLite). On
        PostgreSQL the reads run in autocommit: at its READ COMMITTED level each statement
        takes its own snapshot inside a transaction too, so BEGIN and COMMIT around them were
        two round trips that changed nothing."""
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(**self._read_options)
                with conn.begin():
                    yield conn
        except SQLAlchemyError as e:
            raise _wrap(e) from e

    def create_schema(self) -> None:
        """Create missing tables (idempotent, safe with several processes starting at once)."""
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(7355608)"))
                schema.metadata.create_all(conn)
                schema.add_indexes(conn)
                schema.add_columns(conn)
                schema.upgrade_audit_log(conn, self.dialect)
                if self.dialect == "postgresql":
                    from .auditsql import install_functions

                    install_functions(conn)
                row = conn.execute(
                    select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
                ).first()
                if row is None:
                    conn.execute(
                        self.insert(schema.meta)
                        .values(key="schema_version", value=str(schema.SCHEMA_VERSION))
                        .on_conflict_do_nothing()
                    )
                elif int(row[0]) > schema.SCHEMA_VERSION:
                    raise StoreError(
                        f"the store at {redact_url(self.url)} has schema version {row[0]}, newer "
                        f"than this fort-hub ({schema.SCHEMA_VERSION}); upgrade fort-hub"
                    )
        except SQLAlchemyError as e:
            raise _wrap(e) from e

    def has_audit_log(self) -> bool:
        """Whether this store has an audit table (a store never opened by fort-hub has none)."""
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(fort_readonly=True)
                return inspect(conn).has_table(schema.audit_log.name)
        except SQLAlchemyError as e:
            raise _wrap(e) from e

    def ping(self) -> None:
        with self.transaction() as conn:
            conn.execute(text("SELECT 1"))

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call in the default thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))

    def dispose(self) -> None:
        self.audit.close()
        self.engine.dispose()

    def lock_exclusive(self, conn: Connection, key: int) -> None:
        """Serialize writers on *key* for the rest of the transaction (PostgreSQL advisory
        lock; SQLite already holds its write lock from ``BEGIN IMMEDIATE``)."""
        if self.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def _wrap(e: SQLAlchemyError) -> StoreError:
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(e, OperationalError) or (isinstance(e, DBAPIError) and e.connection_invalidated):
        return StoreUnavailable(f"the fort store is unavailable: {e.orig or e}".splitlines()[0])
    return StoreError(f"fort store error: {e}".splitlines()[0])
