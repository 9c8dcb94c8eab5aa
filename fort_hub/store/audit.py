"""The tamper-evident audit log: an append-only hash chain in the fort store.

Each record's ``hash`` is SHA-256 over a canonical JSON encoding of its fields and the previous
record's hash. :meth:`AuditLog.record` returns only once the record is committed; callers that
get an exception must deny the action (fail closed). :meth:`AuditLog.verify` walks the chain and
names the first record that was altered, removed or reordered; the head row (``fort_audit_head``)
catches a truncated tail.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import SQLAlchemyError

from . import schema
from .auditsearch import like_escape, subject_clause
from .auditsql import (
    GENESIS,
    PG_CALL,
    SQLITE_HEAD,
    SQLITE_INSERT,
    SQLITE_SET_HEAD,
    chain,
    pg_params,
)
from .chainformat import compute_hash
from .core import StoreError, StoreUnavailable, _wrap, isoformat, utcnow

if TYPE_CHECKING:
    from .core import Store

MAX_FIELD = {"actor": 255, "action": 128, "request_id": 128, "client": 128}
#: most records appended in one group-commit transaction
MAX_BATCH = 500
#: what a record says happened: allowed, refused by policy, or allowed but failed while being
#: carried out (e.g. a query the engine could not run); the chain hashes it like any text
DECISIONS = ("allow", "deny", "failed")
#: keys of ``details`` that name the user an action was done to (see :meth:`AuditLog.query`)


class AuditError(StoreError):
    """The audit record could not be committed. The action it describes must not happen."""


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: str
    actor: str
    action: str
    resource: str = ""
    decision: str = "allow"
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""
    client: str = ""
    prev_hash: str = GENESIS
    hash: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: connections inherited over fork: kept referenced so they are never closed from the child
_ABANDONED: list = []
_FORK_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _FORK_LOCK
    _FORK_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Pending:
    """One record waiting for the group commit."""

    __slots__ = ("done", "error", "fields", "result")

    def __init__(self, fields: dict[str, Any]):
        self.fields = fields
        self.done = False
        self.result: AuditRecord | None = None
        self.error: BaseException | None = None


def _pg_records(fields: list[dict[str, Any]], rows) -> list[AuditRecord]:
    return [
        AuditRecord(seq=seq, **f, prev_hash=prev, hash=digest)
        for f, (seq, digest, prev) in zip(fields, rows, strict=True)
    ]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.checked} records, chain intact"
        return (
            f"TAMPERED at seq {self.first_bad_seq}: {self.problem} ({self.checked} records checked)"
        )


def _row_to_record(row) -> AuditRecord:
    m = row._mapping
    try:
        details = json.loads(m["details"])
    except (TypeError, ValueError):
        details = {"_unparseable": m["details"]}
    return AuditRecord(
        seq=m["seq"], ts=m["ts"], actor=m["actor"], action=m["action"], resource=m["resource"],
        decision=m["decision"], reason=m["reason"], details=details, request_id=m["request_id"],
        client=m["client"], prev_hash=m["prev_hash"], hash=m["hash"],
    )  # fmt: skip


def _fields(
    actor: str,
    action: str,
    resource: str = "",
    decision: str = "allow",
    reason: str = "",
    details: dict[str, Any] | None = None,
    request_id: str | None = None,
    client: str = "",
) -> dict[str, Any]:
    """One record's fields as they are hashed and stored (seq and prev_hash come at commit)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be 'allow', 'deny' or 'failed', not {decision!r}")
    return {
        "ts": isoformat(utcnow()),
        "actor": str(actor)[: MAX_FIELD["actor"]],
        "action": str(action)[: MAX_FIELD["action"]],
        "resource": str(resource),
        "decision": decision,
        "reason": str(reason),
        "details": json.loads(json.dumps(details or {}, default=str)),
        "request_id": str(request_id or uuid.uuid4().hex)[: MAX_FIELD["request_id"]],
        "client": str(client or "")[: MAX_FIELD["client"]],
    }


