"""The SQL that appends records to the audit chain (:mod:`.audit`): SQLite's statements, run
under the database's write lock, and PostgreSQL's server-side function, which chains records
under an advisory lock in one statement; and the row and parameter shapes they take."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text

from .chainformat import canonical_parts, compute_hash

GENESIS = "0" * 64
AUDIT_LOCK_KEY = 4242_0001

COLUMNS = (
    "seq", "ts", "actor", "action", "resource", "decision", "reason", "details", "request_id",
    "client", "prev_hash", "hash",
)  # fmt: skip


def row_values(full: dict[str, Any], digest: str) -> tuple:
    row = {**full, "details": json.dumps(full["details"], sort_keys=True), "hash": digest}
    return tuple(row[c] for c in COLUMNS)


SQLITE_HEAD = "SELECT seq, hash FROM fort_audit_head WHERE id = 1"
SQLITE_INSERT = (
    f"INSERT INTO fort_audit_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
)
SQLITE_SET_HEAD = (
    "INSERT INTO fort_audit_head (id, seq, hash) VALUES (1, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash"
)

PG_TEXT_FIELDS = (
    "ts", "actor", "action", "resource", "decision", "reason", "details", "request_id", "client",
)  # fmt: skip
PG_ARRAYS = (*PG_TEXT_FIELDS, "pre", "mid", "suf")
PG_CALL = (
    "SELECT out_seq, out_hash, out_prev FROM fort_audit_append("
    + ", ".join(f"%({k})s::text[]" for k in PG_TEXT_FIELDS)
    + ", %(pre)s::bytea[], %(mid)s::bytea[], %(suf)s::bytea[])"
)

#: PostgreSQL: append records to the chain in one statement (installed by create_schema).
PG_APPEND_FUNCTION = f"""
CREATE OR REPLACE FUNCTION fort_audit_append(
    p_ts text[], p_actor text[], p_action text[], p_resource text[], p_decision text[],
    p_reason text[], p_details text[], p_request_id text[], p_client text[],
    p_pre bytea[], p_mid bytea[], p_suf bytea[])
RETURNS TABLE (out_seq bigint, out_hash text, out_prev text)
LANGUAGE plpgsql AS $fort$
DECLARE
    h_seq bigint;
    h_hash text;
BEGIN
    PERFORM pg_advisory_xact_lock({AUDIT_LOCK_KEY});
    SELECT seq, hash INTO h_seq, h_hash FROM fort_audit_head WHERE id = 1;
    IF NOT FOUND THEN
        h_seq := 0;
        h_hash := '{GENESIS}';
        INSERT INTO fort_audit_head (id, seq, hash) VALUES (1, 0, h_hash);
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_ts, 1), 0) LOOP
        out_prev := h_hash;
        out_seq := h_seq + 1;
        out_hash := encode(sha256(p_pre[i] || convert_to(h_hash, 'UTF8') || p_mid[i]
                                  || convert_to(out_seq::text, 'UTF8') || p_suf[i]), 'hex');
        INSERT INTO fort_audit_log ({", ".join(COLUMNS)})
        VALUES (out_seq, p_ts[i], p_actor[i], p_action[i], p_resource[i], p_decision[i],
                p_reason[i], p_details[i], p_request_id[i], p_client[i], h_hash, out_hash);
        h_seq := out_seq;
        h_hash := out_hash;
        RETURN NEXT;
    END LOOP;
    UPDATE fort_audit_head SET seq = h_seq, hash = h_hash WHERE id = 1;
END
$fort$
"""


def chain(head, fields: list[dict[str, Any]]) -> tuple[list[dict], list[tuple], tuple]:
    """SQLite: chain *fields* after *head* ((seq, hash) or None): the records' fields (with
    ``seq``, ``prev_hash`` and ``hash``), their rows and the new head (seq, hash)."""
    seq, prev = (head[0], head[1]) if head else (0, GENESIS)
    out, rows = [], []
    for f in fields:
        seq += 1
        full = {"seq": seq, **f, "prev_hash": prev}
        prev = compute_hash(full)
        out.append({**full, "hash": prev})
        rows.append(row_values(full, prev))
    return out, rows, (seq, prev)


def pg_params(fields: list[dict[str, Any]]) -> dict[str, list]:
    """PostgreSQL: the arrays of fort_audit_append's arguments for *fields*."""
    params: dict[str, list] = {k: [] for k in PG_ARRAYS}
    for f in fields:
        for k in PG_TEXT_FIELDS:
            params[k].append(json.dumps(f[k], sort_keys=True) if k == "details" else f[k])
        pre, mid, suf = canonical_parts(f)
        params["pre"].append(pre)
        params["mid"].append(mid)
        params["suf"].append(suf)
    return params


def install_functions(conn) -> None:
    """Create or replace the audit log's server-side function (PostgreSQL only)."""
    conn.execute(text(PG_APPEND_FUNCTION))
