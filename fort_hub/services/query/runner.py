"""What fort-query does with a query, as a plain object: decide, admit, parse, audit, run,
record and clean up.

:class:`QueryRunner` is built from the decision point (:class:`fort_hub.access.Access`: store,
policy, clock), the engines, the result store and a few limits; :class:`.app.QueryService` only
wires it to HTTP. Query records, quotas and results live in the fort store and the result store,
so another process serves a query's status; the in-process state here (tasks, long-poll events,
live result followers) only speeds up what this process itself runs.

The flow of a submission: the caller's groups now (store + policy) -> a grant to query the
dataset -> quotas and the record's insertion, in one transaction (admission comes before any
parsing; with the decision, one hop to a store thread) -> :func:`.sqlcheck.check_sql` in a
parse thread (one read-only statement over granted tables) -> an audit record (committed, else
503: fail closed; on the same parse thread) -> the engine, in the background. Every refusal is
audited too. At the end, the final state and the completion's audit record (with a waiting
downloader's) are one transaction (:meth:`fort_hub.store.audit.AuditLog.record_with`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ...access import Access
from ...policy.model import Dataset, Policy
from ...store import StoreError
from ...store.core import isoformat
from ...store.leases import QueryLeases
from ...store.queries import INFLIGHT, QueryRecord, QueryRecords
from ..handler import ServiceError, bad_text, printable
from ..metrics import QueryMetrics
from .engines.base import (
    EngineError,
    EngineJob,
    Outcome,
    QueryCancelled,
    QueryEngine,
    ResultTooLarge,
)
from .finals import LOST_REASON, QueryFinals, Waiters
from .quotas import QuotaExceeded, Quotas
from .results import ResultStore
from .sqlcheck import CheckedQuery, SqlRejected, check_sql
from .stream import Follower, TeeSink

RESTART_REASON = "fort-query restarted while this query was in flight; run it again"
#: seconds a query's engine gets to stop at shutdown before its result file is discarded
SHUTDOWN_GRACE = 5
#: seconds after its start a query is recorded as running; one that finished by then has its
#: ``started`` recorded with its final state (one commit fewer on a quick query's path)
RUNNING_AFTER = 0.05


def spent(error: EngineError, sink: TeeSink) -> Outcome:
    """What a query that ended with *error* used: its bytes scanned count against the quota
    like a success's (a failed, cancelled or capped scan is not free)."""
    return Outcome(rows=sink.rows, bytes_scanned=error.bytes_scanned or 0,
                   engine_id=error.engine_id)  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """The service-wide limits (``c.QueryService.*``)."""

    query_timeout: float = 300
    max_result_rows: int = 50_000_000
    max_result_bytes: int = 4 * 1024**3
    result_ttl: float = 24 * 3600
    max_sql_bytes: int = 64 * 1024
    parse_threads: int = 2
    #: seconds a replica's lease on its running queries lasts without a heartbeat
    lease_ttl: float = 30


