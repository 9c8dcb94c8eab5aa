"""fort-query engines: :class:`DuckDBEngine` (embedded default) and :class:`AthenaEngine`."""

from .base import (
    EngineError,
    EngineJob,
    Outcome,
    QueryCancelled,
    QueryEngine,
    ResultSink,
    ResultTooLarge,
)

__all__ = [
    "EngineError",
    "EngineJob",
    "Outcome",
    "QueryCancelled",
    "QueryEngine",
    "ResultSink",
    "ResultTooLarge",
]
