"""The fort store: audit log, usage counters and service records over SQLAlchemy 2.

SQLite is the embedded default (WAL mode, durable commits); PostgreSQL is for production.
"""

from . import schema
from .audit import GENESIS, AuditError, AuditLog, AuditRecord, VerifyResult, compute_hash
from .core import Store, StoreError, StoreUnavailable, isoformat, normalize_url, parse_time, utcnow
from .usage import Consumed, UsageCounters

__all__ = [
    "GENESIS",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "Consumed",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UsageCounters",
    "VerifyResult",
    "compute_hash",
    "isoformat",
    "normalize_url",
    "parse_time",
    "schema",
    "utcnow",
]
