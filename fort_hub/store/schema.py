"""The fort store's tables: one schema shared by the audit log, usage counters, group
memberships, query records and identity bindings. Created idempotently; ``SCHEMA_VERSION`` is
recorded in ``fort_meta`` and checked at start-up (see :meth:`fort_hub.store.Store.create_schema`).

Times are stored as ISO-8601 UTC strings (``2026-11-25T17:56:34.123456+00:00``) so that the
audit chain's canonical encoding is byte-identical on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    text,
)

SCHEMA_VERSION = 1

metadata = MetaData()

meta = Table(
    "fort_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

_SEQ_CHECK = "ck_fort_audit_log_seq_positive"

# ---- audit log -------------------------------------------------------------------------------
audit_log = Table(
    "fort_audit_log",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("ts", String(40), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(128), nullable=False),
    Column("resource", Text, nullable=False, default=""),
    Column("decision", String(8), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("details", Text, nullable=False, default="{}"),
    Column("request_id", String(128), nullable=False, default=""),
    Column("client", String(128), nullable=False, default=""),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_fort_audit_actor", "actor", "seq"),
    Index("ix_fort_audit_action", "action", "seq"),
    # the chain starts at 1: a row at 0 or below would be outside what `audit verify` walks
    CheckConstraint("seq > 0", name=_SEQ_CHECK),
)


def add_indexes(conn) -> None:
    """Indexes added after a table was first created (``create_all`` only makes new tables)."""
    for table in (memberships, identities):
        for index in table.indexes:
            index.create(conn, checkfirst=True)


#: nullable columns added to a table after it was first created: (table, column)
ADDED_COLUMNS = (("fort_queries", "error_detail"),)


def add_columns(conn) -> None:
    """Add the :data:`ADDED_COLUMNS` a store created by an older fort-hub lacks (idempotent;
    nullable, so older code reading or writing the table is unaffected)."""
    inspector = inspect(conn)
    for table_name, column_name in ADDED_COLUMNS:
        have = {c["name"] for c in inspector.get_columns(table_name)}
        if column_name not in have:
            column = metadata.tables[table_name].c[column_name]
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {table_name} ADD COLUMN {column_name} {kind}"))


def upgrade_audit_log(conn, dialect: str) -> None:
    """Give an audit table created before the ``seq > 0`` check the same guarantee (idempotent).

    PostgreSQL: the CHECK constraint, added ``NOT VALID`` so that rows already there (forged
    ones are evidence) stay for ``audit verify`` to report. SQLite cannot add a CHECK to an
    existing table, so two triggers refuse the same inserts and updates.
    """
    if dialect == "postgresql":
        conn.execute(text(f"""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
                             WHERE c.conname = '{_SEQ_CHECK}' AND t.oid = 'fort_audit_log'::regclass)
              THEN ALTER TABLE fort_audit_log ADD CONSTRAINT {_SEQ_CHECK} CHECK (seq > 0) NOT VALID;
              END IF;
            END $$"""))  # fmt: skip
        return
    ddl = conn.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'fort_audit_log'")
    ).scalar()
    if ddl and _SEQ_CHECK not in ddl:
        for event in ("INSERT", "UPDATE OF seq"):
            name = f"{_SEQ_CHECK}_{event.split()[0].lower()}"
            conn.execute(text(
                f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {event} ON fort_audit_log "
                f"WHEN NEW.seq <= 0 BEGIN SELECT RAISE(ABORT, "
                f"'CHECK constraint failed: {_SEQ_CHECK}'); END"
            ))  # fmt: skip


#: one row (id=1): the newest record's seq and hash, updated in the same transaction as the
#: insert, so that a truncated tail is detected and appends need no max() scan.
audit_head = Table(
    "fort_audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# ---- usage counters (quotas, rate limits) -------------------------------------------------------
usage = Table(
    "fort_usage",
    metadata,
    Column("subject", String(255), primary_key=True),  # usually a username
    Column("metric", String(64), primary_key=True),  # e.g. queries, bytes_scanned, credentials
    Column("window", String(40), primary_key=True),  # e.g. 2026-11-25 or 2026-11-25T17:56
    Column("value", BigInteger, nullable=False, default=0),
)

# ---- group memberships managed by fort-groups ---------------------------------------------------
memberships = Table(
    "fort_memberships",
    metadata,
    Column("group_name", String(255), primary_key=True),
    Column("username", String(255), primary_key=True),
    Column("expires", String(40), nullable=True),  # ISO UTC, NULL = no expiry
    Column("source", String(16), nullable=False),  # "policy" or "api"
    Column("updated_by", String(255), nullable=False, default=""),
    Column("updated", String(40), nullable=False),
    Index("ix_fort_memberships_user", "username"),  # every request reads a user's memberships
)

# ---- query records (fort-query) ---------------------------------------------------------------
queries = Table(
    "fort_queries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("username", String(255), nullable=False),
    Column("dataset", String(255), nullable=False),
    Column("engine", String(32), nullable=False),
    Column("sql", Text, nullable=False),
    Column("state", String(16), nullable=False),  # queued running succeeded failed cancelled
    Column("submitted", String(40), nullable=False),
    Column("started", String(40), nullable=True),
    Column("finished", String(40), nullable=True),
    Column("rows", BigInteger, nullable=True),
    Column("bytes_scanned", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Column("error_detail", Text, nullable=True),  # the engine's own message behind `error`
    Column("engine_id", String(255), nullable=True),  # e.g. Athena QueryExecutionId
    Column("result_path", Text, nullable=True),
    Column("expires", String(40), nullable=True),  # when the stored result is removed
    Index("ix_fort_queries_user", "username", "submitted"),
    Index("ix_fort_queries_state", "state"),
)

#: which replica of fort-query runs an in-flight query, until when (renewed by its heartbeat);
#: a query whose lease ran out is failed by whichever replica notices (see store.leases)
query_leases = Table(
    "fort_query_leases",
    metadata,
    Column("query_id", String(64), primary_key=True),
    Column("replica", String(255), nullable=False),
    Column("expires", String(40), nullable=False),  # ISO UTC
    Index("ix_fort_query_leases_replica", "replica"),
)

# ---- which replica of a service holds a role for a while (fort-groups' reconciliation) ----------
leaders = Table(
    "fort_leaders",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires", String(40), nullable=False),  # ISO UTC
)

# ---- the hub's answers to "whose token is this?", shared by the services (see store.hubanswers) ----
hub_answers = Table(
    "fort_hub_answers",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # a hash of the token, never the token
    Column("model", Text, nullable=False),  # the hub's user model, JSON
    Column("asked", String(40), nullable=False),  # ISO UTC: when the hub was asked
    Column("mac", String(64), nullable=False),  # HMAC: the secret and token (services.hubauth)
    Index("ix_fort_hub_answers_asked", "asked"),
)

# ---- external identities bound to hub usernames (the Facebook app-scoped id) -----------------------
identities = Table(
    "fort_identities",
    metadata,
    Column("provider", String(32), primary_key=True),
    Column("subject", String(255), primary_key=True),
    Column("username", String(255), nullable=False),
    Column("created", String(40), nullable=False),
    Column("revoked", String(40), nullable=True),  # set by a deauthorize callback
    UniqueConstraint("provider", "username", name="uq_fort_identities_username"),
    Index("ix_fort_identities_user", "username"),  # every request checks for a deauthorization
)

# ---- data deletion requests (Facebook's data deletion callback) ----------------------------------
deletions = Table(
    "fort_deletions",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("username", String(255), nullable=True),
    Column("status", String(32), nullable=False),
    Column("requested", String(40), nullable=False),
    Column("completed", String(40), nullable=True),
)
