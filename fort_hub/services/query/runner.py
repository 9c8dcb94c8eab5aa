"""What fort-query does with a query, as a plain object: decide, admit, parse, audit, run,
record and clean up.

:class:`QueryRunner` is built from the decision point (:class:`fort_hub.access.Access`: store,
policy, clock), the engines, the result store and a few limits; :class:`.app.QueryService` only
wires it to HTTP. Query records, quotas and results live in the fort store and the result store,
so another process serves a query's status; the in-process state here (tasks, long-poll events,
live result followers) only speeds up what this process itself runs.

The flow of a submission: the caller's groups now (store + policy) -> a grant to query the
dataset -> quotas and the record's insertion, in one transaction (admission comes before any
parsing) -> :func:`.sqlcheck.check_sql` in a thread (one read-only statement over granted
tables) -> an audit record (committed, else 503: fail closed) -> the engine, in the background.
Every refusal is audited too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ...access import Access
from ...policy.model import Dataset, Policy
from ...store import StoreError
from ...store.core import isoformat
from ...store.queries import INFLIGHT, QueryRecord, QueryRecords
from ..handler import ServiceError, bad_text, printable
from .engines.base import EngineError, EngineJob, QueryCancelled, QueryEngine, ResultTooLarge
from .quotas import QuotaExceeded, Quotas
from .results import ResultStore
from .sqlcheck import CheckedQuery, SqlRejected, check_sql

RESTART_REASON = "fort-query restarted while this query was in flight; run it again"


@dataclass(frozen=True)
class Limits:
    """The service-wide limits (``c.QueryService.*``)."""

    query_timeout: float = 300
    max_result_rows: int = 50_000_000
    max_result_bytes: int = 4 * 1024**3
    result_ttl: float = 24 * 3600
    max_sql_bytes: int = 64 * 1024
    parse_threads: int = 2


class QueryRunner:
    def __init__(
        self,
        access: Access,
        engines: dict[str, QueryEngine],
        results: ResultStore,
        limits: Limits,
        log: logging.Logger | None = None,
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
        self._tasks: dict[str, asyncio.Task] = {}
        self._done: dict[str, asyncio.Event] = {}  # set once the final state is recorded
        #: (state, error) as soon as the engine is done and the result file is final
        self._live: dict[str, asyncio.Future] = {}
        self._cancel_requested: set[str] = set()
        self._parser = ThreadPoolExecutor(limits.parse_threads, thread_name_prefix="fort-sqlcheck")

    def close(self) -> None:
        """Stop what runs here (their queries are failed at the next start) and the engines."""
        for task in list(self._tasks.values()):
            task.cancel()
        for engine in self.engines.values():
            engine.close()
        self._parser.shutdown(wait=False, cancel_futures=True)

    async def recover(self) -> None:
        """At start: fail the queries a previous process left in flight, sweep results."""
        try:
            failed = await self.store.run(self.records.fail_inflight, RESTART_REASON, self.clock())
            for rec in failed:
                self.log.warning(
                    "query %s of %s was in flight at restart: failed", rec.id, rec.username
                )
                self.results.remove(rec.id)
            known = await self.store.run(self.records.ids_with_results)
            self.results.sweep_orphans(known)
            await self.remove_expired()
        except StoreError as e:
            self.log.error("could not recover in-flight queries (store unavailable): %s", e)

    async def remove_expired(self) -> int:
        try:
            expired = await self.store.run(self.records.expired_results, self.clock())
            for rec in expired:
                self.results.remove(rec.id)
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
            policy, groups = await self.effective_groups(username)
            details["groups"] = groups
            dataset = self.may_query(policy, username, groups, dataset_name)
            self.engine_for(dataset)
            quota = policy.quota_for(groups)
            rec = QueryRecord(
                id=qid, username=username, dataset=dataset.name, engine=dataset.engine,
                sql=sql, state="queued", submitted=isoformat(self.clock()),
            )  # fmt: skip
            await self._admit(rec, quota)
            loop = asyncio.get_running_loop()
            try:
                checked = await loop.run_in_executor(
                    self._parser, self.check, policy, groups, sql, dataset
                )
            except Exception:  # refused, or the check itself broke: the admission is undone
                await self._withdraw(rec)
                raise
        except ServiceError as refusal:
            await store.audit.arecord(**audit, decision="deny", reason=refusal.message,
                                      details=details)  # fmt: skip
            raise
        try:
            await store.audit.arecord(
                **audit, decision="allow",
                reason=f"tables {', '.join(checked.tables) or '(none)'} granted to {groups}",
                details={**details, "tables": list(checked.tables)},
            )  # fmt: skip
        except StoreError:
            await self._abandon(rec, "the audit log is unavailable")
            raise
        self._start(rec, policy, groups, dataset, checked, quota, request_id)
        return rec

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
        self._done[qid] = asyncio.Event()
        self._live[qid] = asyncio.get_running_loop().create_future()
        self._tasks[qid] = asyncio.ensure_future(self._execute(rec, job, max_rows, request_id))

    def live_outcome(self, query_id: str) -> asyncio.Future | None:
        """For a query running in this process: a future resolved with ``(state, error)`` as
        soon as the engine is done and the result file is final (result followers use it)."""
        return self._live.get(query_id)

    async def _admit(self, rec: QueryRecord, quota) -> None:
        """Quotas and the record's insertion, in one transaction."""

        def insert(conn):
            return self.records.insert_if_below(conn, rec, quota.max_concurrent_queries)

        try:
            await self.store.run(self.quotas.admit, rec.username, quota, insert)
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

    async def _execute(self, rec: QueryRecord, job: EngineJob, max_rows: int, request_id: str):
        engine = self.engines[rec.engine]
        store = self.store
        sink = self.results.sink(rec.id, max_rows, self.limits.max_result_bytes)
        state, error, outcome = "failed", None, None
        # the state change is recorded while the engine already works (off the critical path)
        running = asyncio.ensure_future(store.run(
            self.records.update, rec.id, ("queued",), state="running",
            started=isoformat(self.clock()),
        ))  # fmt: skip
        try:
            run = asyncio.ensure_future(engine.run(job, sink))
            done, _ = await asyncio.wait({run}, timeout=self.limits.query_timeout)
            if not done:
                await engine.cancel(rec.id)
                with contextlib.suppress(EngineError):
                    await run
                raise EngineError(
                    f"the query ran longer than {self.limits.query_timeout:g} s (query_timeout)"
                )
            outcome = run.result()
            await asyncio.get_running_loop().run_in_executor(None, sink.commit)
            state = "succeeded"
        except QueryCancelled:
            state, error = "cancelled", "cancelled by the user"
        except ResultTooLarge as e:  # the engine stopped writing: run() has returned
            error = str(e)
        except EngineError as e:
            error = str(e)
        except asyncio.CancelledError:
            error = "fort-query shut down while this query was running"
            await engine.cancel(rec.id)
        except Exception as e:  # never lose a query silently
            self.log.exception("query %s failed unexpectedly", rec.id)
            error = f"internal error ({type(e).__name__})"
        try:
            await running
        except StoreError as e:
            self.log.error("query %s: could not record that it runs: %s", rec.id, e)
        if rec.id in self._cancel_requested:
            state, error = "cancelled", "cancelled by the user"
            self._cancel_requested.discard(rec.id)
        if state != "succeeded":
            sink.discard()
        live = self._live.get(rec.id)
        if live is not None:
            live.set_result((state, error))  # followers of the result stream finish now
        try:
            await self._finish(rec, state, error, outcome, sink.rows, request_id)
        finally:
            self._tasks.pop(rec.id, None)
            self._live.pop(rec.id, None)
            self._done.pop(rec.id, asyncio.Event()).set()

    async def _finish(self, rec, state, error, outcome, rows, request_id) -> None:
        now = self.clock()
        scanned = outcome.bytes_scanned if outcome else 0
        values = {
            "state": state, "error": error, "finished": isoformat(now), "rows": rows,
            "bytes_scanned": scanned, "engine_id": (outcome.engine_id or None) if outcome else None,
        }  # fmt: skip
        if state == "succeeded":
            values["result_path"] = self.results.path(rec.id)
            values["expires"] = isoformat(now + dt.timedelta(seconds=self.limits.result_ttl))
        try:
            await self.store.run(self.records.update, rec.id, INFLIGHT, **values)
        except StoreError as e:
            self.log.error("query %s finished (%s) but could not be recorded: %s", rec.id, state, e)
        self._done.pop(rec.id, asyncio.Event()).set()  # long polls answer now
        try:
            await self.store.run(self.quotas.add_scanned, rec.username, scanned)
            await self.store.audit.arecord(
                actor=rec.username, action="query.complete", resource=rec.dataset,
                decision={"succeeded": "allow", "failed": "failed"}.get(state, "deny"),
                reason=error or f"{rows} rows", request_id=request_id,
                details={"query_id": rec.id, "state": state, "rows": rows, "bytes_scanned": scanned},
            )  # fmt: skip
        except StoreError as e:
            self.log.error("query %s finished (%s) but could not be recorded: %s", rec.id, state, e)

    async def cancel(self, rec: QueryRecord) -> None:
        """Stop *rec* (queued or running)."""
        self._cancel_requested.add(rec.id)
        await self.engines[rec.engine].cancel(rec.id)
        if rec.id not in self._tasks:  # not running in this process: just mark it
            self._cancel_requested.discard(rec.id)
            await self.store.run(
                self.records.update, rec.id, INFLIGHT, state="cancelled",
                error="cancelled by the user", finished=isoformat(self.clock()),
            )  # fmt: skip

    async def wait_finished(self, query_id: str, timeout: float) -> None:
        """Wait up to *timeout* s until *query_id*'s final state is recorded (long polls)."""
        done = self._done.get(query_id)
        if done is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout)
