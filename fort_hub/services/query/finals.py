"""How fort-query ends a query: the stored copy committed, then the final state, the lease's
release, the scanned bytes and the audit records (the completion's, with a waiting downloader's
download) in one transaction, then the waiting downloaders and long polls answered.

:class:`QueryFinals` is a part of :class:`.runner.QueryRunner`, kept apart to keep each
module readable. It uses only the runner's public attributes: store, clock, limits, results,
records, leases, quotas, metrics, log, :meth:`remove_result` and ``waiters``, the
:class:`Waiters` of the queries running here (their long polls and result followers).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt

from ...store import StoreError
from ...store.core import isoformat
from ...store.queries import INFLIGHT, QueryRecord
from .stream import TeeSink

LOST_REASON = (
    "the fort-query replica running this query stopped (its lease in the store ran out); "
    "run it again"
)


class ResultNotStored(Exception):
    """A succeeded query's stored copy could not be committed (*error*: why)."""

    def __init__(self, error: BaseException):
        super().__init__(f"the result could not be stored: {error!r}")
        self.error = error


class EndedElsewhere(Exception):
    """Another replica ended the query while it ran here (its record is the truth)."""

    def __init__(self, state: str, error: str | None):
        super().__init__(f"query ended by another replica ({state}): {error or ''}")
        self.state, self.error = state, error
        self.reaped = error == LOST_REASON


def completion_record(rec, state: str, error: str | None, rows: int, scanned: int, request_id):
    """The ``query.complete`` audit record of *rec* (arguments of ``AuditLog.record``)."""
    return {
        "actor": rec.username, "action": "query.complete", "resource": rec.dataset,
        "decision": {"succeeded": "allow", "failed": "failed"}.get(state, "deny"),
        "reason": error or f"{rows} rows", "request_id": request_id,
        "details": {"query_id": rec.id, "state": state, "rows": rows, "bytes_scanned": scanned},
    }  # fmt: skip


class Waiters:
    """What waits in this process for the queries running here, by query id: long polls (an
    event set once the final state is recorded) and result followers (a future resolved with
    ``(state, error)`` as soon as the engine is done and the result file is final)."""

    def __init__(self):
        self._recorded: dict[str, asyncio.Event] = {}
        self._outcomes: dict[str, asyncio.Future] = {}

    def add(self, query_id: str) -> None:
        """A query starts here (on the event loop)."""
        self._recorded[query_id] = asyncio.Event()
        self._outcomes[query_id] = asyncio.get_running_loop().create_future()

    def outcome(self, query_id: str) -> asyncio.Future | None:
        return self._outcomes.get(query_id)

    def engine_done(self, query_id: str, state: str, error: str | None) -> None:
        """The engine is done and the result file final: followers finish now."""
        live = self._outcomes.get(query_id)
        if live is not None and not live.done():
            live.set_result((state, error))

    def recorded(self, query_id: str) -> None:
        """The final state is recorded (or the query is gone): long polls answer now."""
        self._recorded.pop(query_id, asyncio.Event()).set()

    def forget(self, query_id: str) -> None:
        self._outcomes.pop(query_id, None)
        self.recorded(query_id)

    async def wait_recorded(self, query_id: str, timeout: float) -> bool:
        """Wait up to *timeout* s for the final state of a query running here; False if it
        does not run here."""
        event = self._recorded.get(query_id)
        if event is None:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return True


