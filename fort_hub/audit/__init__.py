"""The fort-hub audit log. The implementation lives with the store it shares
(:mod:`fort_hub.store.audit`); this is the import path plugins use:

>>> from fort_hub.audit import AuditError
>>> store.audit.record("alice", "query.submit", "url_shares", "allow", "granted")  # doctest: +SKIP

Write the record *before* the action; if it raises :class:`AuditError`, refuse the action.
"""

from ..store.audit import GENESIS, AuditError, AuditLog, AuditRecord, VerifyResult, compute_hash

__all__ = ["GENESIS", "AuditError", "AuditLog", "AuditRecord", "VerifyResult", "compute_hash"]