class QueryRunner(QueryFinals):
    def __init__(
        self,
        access: Access,
        engines: dict[str, QueryEngine],
        results: ResultStore,
        limits: Limits,
        log: logging.Logger | None = None,
        metrics: QueryMetrics | None = None,
        replica: str = "",
    ):
        self.access = access
        self.store = access.store
        self.clock = access.clock
        self.engines = engines
        self.results = results
        self.limits = limits
        self.log = log or logging.getLogger("fort_hub.query")
        self.records = QueryRecords(self.store)
        self.quotas = Quotas(self.store, self.clock)
        #: this process's name in the store's leases (unique per replica; see QueryService)
        self.replica = replica or socket.gethostname()
        self.leases = QueryLeases(self.store)
        self._tasks: dict[str, asyncio.Task] = {}
        #: the long polls and result followers of the queries running here
        self.waiters = Waiters()
        self._cancel_requested: set[str] = set()
        self._engine_of: dict[str, str] = {}  # the engine of each query running here
        #: the sinks of the queries running here (they hand batches to waiting downloaders)
        self._tees: dict[str, TeeSink] = {}
        self._parser = ThreadPoolExecutor(limits.parse_threads, thread_name_prefix="fort-sqlcheck")
        self.metrics = metrics or QueryMetrics()

    def close(self) -> None:
        """Stop what runs here (their queries are failed at the next start) and the engines."""
        for task in list(self._tasks.values()):
            task.cancel()
        for engine in self.engines.values():
            engine.close()
        self._parser.shutdown(wait=False, cancel_futures=True)

    async def recover(self) -> None:
        """At start: fail the queries a previous run of this replica left in flight (and any
        whose lease ran out), sweep results."""
        try:
            await self.reap(RESTART_REASON, self.replica)
            await asyncio.get_running_loop().run_in_executor(
                None, self.results.sweep_orphans, self.records.ids_with_results
            )
            await self.remove_expired()
        except StoreError as e:
            self.log.error("could not recover in-flight queries (store unavailable): %s", e)

    async def reap(self, reason: str, replica: str | None = None) -> int:
        """Fail the in-flight queries whose replica is gone (see :class:`QueryLeases`)."""
        failed = await self.store.run(self.leases.reap, self.clock(), reason, replica)
        for rec in failed:
            self.log.warning("query %s of %s: %s", rec.id, rec.username, reason)
            await self.remove_result(rec.id)
            with contextlib.suppress(StoreError):
                await self.store.audit.arecord(
                    actor=rec.username, action="query.complete", resource=rec.dataset,
                    decision="failed", reason=reason,
                    details={"query_id": rec.id, "state": "failed", "rows": 0,
                             "bytes_scanned": 0, "replica": self.replica},
                )  # fmt: skip
        return len(failed)

    async def remove_result(self, query_id: str) -> None:
        """Remove a stored result; a failure (e.g. S3 unreachable) is logged, never raised: the
        record and its audit must still be written (the orphan sweep removes it later)."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.results.remove, query_id)
        except Exception as e:
            self.log.error("query %s: could not remove its result: %s", query_id, e)

    async def heartbeat(self) -> None:
        """Renew this replica's leases, stop what another replica cancelled, and fail the
        queries of replicas whose leases ran out. Run every few seconds."""
        try:
            ids = list(self._tasks)  # before the renewal: a query admitted meanwhile is not
            if ids:  # in its answer, and must not be taken for one that ended elsewhere
                expires = self.clock() + dt.timedelta(seconds=self.limits.lease_ttl)
                states = await self.store.run(self.leases.renew, self.replica, expires, ids)
                for qid in ids:
                    # ended elsewhere: cancelled on another replica, or failed by one that
                    # found this replica's lease run out (e.g. after a long store outage)
                    if states.get(qid, "gone") not in INFLIGHT:
                        await self.cancel_here(qid)
            await self.reap(LOST_REASON)
        except StoreError as e:
            self.log.error("query heartbeat failed (store unavailable): %s", e)

    async def remove_expired(self) -> int:
        try:
            expired = await self.store.run(self.records.expired_results, self.clock())
            for rec in expired:
                await self.remove_result(rec.id)
                await self.store.run(self.records.update, rec.id, result_path=None)
            return len(expired)
        except StoreError as e:
            self.log.error("result cleanup failed: %s", e)
            return 0

    # ----- decisions --------------------------------------------------------------------------

    async def effective_groups(self, username: str) -> tuple[Policy, list[str]]:
        """(policy, the caller's groups now), from the fort store (see fort_hub.access)."""
        return await self.access.aeffective(username)

    def engine_for(self, dataset: Dataset) -> QueryEngine:
        engine = self.engines.get(dataset.engine)
        if engine is None:
            raise ServiceError(
                400, f"dataset '{dataset.name}' uses unknown engine '{dataset.engine}'"
            )
        return engine

    def may_query(self, policy: Policy, username: str, groups: list[str], name: str) -> Dataset:
        """The dataset *name* if *groups* may query it now, else 403 naming why."""
        dataset = policy.datasets.get(name)
        decision = policy.authorize(username, groups, "query", name, self.clock())
        if dataset is None or not decision:
            raise ServiceError(403, f"you may not query dataset '{name[:80]}': {decision.reason}")
        return dataset

    def check(self, policy: Policy, groups: list[str], sql: str, dataset: Dataset) -> CheckedQuery:
        """Parse and authorize *sql* (blocking: run in the parse pool)."""
        engine = self.engine_for(dataset)
        try:
            return check_sql(
                sql,
                dataset=dataset.name,
                tables={d.name: d.tables for d in policy.datasets.values()},
                granted=policy.datasets_for(groups, "query"),
                dialect=engine.dialect,
                target=engine.target(dataset),
            )
        except SqlRejected as e:
            raise ServiceError(e.status, e.message) from None

    def role_for(self, policy: Policy, groups: list[str], dataset: str) -> tuple[str, str]:
        """(group, role ARN): the first of the caller's groups granted *dataset* that has a role
        (the group goes into the session's ``fort-group`` tag), or ``("", "")``."""
        for g in groups:
            if dataset in policy.datasets_for([g], "query"):
                arn = next(iter(policy.roles_for([g]).values()), "")
                if arn:
                    return g, arn
        return "", ""

    # ----- submission -------------------------------------------------------------------------

    def validate_submission(self, sql: Any, dataset_name: Any) -> None:
        """400/413 for a submission that is not a query at all (audited by the caller)."""
        if not isinstance(sql, str) or not isinstance(dataset_name, str) or not dataset_name:
            raise ServiceError(400, "send a JSON object with string fields 'sql' and 'dataset'")
        problem = bad_text({"sql": sql, "dataset": dataset_name})
        if problem:
            raise ServiceError(400, problem)
        size = len(sql.encode("utf-8"))
        if size > self.limits.max_sql_bytes:
            raise ServiceError(
                413, f"the SQL is {size} bytes; the limit is {self.limits.max_sql_bytes} "
                "(QueryService.max_sql_bytes)",
            )  # fmt: skip

    async def submit(
        self, user: dict, sql: Any, dataset_name: Any, request_id: str, client: str
    ) -> QueryRecord:
        """Validate, decide (store + policy now), admit (quotas), parse off the event loop,
        audit (fail closed) and start one query. Every refusal is audited."""
        username = user["name"]
        store = self.store
        shown = printable(sql)[:10_000] if isinstance(sql, str) else repr(sql)[:200]
        resource = printable(dataset_name)[:255] if isinstance(dataset_name, str) else ""
        audit = {"actor": username, "action": "query.submit", "resource": resource,
                 "request_id": request_id, "client": client}  # fmt: skip
        qid = uuid.uuid4().hex
        details: dict[str, Any] = {"query_id": qid, "sql": shown}
        try:
            self.validate_submission(sql, dataset_name)
            policy, groups, dataset, quota, rec = await store.run(
                self._decide_and_admit, username, dataset_name, sql, details
            )
            loop = asyncio.get_running_loop()
            try:
                checked = await loop.run_in_executor(
                    self._parser, self._check_and_audit, policy, groups, sql, dataset, audit,
                    details,
                )  # fmt: skip
            except StoreError:  # the allow record was not committed: the query never runs
                await self._abandon(rec, "the audit log is unavailable")
                raise
            except Exception:  # refused, or the check itself broke: the admission is undone
                await self._withdraw(rec)
                raise
        except ServiceError as refusal:
            await store.audit.arecord(**audit, decision="deny", reason=refusal.message,
                                      details=details)  # fmt: skip
            raise
        self._start(rec, policy, groups, dataset, checked, quota, request_id)
        return rec

    def _check_and_audit(self, policy, groups, sql, dataset: Dataset, audit: dict, details: dict):
        """On a parse thread: :meth:`check` *sql*, then commit the submission's allow record
        (*audit* and *details*: ``AuditLog.record``'s arguments), in one hop from the event
        loop instead of two. A refusal raises :class:`ServiceError`, an uncommitted
        record :class:`StoreError` (the query must not run: fail closed)."""
        checked = self.check(policy, groups, sql, dataset)
        self.store.audit.record(
            **audit, decision="allow",
            reason=f"tables {', '.join(checked.tables) or '(none)'} granted to {groups}",
            details={**details, "tables": list(checked.tables)},
        )  # fmt: skip
        return checked

    def _start(self, rec, policy, groups, dataset, checked, quota, request_id) -> None:
        group, role_arn = (
            self.role_for(policy, groups, dataset.name) if dataset.engine == "athena" else ("", "")
        )
        job = EngineJob(
            id=rec.id, sql=checked.sql, dataset=dataset, username=rec.username, groups=groups,
            role_arn=role_arn, extra={"region": policy.aws.region, "group": group},
        )  # fmt: skip
        max_rows = min(quota.max_result_rows, self.limits.max_result_rows)
        qid = rec.id
        loop = asyncio.get_running_loop()
        self.waiters.add(qid)
        self._engine_of[qid] = rec.engine
        sink = self.results.sink(qid, max_rows, self.limits.max_result_bytes)
        self._tees[qid] = TeeSink(sink, loop)
        self._tasks[qid] = asyncio.ensure_future(self._execute(rec, job, request_id))
        self.metrics.query_started(rec.engine)

    def live_spool(self, query_id: str) -> str | None:
        """The local file a query running here is writing its result to (for followers), once
        its schema is known (a worker's file exists, empty, from the query's start)."""
        tee = self._tees.get(query_id)
        return tee.inner.spool if tee is not None and tee.schema is not None else None

    def follow(self, query_id: str) -> Follower | None:
        """A :class:`~.stream.Follower` getting *query_id*'s batches as the engine writes
        them: only for a query started here whose engine has not written yet, i.e. called
        right after :meth:`submit` returned, with no ``await`` in between; else None."""
        tee = self._tees.get(query_id)
        return tee.follow() if tee is not None else None

    def live_outcome(self, query_id: str) -> asyncio.Future | None:
        """For a query running in this process: a future resolved with ``(state, error)`` as
        soon as the engine is done and the result file is final (result followers use it)."""
        return self.waiters.outcome(query_id)

    def _decide_and_admit(self, username: str, dataset_name: str, sql: str, details: dict):
        """On a store thread (one hop from the event loop, not two), in one transaction: the
        caller's groups now (store + policy; into *details*, for the audit record), the grant
        to query the dataset, then the admission (quotas, the record). Returns (policy,
        groups, dataset, quota, the record); a refusal raises :class:`ServiceError` and
        writes nothing (the transaction is rolled back)."""
        policy = self.access.policy()  # before the transaction: a reload holds no lock
        with self.store.transaction() as conn:
            policy, groups = self.access.effective_in(conn, username, policy)
            details["groups"] = groups
            dataset = self.may_query(policy, username, groups, dataset_name)
            self.engine_for(dataset)
            quota = policy.quota_for(groups)
            rec = QueryRecord(
                id=details["query_id"], username=username, dataset=dataset.name,
                engine=dataset.engine, sql=sql, state="queued",
                submitted=isoformat(self.clock()),
            )  # fmt: skip
            self._admit(conn, rec, quota)
        return policy, groups, dataset, quota, rec

    def _admit(self, conn, rec: QueryRecord, quota) -> None:
        """Quotas and the record's insertion, in the decision's transaction *conn*."""

        def insert(conn):
            busy = self.records.insert_if_below(conn, rec, quota.max_concurrent_queries)
            if busy is None:
                expires = self.clock() + dt.timedelta(seconds=self.limits.lease_ttl)
                self.leases.take_in(conn, rec.id, self.replica, expires)
            return busy

        try:
            self.quotas.admit_in(conn, rec.username, quota, insert)
        except QuotaExceeded as q:
            retry = self.retry_after(q.resets)
            raise ServiceError(
                429, str(q), headers={"Retry-After": str(retry)}, quota=q.as_dict()
            ) from None

    def retry_after(self, resets: str | None) -> int:
        """Seconds until a daily limit resets, or a short wait for a concurrency slot (it frees
        when one of the caller's queries finishes)."""
        if not resets:
            return 5
        left = (dt.datetime.fromisoformat(resets) - self.clock()).total_seconds()
        return max(1, math.ceil(left))

    async def _withdraw(self, rec: QueryRecord) -> None:
        """Undo an admission whose SQL was then refused: it never became a query."""
        await self._refund(rec.username)
        try:
            await self.store.run(self.records.delete, rec.id)
        except StoreError as e:
            self.log.error("query %s: could not withdraw its admission: %s", rec.id, e)

    async def _refund(self, username: str) -> None:
        try:
            await self.store.run(self.quotas.refund, username)
        except StoreError as e:
            self.log.error("could not refund a query to %s: %s", username, e)

    async def _abandon(self, rec: QueryRecord, reason: str) -> None:
        await self._refund(rec.username)
        try:
            await self.store.run(
                self.records.update, rec.id, state="failed", error=reason,
                finished=isoformat(self.clock()),
            )  # fmt: skip
        except StoreError as e:
            self.log.error("query %s: could not record its failure: %s", rec.id, e)

    # ----- execution --------------------------------------------------------------------------

    async def _execute(self, rec: QueryRecord, job: EngineJob, request_id: str):
        engine = self.engines[rec.engine]
        store = self.store
        sink = self._tees[rec.id]
        state, error, outcome, detail = "failed", None, None, None
        # the state change is recorded while the engine already works (off the critical path)
        started, marked = isoformat(self.clock()), []
        timer = asyncio.get_running_loop().call_later(
            RUNNING_AFTER, lambda: marked.append(asyncio.ensure_future(store.run(
                self.records.update, rec.id, ("queued",), state="running", started=started,
            ))),
        )  # fmt: skip
        try:
            run = asyncio.ensure_future(engine.run(job, sink))
            done, _ = await asyncio.wait({run}, timeout=self.limits.query_timeout)
            if not done:
                sink.abort(EngineError("the query ran longer than query_timeout"))
                await engine.cancel(rec.id)
                raise await self._timed_out(run)
            outcome = run.result()
            state = "succeeded"  # its stored copy is committed with its final state (_finish)
        except QueryCancelled as e:
            state, error, outcome = "cancelled", "cancelled by the user", spent(e, sink)
        except ResultTooLarge as e:  # the engine stopped writing: run() has returned
            error, outcome = str(e), spent(e, sink)
        except EngineError as e:
            error, detail, outcome = str(e), e.detail, spent(e, sink)
        except asyncio.CancelledError:
            error = "fort-query shut down while this query was running"
            sink.abort(EngineError(error))
            await engine.cancel(rec.id)
            # the engine's thread may still use the result file: let it stop (bounded) before
            # the file is discarded
            await asyncio.wait({run}, timeout=SHUTDOWN_GRACE)
        except Exception as e:  # never lose a query silently
            self.log.exception("query %s failed unexpectedly", rec.id)
            error = f"internal error ({type(e).__name__})"
        timer.cancel()
        for running in marked:
            try:
                await running
            except StoreError as e:
                self.log.error("query %s: could not record that it runs: %s", rec.id, e)
        if rec.id in self._cancel_requested:
            state, error = "cancelled", "cancelled by the user"
            self._cancel_requested.discard(rec.id)
        try:
            await self._finish(rec, state, (error, detail), outcome, sink, request_id, started)
        finally:
            self._tees.pop(rec.id, None)
            self._tasks.pop(rec.id, None)
            self._cancel_requested.discard(rec.id)
            self._engine_of.pop(rec.id, None)
            self.waiters.forget(rec.id)

    async def _timed_out(self, run: asyncio.Future) -> EngineError:
        """The error of a query stopped at ``query_timeout``, once its engine has stopped
        (*run*), with what it read by then."""
        error = EngineError(
            f"the query ran longer than {self.limits.query_timeout:g} s (query_timeout)"
        )
        try:
            done = await run
        except EngineError as e:
            error.bytes_scanned, error.engine_id = e.bytes_scanned, e.engine_id
        else:  # it finished as it was stopped
            error.bytes_scanned, error.engine_id = done.bytes_scanned, done.engine_id
        return error

    async def cancel(self, rec: QueryRecord) -> None:
        """Stop *rec* (queued or running). Not running here: it is marked cancelled in the
        store, and the replica running it stops it at its next heartbeat."""
        if rec.id in self._tasks:
            await self.cancel_here(rec.id)
            return
        await self.store.run(
            self.records.update, rec.id, INFLIGHT, state="cancelled",
            error="cancelled by the user", finished=isoformat(self.clock()),
        )  # fmt: skip

    async def cancel_here(self, query_id: str) -> None:
        engine = self._engine_of.get(query_id)
        if engine is None:  # it has just finished
            return
        self._cancel_requested.add(query_id)
        tee = self._tees.get(query_id)
        if tee is not None:  # an engine waiting for a downloader stops too
            tee.abort(QueryCancelled("cancelled by the user"))
        await self.engines[engine].cancel(query_id)

    async def wait_finished(self, query_id: str, timeout: float) -> None:
        """Wait up to *timeout* s until *query_id*'s final state is recorded (long polls); a
        query another replica runs is watched in the store."""
        if await self.waiters.wait_recorded(query_id, timeout):
            return
        deadline = asyncio.get_running_loop().time() + timeout
        delay = 0.02
        while asyncio.get_running_loop().time() < deadline:
            rec = await self.store.run(self.records.get, query_id)
            if rec is None or rec.state not in INFLIGHT:
                return
            await asyncio.sleep(min(delay, max(0.0, deadline - asyncio.get_running_loop().time())))
            delay = min(delay * 2, 0.5)