class AuditLog:
    """Repository over ``fort_audit_log``; reach it as ``store.audit``."""

    def __init__(self, store: Store):
        self.store = store
        self._conn = None
        self._observers: list[Callable[[str, str, float, bool], None]] = []
        self._reset_after_fork()

    def add_observer(self, observer: Callable[[str, str, float, bool], None]) -> None:
        """Call ``observer(action, decision, seconds, committed)`` after each record's commit
        (or failure) with the seconds it took, from the recording thread (metrics)."""
        self._observers.append(observer)

    def record(
        self,
        actor: str,
        action: str,
        resource: str = "",
        decision: str = "allow",
        reason: str = "",
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        client: str = "",
    ) -> AuditRecord:
        """Append one record and return it once durably committed.

        Raises :class:`AuditError` when it could not be committed: the caller must then deny.

        Concurrent callers in one process (threads, or coroutines through :meth:`arecord`) are
        group-committed: records that arrive while a commit is in flight are appended together
        in the next transaction, and each caller returns only after the transaction holding its
        record has committed.
        """
        fields = _fields(actor, action, resource, decision, reason, details, request_id, client)
        return self._commit_observed([fields])[0]

    def record_many(self, records: list[dict[str, Any]]) -> list[AuditRecord]:
        """Append several records (each a dict of :meth:`record`'s arguments) in one
        transaction, in order, and return them once durably committed (:class:`AuditError`
        otherwise: none of the actions may happen). One commit instead of one per record."""
        return self._commit_observed([_fields(**r) for r in records])

    def _commit_observed(self, fields: list[dict[str, Any]]) -> list[AuditRecord]:
        """Group-commit *fields*, telling each observer (metrics) every record's outcome."""
        if not self._observers:
            return self._group_commit(fields)
        started, committed = time.perf_counter(), False
        try:
            result = self._group_commit(fields)
            committed = True
            return result
        finally:
            seconds = time.perf_counter() - started
            for f in fields:
                for observe in self._observers:
                    observe(f["action"], f["decision"], seconds, committed)

    # ----- the write path ------------------------------------------------------------------------
    #
    # Leader/follower group commit: every caller queues its record. If no batch is being
    # written, the caller becomes the leader: it takes everything queued (up to MAX_BATCH) and
    # appends it in ONE transaction, outside the lock; callers that arrive meanwhile wait on the
    # condition and, when woken, either find their record done or lead the next batch. A strictly
    # sequential caller pays one transaction per record, as before; N concurrent callers share
    # one commit (one fsync) per batch. Across processes the chain is serialized by the
    # database (SQLite's write lock taken at BEGIN IMMEDIATE, a PostgreSQL advisory lock).

    def _reset_after_fork(self) -> None:
        # a child process must not touch its parent's connection (not even to close it)
        if self._conn is not None:
            _ABANDONED.append(self._conn)
        self._pid = os.getpid()
        self._queue: list[list[_Pending]] = []  # units (one per record or record_many call)
        self._cond = threading.Condition(threading.Lock())
        self._leading = False  # a thread is writing a batch (only it uses self._conn)
        self._conn = None

    def close(self) -> None:
        """Return the writer connection (called by :meth:`Store.dispose`)."""
        if self._pid == os.getpid() and self._conn is not None:
            with self._cond:
                while self._leading:
                    self._cond.wait()
                self._drop_connection(invalidate=False)

    def _drop_connection(self, invalidate: bool = True) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if invalidate:
                conn.invalidate()
            else:
                if self.store.dialect == "postgresql":
                    conn.driver_connection.execute("RESET lock_timeout")
                    conn.driver_connection.autocommit = False  # as the pool expects it back
                conn.close()
        except Exception:  # noqa: S110 - the connection is being thrown away anyway
            pass

    def _writer_connection(self):
        """The leader's own DBAPI connection, kept between batches (only the leader uses it)."""
        if self._conn is not None:
            driver = self._conn.driver_connection
            if not (getattr(driver, "closed", False) or getattr(driver, "broken", False)):
                return self._conn
            self._drop_connection()
        self._conn = self.store.engine.raw_connection()
        if self.store.dialect == "postgresql":
            driver = self._conn.driver_connection
            driver.autocommit = True
            # a writer stuck behind a lock fails closed instead of hanging the caller
            driver.execute(f"SET lock_timeout = {int(self.store.busy_timeout_ms)}")
        return self._conn

    def _group_commit(self, records: list[dict[str, Any]]) -> list[AuditRecord]:
        if self._pid != os.getpid():
            with _FORK_LOCK:
                if self._pid != os.getpid():
                    self._reset_after_fork()
        pendings = [_Pending(fields) for fields in records]
        cond = self._cond
        with cond:
            self._queue.append(pendings)  # one unit: written in one transaction, or not at all
            while not all(p.done for p in pendings):
                if self._leading:  # a batch is being written: wait for it, then look again
                    cond.wait()
                    continue
                self._leading = True
                batch = self._take_batch()
                cond.release()
                try:
                    self._write(batch)
                finally:
                    cond.acquire()
                    self._leading = False
                    cond.notify_all()
        for pending in pendings:
            if pending.error is not None:
                raise pending.error
        return [p.result for p in pendings]

    def _take_batch(self) -> list[list[_Pending]]:
        """Whole units from the queue, up to MAX_BATCH records (at least one unit, whatever its
        size: a unit is never split across transactions). Called with the lock held."""
        batch, size = [], 0
        while self._queue and (not batch or size + len(self._queue[0]) <= MAX_BATCH):
            unit = self._queue.pop(0)
            batch.append(unit)
            size += len(unit)
        return batch

    def _write(self, batch: list[list[_Pending]]) -> None:
        """Commit *batch* (units of records) in one transaction; on a data error, retry its
        units one by one so one bad unit cannot make the others fail (a unit fails whole: the
        records of one ``record_many`` call). Marks every item done."""
        items = [p for unit in batch for p in unit]
        try:
            try:
                results = self._append(items)
            except StoreUnavailable:
                raise
            except StoreError:
                if len(batch) == 1:
                    raise
                for unit in batch:
                    self._write([unit])
                return
            for item, rec in zip(items, results, strict=True):
                item.result = rec
        except StoreError as e:
            err = AuditError(f"audit record not written, action refused: {e}")
            err.__cause__ = e
            for item in items:
                item.error = err
        except Exception as e:  # never leave a caller waiting on an unexpected error
            err = AuditError(f"audit record not written, action refused: {type(e).__name__}: {e}")
            err.__cause__ = e
            for item in items:
                item.error = err
        finally:
            for item in items:
                if item.result is None and item.error is None:  # interrupted (BaseException)
                    item.error = AuditError("audit record not written, action refused: interrupted")
                item.done = True

    def _append(self, batch: list[_Pending]) -> list[AuditRecord]:
        dbapi = self.store.engine.dialect.dbapi
        try:
            conn = self._writer_connection()
            if self.store.dialect == "postgresql":
                return self._append_postgresql(conn, batch)
            return self._append_sqlite(conn, batch)
        except SQLAlchemyError as e:
            self._drop_connection()
            raise _wrap(e) from e
        except dbapi.Error as e:
            first_line = (str(e) or type(e).__name__).splitlines()[0]
            driver = self._conn.driver_connection if self._conn is not None else None
            if isinstance(e, dbapi.OperationalError) or getattr(driver, "closed", False):
                self._drop_connection()
                raise StoreUnavailable(f"the fort store is unavailable: {first_line}") from e
            raise StoreError(f"fort store error: {first_line}") from e

    @staticmethod
    def _append_sqlite(conn, batch: list[_Pending]) -> list[AuditRecord]:
        # the connection is in autocommit mode (see core._sqlite_engine); BEGIN IMMEDIATE takes
        # the database's write lock, waiting up to busy_timeout for other writers
        cur = conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                head = cur.execute(SQLITE_HEAD).fetchone()
                full, rows, last = chain(head, [item.fields for item in batch])
                cur.executemany(SQLITE_INSERT, rows)
                cur.execute(SQLITE_SET_HEAD, last)
                cur.execute("COMMIT")
            except BaseException:
                if conn.driver_connection.in_transaction:
                    cur.execute("ROLLBACK")
                raise
        finally:
            cur.close()
        return [AuditRecord(**f) for f in full]

    @staticmethod
    def _append_postgresql(conn, batch: list[_Pending]) -> list[AuditRecord]:
        # one round trip: the server-side function takes the advisory lock, chains the records
        # (SHA-256 over the same canonical bytes, spliced around prev_hash and seq), inserts
        # them and moves the head; in autocommit mode that statement is its own transaction and
        # returns only once committed (synchronous_commit as the server is configured)
        fields = [item.fields for item in batch]
        cur = conn.cursor()
        try:
            cur.execute(PG_CALL, pg_params(fields))
            rows = cur.fetchall()
        finally:
            cur.close()
        return _pg_records(fields, rows)

    def record_with(
        self,
        change: Callable[[Any], Any],
        records: list[dict[str, Any]] | Callable[[Any], list[dict[str, Any]]],
    ):
        """Run ``change(conn)`` in one store transaction and, when it returns a true value,
        append *records* (dicts of :meth:`record`'s arguments, or a function of the change's
        value returning them: a decision made in the transaction and its record) to the chain
        in that same transaction: the change and its records are committed together, or
        neither is (:class:`AuditError`). Returns ``(change's value, the records committed)``;
        no record is written when the value is false (e.g. a conditional update that found
        nothing).

        One commit instead of two where a state change and its audit records go together
        (e.g. a query's final state and its ``query.complete`` record). Not group-committed:
        the records wait for the database's write lock (SQLite) or the chain's advisory lock
        (PostgreSQL, after the change's own locks), like every writer of the chain."""
        started, value, fields, out, committed = time.perf_counter(), None, [], [], False
        try:
            with self.store.transaction() as conn:
                value = change(conn)
                if value:
                    fields = [_fields(**r) for r in (records(value) if callable(records)
                                                      else records)]  # fmt: skip
                if fields:
                    out = self._append_in(conn, fields)
            committed = bool(out)  # the transaction's commit returned
        except StoreError as e:
            raise AuditError(f"audit record not written, action refused: {e}") from e
        finally:
            seconds = time.perf_counter() - started
            for f in fields:
                for observe in self._observers:
                    observe(f["action"], f["decision"], seconds, committed)
        return value, out

    def _append_in(self, conn, fields: list[dict[str, Any]]) -> list[AuditRecord]:
        """Chain *fields* inside the caller's transaction *conn* (a SQLAlchemy connection)."""
        if self.store.dialect == "postgresql":
            # a writer stuck behind the chain's lock fails closed instead of hanging (as the
            # group-commit writer's connection does)
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(self.store.busy_timeout_ms)}")
            rows = conn.exec_driver_sql(PG_CALL, pg_params(fields)).all()
            return _pg_records(fields, rows)
        full, rows, last = chain(conn.exec_driver_sql(SQLITE_HEAD).first(), fields)
        conn.exec_driver_sql(SQLITE_INSERT, rows)
        conn.exec_driver_sql(SQLITE_SET_HEAD, last)
        return [AuditRecord(**f) for f in full]

    async def arecord(self, *args: Any, **kwargs: Any) -> AuditRecord:
        """:meth:`record` from async code, without blocking the event loop."""
        return await self.store.run(self.record, *args, **kwargs)

    async def arecord_many(self, records: list[dict[str, Any]]) -> list[AuditRecord]:
        """:meth:`record_many` from async code."""
        return await self.store.run(self.record_many, records)

    def query(
        self,
        user: str | None = None,
        action: str | None = None,
        since: dt.datetime | str | None = None,
        limit: int = 100,
        before_seq: int | None = None,
        resource: str | None = None,
        after_seq: int | None = None,
        actor: str | None = None,
    ) -> list[AuditRecord]:
        """Newest first. *user* matches what the user did (the actor) and what was done to them
        (:func:`subject_clause`), *actor* only what they did; *action* is a prefix (``spawn`` finds ``spawn.start`` and
        ``spawn.stop``); *resource* is exact. Page older with *before_seq* (the smallest seq of
        the previous page), newer with *after_seq* (its largest). Only chain records
        (``seq > 0``, what :meth:`verify` walks) are ever returned."""
        t = schema.audit_log
        stmt = select(t).where(t.c.seq > 0)
        if user:
            stmt = stmt.where(or_(t.c.actor == user, subject_clause(t, user)))
        if actor:
            stmt = stmt.where(t.c.actor == actor)
        if action:
            stmt = stmt.where(t.c.action.like(like_escape(action) + "%", escape="\\"))
        if resource:
            stmt = stmt.where(t.c.resource == resource)
        if since:
            stmt = stmt.where(t.c.ts >= (since if isinstance(since, str) else isoformat(since)))
        if before_seq is not None:
            stmt = stmt.where(t.c.seq < before_seq)
        n = max(1, min(int(limit), 10_000))
        if after_seq is not None:  # the page just newer than after_seq, returned newest first
            stmt = stmt.where(t.c.seq > after_seq).order_by(t.c.seq.asc()).limit(n)
            with self.store.reading() as conn:
                return [_row_to_record(r) for r in conn.execute(stmt)][::-1]
        stmt = stmt.order_by(t.c.seq.desc()).limit(n)
        with self.store.reading() as conn:
            return [_row_to_record(r) for r in conn.execute(stmt)]

    def actions(self) -> list[str]:
        """The distinct action names in the log (for filter hints)."""
        t = schema.audit_log
        with self.store.reading() as conn:
            return sorted(
                r[0] for r in conn.execute(select(t.c.action).where(t.c.seq > 0).distinct())
            )

    def iter_all(self, batch: int = 5000) -> Iterator[AuditRecord]:
        """Every record, oldest first, read in batches."""
        t = schema.audit_log
        after = 0
        while True:
            with self.store.reading() as conn:
                rows = conn.execute(
                    select(t).where(t.c.seq > after).order_by(t.c.seq).limit(batch)
                ).all()
            if not rows:
                return
            for r in rows:
                yield _row_to_record(r)
            after = rows[-1]._mapping["seq"]

    def head(self) -> tuple[int, str]:
        with self.store.reading() as conn:
            row = conn.execute(select(schema.audit_head.c.seq, schema.audit_head.c.hash)).first()
        return (row[0], row[1]) if row else (0, GENESIS)

    def verify(self, expect_head: tuple[int, str] | None = None) -> VerifyResult:
        """Walk the chain. Detects an edited field (hash mismatch), a removed record (gap in
        seq), reordered records (prev_hash mismatch) and a truncated tail (the head row, or
        *expect_head* kept elsewhere, e.g. printed earlier by ``fort-hub audit head``)."""
        t = schema.audit_log
        with self.store.reading() as conn:
            outside, lowest = conn.execute(
                select(func.count(), func.min(t.c.seq)).where(t.c.seq <= 0)
            ).one()
        if outside:  # only in a store created before the seq > 0 check (schema.py)
            return VerifyResult(
                False, 0, lowest, f"{outside} record(s) with seq <= 0 are outside the chain: "
                "forged (fort-hub never writes them; no reader shows them)",
            )  # fmt: skip
        expected_seq, prev, n = 1, GENESIS, 0
        for rec in self.iter_all():
            n += 1
            problem = None
            if rec.seq != expected_seq:
                problem = f"record {expected_seq} is missing (the next one is {rec.seq})"
                rec_seq = expected_seq
            else:
                rec_seq = rec.seq
                if rec.prev_hash != prev:
                    problem = (
                        "prev_hash does not match the previous record's hash: records were "
                        "removed or reordered, or the previous record was altered and re-hashed"
                    )
                elif compute_hash(rec.as_dict()) != rec.hash:
                    problem = "the hash does not match the record's contents: altered"
                elif expect_head and rec.seq == expect_head[0] and rec.hash != expect_head[1]:
                    problem = "the record does not match the expected head"
            if problem:
                return VerifyResult(False, n, rec_seq, problem)
            prev, expected_seq = rec.hash, rec.seq + 1
        last = expected_seq - 1
        for label, head in (("head row", self.head()), ("expected head", expect_head)):
            if head is None:
                continue
            h_seq, h_hash = head
            if h_seq > last:
                return VerifyResult(
                    False,
                    n,
                    last + 1,
                    f"records {last + 1}..{h_seq} were removed ({label} is at {h_seq})",
                )
            if label == "head row" and h_seq and (h_seq < last or h_hash != prev):
                return VerifyResult(False, n, h_seq, f"the {label} does not match the last record")
        return VerifyResult(True, n)
