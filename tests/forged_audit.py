"""Put an audit store back in the shape fort-hub created before #10 (no ``seq > 0`` check),
and forge a row there, as someone with write access to the database could."""

from __future__ import annotations

from sqlalchemy import Column, MetaData, Table, select, text

from fort_hub.store import schema

FORGED_REASON = "admin added mallory to admins"


def legacy_audit_table(store) -> None:
    """Drop the ``seq > 0`` guarantee (the constraint or SQLite's triggers), keeping the rows."""
    with store.transaction() as conn:
        if store.dialect == "postgresql":
            conn.execute(text(
                "ALTER TABLE fort_audit_log DROP CONSTRAINT ck_fort_audit_log_seq_positive"
            ))  # fmt: skip
            return
        rows = [dict(r) for r in conn.execute(select(schema.audit_log)).mappings()]
        conn.execute(text("DROP TABLE fort_audit_log"))  # its indexes and triggers go with it
        cols = [
            Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable,
                   autoincrement=False)
            for c in schema.audit_log.columns
        ]  # fmt: skip
        old = Table("fort_audit_log", MetaData(), *cols)
        old.create(conn)
        if rows:
            conn.execute(old.insert(), rows)


def forge_row(store, seq: int = 0, actor: str = "admin") -> None:
    """Insert "admin added mallory to admins" at *seq*, outside the hash chain."""
    with store.transaction() as conn:
        conn.execute(
            schema.audit_log.insert().values(
                seq=seq, ts="2026-12-01T10:00:00.000000+00:00", actor=actor,
                action="groups.add", resource="groups/admins/members/mallory", decision="allow",
                reason=FORGED_REASON, details='{"group": "admins", "user": "mallory"}',
                request_id="", client="", prev_hash="0" * 64, hash="f" * 64,
            )
        )  # fmt: skip