class QueryFinals:
    """The end of a query (see the module's docstring); mixed into QueryRunner."""

    async def _finish(self, rec, state, errors, outcome, tee: TeeSink, request_id, started):
        """Commit the stored copy of a succeeded query's result, then record the final state,
        the scanned bytes and the completion's audit record in one transaction (one hop to a
        store thread for both); *errors* is (message, the engine's original or None). A
        downloader still waiting for a small result (:mod:`.stream`) has its download's audit
        record committed in that same transaction: it sends the result once it is committed
        (fail closed). A result that could not be stored fails the query."""
        ended = False
        try:
            if state == "succeeded":
                final = self._final(rec, state, errors, outcome, tee, request_id, started)
                try:
                    saved, failed = await self._save_final(rec, *final, commit=tee.commit)
                except ResultNotStored as e:  # nothing was recorded
                    self.log.error("query %s: its result could not be stored: %r", rec.id, e.error)
                    tee.recorded(e)  # a claimed downloader's record was not committed: no byte
                    state, errors = "failed", (f"internal error ({type(e.error).__name__})", None)
            if state != "succeeded":  # off the loop: an S3 result store deletes its upload
                await asyncio.get_running_loop().run_in_executor(None, tee.discard)
                final = self._final(rec, state, errors, outcome, tee, request_id, started)
                saved, failed = await self._save_final(rec, *final)
            if isinstance(saved, EndedElsewhere):  # its record is the truth for the followers
                state, errors = saved.state, (saved.error, None)
            elif saved is not None:  # not recorded: followers get no complete-looking result
                state, errors = "failed", ("the query's end could not be recorded", None)
            ended = True
        finally:
            if not ended:  # an unexpected error (or shutdown): the downloaders get nothing more
                state, errors = "failed", ("internal error", None)
                tee.recorded(RuntimeError("the query's end could not be recorded"))
            self.waiters.engine_done(rec.id, state, errors[0])  # result followers finish
            self.metrics.query_finished(rec.engine, state, outcome.bytes_scanned if outcome else 0)
            tee.end()
        await self._recorded(rec, state, final, (saved, failed), tee, request_id)

    def _final(self, rec, state, errors, outcome, tee: TeeSink, request_id, started):
        """(values, scanned, records) of *rec*'s final transaction."""
        now, rows = self.clock(), tee.rows
        scanned = outcome.bytes_scanned if outcome else 0
        error, detail = errors
        values = {
            "state": state, "error": error, "error_detail": detail if error else None,
            "started": started, "finished": isoformat(now), "rows": rows,
            "bytes_scanned": scanned, "engine_id": (outcome.engine_id or None) if outcome else None,
        }  # fmt: skip
        if state == "succeeded":
            values["result_path"] = self.results.location(rec.id)
            values["expires"] = isoformat(now + dt.timedelta(seconds=self.limits.result_ttl))
        records = [completion_record(rec, state, error, rows, scanned, request_id)]
        for f in tee.followers:
            if state == "succeeded" and f.download_audit and not (f.closed or f.streaming):
                f.claimed = True
                records.append(f.download_audit)
        return values, scanned, records

    async def _recorded(self, rec, state, final, outcome, tee: TeeSink, request_id):
        """After the final transaction (*final*: its values, scanned bytes and records;
        *outcome*: ``_save_final``'s): the waiting downloaders and long polls answer; what was
        not committed with the state is audited alone."""
        (_, scanned, records), (saved, failed), rows = final, outcome, tee.rows
        if failed is not None:  # the downloads were not audited: nothing is sent (fail closed)
            tee.recorded(failed)
        self.waiters.recorded(rec.id)  # long polls answer now
        tee.recorded(saved)  # the waiting downloaders send now (or answer with the record)
        if saved is None and failed is None:
            return  # the state and every record committed together
        if isinstance(saved, EndedElsewhere):  # audited by the reaping replica, or as ended
            records = [] if saved.reaped else [
                completion_record(rec, saved.state, saved.error, rows, scanned, request_id)
            ]  # fmt: skip
        audited = await self._audit_all(records[:1])  # no download was sent
        if audited is not None:
            self.log.error("query %s finished (%s) but its audit record failed: %s", rec.id,
                           state, audited)  # fmt: skip

    async def _audit_all(self, records: list[dict]) -> StoreError | None:
        """Commit *records* in one audit transaction: None, or the error."""
        if not records:
            return None
        try:
            await self.store.audit.arecord_many(records)
        except StoreError as e:
            return e
        return None

    async def _save_final(
        self, rec: QueryRecord, values: dict, scanned: int, records: list, commit=None
    ):
        """Save the final state *values* (only while in flight: another replica may have
        ended the query), release the lease, count the scanned bytes and commit *records* (the
        completion's and claimed downloads' audit records), in one transaction, on the store
        thread that first ran *commit* (the stored copy's; it failing raises
        :class:`ResultNotStored`, and nothing is recorded). Returns
        ``(saved, failed)``: *saved* is None once saved, the StoreError, or
        :class:`EndedElsewhere` (that replica's record is the truth: none of *records* is
        written, the result here is removed); *failed* is None, or the error that kept
        *records* from being committed (the state was then saved alone, without them)."""

        def change(conn) -> bool:
            saved = self.records.update_in(conn, rec.id, INFLIGHT, **values)
            self.leases.release_in(conn, rec.id)
            self.quotas.add_scanned_in(conn, rec.username, scanned)
            return saved

        def alone() -> bool | None:
            """The state without the records; None if the failed commit had in fact saved
            both (the connection lost after COMMIT: nothing to save or count again)."""
            mine = self.records.get(rec.id)
            if mine and (mine.state, mine.finished) == (values["state"], values["finished"]):
                return None
            with self.store.transaction() as conn:
                return change(conn)

        def stored_then_recorded():
            if commit is not None:
                try:
                    commit()
                except Exception as e:
                    raise ResultNotStored(e) from e
            return self.store.audit.record_with(change, records)

        failed = None
        try:
            try:
                recorded, _ = await self.store.run(stored_then_recorded)
            except StoreError as e:  # the audit records (or the state) could not be committed
                self.log.error("query %s: its audit records could not be committed (%s); its "
                               "state is saved alone", rec.id, e)  # fmt: skip
                failed = e
                recorded = await self.store.run(alone)
                if recorded is None:
                    return None, None
            if recorded:
                return None, failed
            final = await self.store.run(self.records.get, rec.id)
            await self.remove_result(rec.id)
            ended = EndedElsewhere(final.state, final.error) if final else None
            return ended or EndedElsewhere("failed", None), failed
        except StoreError as e:
            self.log.error("query %s finished (%s) but could not be recorded: %s", rec.id,
                           values["state"], e)  # fmt: skip
            return e, failed or e
