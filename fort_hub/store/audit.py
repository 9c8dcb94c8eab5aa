"""The tamper-evident audit log: an append-only hash chain in the fort store.

Each record's ``hash`` is SHA-256 over a canonical JSON encoding of its fields and the previous
record's hash. :meth:`AuditLog.record` returns only once the record is committed; callers that
get an exception must deny the action (fail closed). :meth:`AuditLog.verify` walks the chain and
names the first record that was altered, removed or reordered; the head row (``fort_audit_head``)
catches a truncated tail.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from . import schema
from .core import StoreError, isoformat, utcnow

if TYPE_CHECKING:
    from .core import Store

GENESIS = "0" * 64
AUDIT_LOCK_KEY = 4242_0001
MAX_FIELD = {"actor": 255, "action": 128, "request_id": 128, "client": 128}


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


def canonical(fields: dict[str, Any]) -> bytes:
    """The bytes that are hashed: every field but ``hash``, as sorted compact JSON."""
    data = {k: v for k, v in fields.items() if k != "hash"}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(fields)).hexdigest()


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


class AuditLog:
    """Repository over ``fort_audit_log``; reach it as ``store.audit``."""

    def __init__(self, store: Store):
        self.store = store

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
        """
        if decision not in ("allow", "deny"):
            raise ValueError(f"decision must be 'allow' or 'deny', not {decision!r}")
        fields = {
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
        try:
            with self.store.transaction() as conn:
                self.store.lock_exclusive(conn, AUDIT_LOCK_KEY)
                head = conn.execute(
                    select(schema.audit_head.c.seq, schema.audit_head.c.hash).where(
                        schema.audit_head.c.id == 1
                    )
                ).first()
                seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
                full = {"seq": seq, **fields, "prev_hash": prev}
                digest = compute_hash(full)
                row = {
                    **full,
                    "details": json.dumps(fields["details"], sort_keys=True),
                    "hash": digest,
                }
                conn.execute(schema.audit_log.insert().values(**row))
                if head:
                    conn.execute(
                        schema.audit_head.update()
                        .where(schema.audit_head.c.id == 1)
                        .values(seq=seq, hash=digest)
                    )
                else:
                    conn.execute(schema.audit_head.insert().values(id=1, seq=seq, hash=digest))
        except StoreError as e:
            raise AuditError(f"audit record not written, action refused: {e}") from e
        return AuditRecord(**{**full, "hash": digest})

    async def arecord(self, *args: Any, **kwargs: Any) -> AuditRecord:
        """:meth:`record` from async code, without blocking the event loop."""
        return await self.store.run(self.record, *args, **kwargs)

    def query(
        self,
        user: str | None = None,
        action: str | None = None,
        since: dt.datetime | str | None = None,
        limit: int = 100,
        before_seq: int | None = None,
        resource: str | None = None,
    ) -> list[AuditRecord]:
        """Newest first. *user* matches the actor or a ``details.user``-free exact resource-less
        filter on actor only; page with *before_seq* (the smallest seq of the previous page)."""
        t = schema.audit_log
        stmt = select(t).order_by(t.c.seq.desc()).limit(max(1, min(int(limit), 10_000)))
        if user:
            stmt = stmt.where(t.c.actor == user)
        if action:
            stmt = stmt.where(t.c.action == action)
        if resource:
            stmt = stmt.where(t.c.resource == resource)
        if since:
            stmt = stmt.where(t.c.ts >= (since if isinstance(since, str) else isoformat(since)))
        if before_seq is not None:
            stmt = stmt.where(t.c.seq < before_seq)
        with self.store.reading() as conn:
            return [_row_to_record(r) for r in conn.execute(stmt)]

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
                    problem = "prev_hash does not match the previous record: removed or reordered"
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
