"""HTTP API v1 of fort-query (described by ``openapi.json`` next to this module)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re

import pyarrow as pa
from tornado.iostream import StreamClosedError

from ...scopes import QUERY_ADMIN, QUERY_USE
from ...store.queries import INFLIGHT, QueryRecord
from ..handler import FortHandler, ServiceError, printable
from . import results as R
from .app import QueryService
from .engines.worker import END_OF_STREAM
from .finals import EndedElsewhere
from .myaccess import MyAccessPage, describe_datasets
from .runner import QueryRunner
from .stream import END, Follower, IpcChunks

ID_RE = re.compile(r"^[0-9a-f]{32}\Z")
OPENAPI = os.path.join(os.path.dirname(__file__), "openapi.json")
ARROW = "application/vnd.apache.arrow.stream"
FORMATS = {"arrow": ARROW, "json": "application/json", "csv": "text/csv"}
MAX_PAGE_ROWS = 10_000


class _Idle:
    """Sleeps between looks at a growing result file: 2 ms after progress, doubling up to 100 ms
    while nothing new arrived (an Athena query writes nothing until it finishes)."""

    def __init__(self):
        self.delay = 0.002

    async def wait(self, progress: bool) -> None:
        self.delay = 0.002 if progress else min(self.delay * 2, 0.1)
        await asyncio.sleep(self.delay)


class QueryHandlerBase(FortHandler):
    required_scopes = (QUERY_USE, QUERY_ADMIN)

    @property
    def app(self) -> QueryService:
        return self.settings["fort_app"]

    @property
    def runner(self) -> QueryRunner:
        return self.app.runner

    async def is_admin(self) -> bool:
        """The admin scope and, for a user, a current admins membership (read now)."""
        return await self.admin_power(QUERY_ADMIN)

    async def load(self, query_id: str) -> QueryRecord:
        """The caller's query (or anyone's, for admins); 404 otherwise (no existence leak)."""
        rec = None
        if ID_RE.match(query_id):
            rec = await self.app.fort_store.run(self.runner.records.get, query_id)
        if rec is None or (rec.username != self.username and not await self.is_admin()):
            raise ServiceError(404, f"no query '{printable(query_id[:64])}' of yours")
        return rec

    async def audit(self, action: str, resource: str, reason: str, details: dict,
                    decision: str = "allow") -> None:  # fmt: skip
        await self.app.fort_store.audit.arecord(
            actor=self.username, action=action, resource=resource, decision=decision,
            reason=reason, details=details, request_id=self.request_id, client=self.client,
        )  # fmt: skip

    def seconds_arg(self, name: str, hi: int) -> float:
        """Seconds from 0 to *hi*, with up to three decimals (0 when absent)."""
        raw = self.get_query_argument(name, None)
        if raw is None:
            return 0.0
        if not re.fullmatch(r"\d{1,4}(\.\d{1,3})?", raw) or float(raw) > hi:
            raise ServiceError(400, f"'{name}' must be seconds from 0 to {hi} (e.g. 0.5)")
        return float(raw)

    def int_arg(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        if not re.fullmatch(r"\d{1,12}", raw) or not lo <= int(raw) <= hi:
            raise ServiceError(400, f"'{name}' must be an integer from {lo} to {hi}")
        return int(raw)


class QueriesHandler(QueryHandlerBase):
    query_params = ("limit", "before", "user", "all", "wait")
    follower: Follower | None = None

    async def post(self):
        body = self.json_body(check_text=False)  # submit() refuses bad text, audited
        extra = sorted(printable(k)[:40] for k in set(body) - {"sql", "dataset"})
        if extra:
            raise ServiceError(
                400, f"unknown field(s) {', '.join(extra)}: send 'sql' and 'dataset'"
            )
        wait = self.seconds_arg("wait", 60)
        rec = await self.runner.submit(
            self.current_user, body.get("sql"), body.get("dataset"), self.request_id, self.client
        )
        if wait and ARROW in self.request.headers.get("Accept", ""):
            self.follower = self.runner.follow(rec.id)  # no await since submit(): none missed
        self.set_header("Location", self.app.service_url("api", "v1", "queries", rec.id))
        self.set_header("X-Fort-Query-Id", rec.id)
        if self.follower is None:
            if wait:  # no Arrow asked for: the query's record once it finished
                await self.runner.wait_finished(rec.id, wait)
                done = await self.load(rec.id)
                if done.state not in INFLIGHT:
                    self.write_json(done.public())
                    return
            self.write_json({"id": rec.id, "state": rec.state}, status=202)
            return
        try:
            await self.answer_waiting(rec, self.follower, wait)
        finally:
            self.follower.close()

    def on_connection_close(self):
        if self.follower is not None:  # the engine no longer waits for this downloader
            self.follower.close()
        super().on_connection_close()

    def download_record(self, rec: QueryRecord, how: str) -> dict:
        return {
            "actor": self.username, "action": "query.download", "resource": rec.dataset,
            "reason": f"result as arrow ({how})", "request_id": self.request_id,
            "client": self.client,
            "details": {"query_id": rec.id, "format": "arrow", "owner": rec.username, "offset": 0},
        }  # fmt: skip

    async def answer_waiting(self, rec: QueryRecord, follower: Follower, wait: float) -> None:
        """The waiting submit (``?wait=``, Accept Arrow): a result of at most
        ``inline_result_bytes`` comes back whole once its records are committed (the download's
        audit record with the completion's, see ``QueryRunner._finish``); a larger one streams
        as the engine writes it; a query still without a result after *wait* seconds, 202 as
        without ``wait``; a query that ended without a result, its record."""
        follower.download_audit = self.download_record(rec, "in the submit's answer")
        live = self.runner.live_outcome(rec.id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        schema, held, size = None, [], 0
        while True:
            try:
                left = None if follower.claimed else max(0.0, deadline - loop.time())
                item = await asyncio.wait_for(follower.get(), left)
            except TimeoutError:
                if follower.claimed:
                    continue
                self.write_json({"id": rec.id, "state": "running"}, status=202)
                return
            if follower.closed:  # the caller went away
                return
            if item is END:
                break
            if isinstance(item, pa.Schema):
                schema = item
                continue
            held.append(item)
            size += len(item)
            if size > self.app.inline_result_bytes:
                await self.stream_rest(rec, follower, live, schema, held)
                return
        state, _error = live.result()
        try:
            await follower.recorded
        except EndedElsewhere:  # another replica ended it: its record is the answer
            state = None
        except Exception as e:  # the records were not committed: nothing is sent (fail closed)
            if state == "succeeded":
                raise ServiceError(
                    503, f"query {rec.id} succeeded but its records could not be committed "
                    f"({type(e).__name__}); its result was not sent",
                ) from None  # fmt: skip
        if state != "succeeded":
            self.write_json((await self.load(rec.id)).public())
            return
        tail = END_OF_STREAM if held else IpcChunks(schema or pa.schema([])).end()
        self.set_header("Content-Type", ARROW)
        self.finish(b"".join([*held, tail]))

    async def stream_rest(self, rec, follower: Follower, live, schema, held) -> None:
        """Send what the waiting submit holds, then each batch as it comes. The end-of-stream
        marker only follows success: a query failing midway leaves a truncated stream."""
        follower.streaming = True
        if follower.claimed:  # finished meanwhile: recorded with its completion
            await follower.recorded
        else:
            await self.app.fort_store.audit.arecord(
                **self.download_record(rec, "streamed in the submit's answer")
            )
        self.set_header("Content-Type", ARROW)
        body = ChunkedBody(self)
        try:
            while held:
                await body.send(held.pop(0))
            while (item := await follower.get()) is not END:
                if not isinstance(item, pa.Schema):
                    await body.send(item)
            if follower.closed:  # the downloader went away: nothing more to send
                return
            if live.result()[0] == "succeeded":
                await body.send(END_OF_STREAM)
                body.end()
            else:
                self.request.connection.stream.close()  # truncated on purpose: the client errs
        except StreamClosedError:
            return

    async def get(self):
        who = self.get_query_argument("user", None)
        if who is not None and who != self.username and not await self.is_admin():
            raise ServiceError(
                403, f"listing other users' queries needs the scope {QUERY_ADMIN} and a current "
                f"{self.app.admin_group!r} membership",
            )  # fmt: skip
        every = self.get_query_argument("all", "false")
        if every not in ("true", "false", "1", "0"):
            raise ServiceError(400, "'all' must be true or false")
        if every in ("1", "true"):
            if not await self.is_admin():
                raise ServiceError(
                    403, f"listing every user's queries needs the scope {QUERY_ADMIN} and a "
                    f"current {self.app.admin_group!r} membership",
                )  # fmt: skip
            who = None
        elif who is None:
            who = self.username
        limit = self.int_arg("limit", 50, 1, 1000)
        before = self.get_query_argument("before", None)
        recs = await self.app.fort_store.run(self.runner.records.list, who, limit, before)
        self.write_json({"queries": [r.public() for r in recs]})


class ChunkedBody:
    """A streamed response body whose pieces are sent without being copied. Tornado frames
    an HTTP/1.1 answer without Content-Length as chunks, joining each chunk with its framing
    (two copies of every piece; ``RequestHandler.write`` also takes ``bytes`` only): here the
    chunks are written to the connection's stream in the same format, each piece as it is,
    and tornado writes the last chunk on ``finish``. An HTTP/1.0 answer (not chunked) uses
    ``write`` and ``flush``."""

    def __init__(self, handler: FortHandler):
        self.handler = handler
        # tornado chunks the body of an HTTP/1.1 answer sent without Content-Length (the
        # streamed answer never sets one)
        self.framed = handler.request.version == "HTTP/1.1" and handler.request.method != "HEAD"
        self.started = False

    async def send(self, data) -> None:
        h = self.handler
        if not self.started:
            await h.flush()  # the status line and the headers
            self.started = True
        view = memoryview(data).cast("B")
        if not view.nbytes:
            return  # an empty chunk would end the body
        if not self.framed:
            h.write(bytes(view))
            await h.flush()
            return
        stream = h.request.connection.stream
        stream.write(b"%x\r\n" % view.nbytes)
        stream.write(view)
        await stream.write(b"\r\n")

    def end(self) -> None:
        self.handler.finish()  # tornado ends a chunked body with the last, empty chunk


class QueryHandler(QueryHandlerBase):
    query_params = ("wait",)

    async def get(self, query_id):
        rec = await self.load(query_id)
        wait = self.int_arg("wait", 0, 0, 60)
        if wait and rec.state in INFLIGHT:
            await self.runner.wait_finished(rec.id, wait)  # long poll: answer once it finished
            rec = await self.load(query_id)
        self.write_json(rec.public())

    async def delete(self, query_id):
        rec = await self.load(query_id)
        if rec.state not in INFLIGHT:
            raise ServiceError(409, f"query {rec.id} is already {rec.state}")
        await self.audit("query.cancel", rec.dataset, "cancelled by request", {"query_id": rec.id})
        await self.runner.cancel(rec)
        self.write_json({"id": rec.id, "state": "cancelling"}, status=202)


class ResultsHandler(QueryHandlerBase):
    query_params = ("format", "page_token", "max_rows", "follow")
    served = 0  # result bytes written (fort_query_served_bytes)

    def write(self, chunk) -> None:
        super().write(chunk)
        if self.get_status() < 400 and isinstance(chunk, bytes | str):
            self.served += len(chunk)

    def on_finish(self) -> None:
        self.app.metrics.result_served(self.served)

    async def get(self, query_id):
        rec = await self.load(query_id)
        follow = self.get_query_argument("follow", "false")
        if follow not in ("true", "false"):
            raise ServiceError(400, "'follow' must be true or false")
        await self.may_download(rec)
        if rec.state in INFLIGHT and follow == "true" and self.pick_format() == "arrow":
            live = self.runner.live_outcome(rec.id)
            if live is not None and await self.follow(rec, live):
                return
            # running elsewhere, or done before it could be followed: wait for its record
            await self.runner.wait_finished(rec.id, self.app.query_timeout + 60)
            rec = await self.load(query_id)
        if rec.state in INFLIGHT:
            raise ServiceError(
                409, f"query {rec.id} is still {rec.state}; poll GET queries/{rec.id} or "
                "stream with ?follow=true",
            )  # fmt: skip
        if rec.state != "succeeded":
            raise ServiceError(409, f"query {rec.id} {rec.state}: {rec.error or 'no result'}")
        await self.send_stored(rec)

    async def send_stored(self, rec: QueryRecord) -> None:
        """The stored result, from the result store (whichever replica ran the query). The
        download's audit record is committed once its first piece is built (a result that
        cannot be written in the format asked is refused, 422, recorded as a denied download)
        and before a byte of it is sent (fail closed)."""
        store, run = self.runner.results, self.app.fort_store.run
        gone = ServiceError(410, f"the result of query {rec.id} has expired; run the query again")
        if not rec.result_path:
            raise gone
        try:
            size = await run(store.size, rec.id)
        except FileNotFoundError:
            raise gone from None
        fmt = self.pick_format()
        offset = self.page_offset() if fmt == "json" else 0
        max_rows = self.int_arg("max_rows", 1000, 1, MAX_PAGE_ROWS) if fmt == "json" else 0
        details = {"query_id": rec.id, "format": fmt, "owner": rec.username, "offset": offset}
        try:
            chunks, first = await self.first_piece(rec, fmt, offset, max_rows, gone)
        except ServiceError as refusal:  # the format cannot hold it: refused, and audited so
            if refusal.status == 422:
                await self.audit("query.download", rec.dataset, refusal.message, details,
                                 decision="deny")  # fmt: skip
            raise
        try:
            await self.audit("query.download", rec.dataset, f"result as {fmt}", details)
        except BaseException:
            if chunks is not None:
                chunks.close()
            raise
        if fmt == "json":
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(first)
            return
        self.set_header("Content-Type", FORMATS[fmt] + ("; charset=UTF-8" if fmt == "csv" else ""))
        if fmt == "arrow":  # the stored stream: its size is known, no chunking
            self.set_header("Content-Length", str(size))
        try:
            chunk = first
            while chunk is not None:
                self.write(chunk)
                await self.flush()
                chunk = await run(next, chunks, None)
        except StreamClosedError:
            return
        finally:
            chunks.close()
        self.finish()

    async def first_piece(self, rec: QueryRecord, fmt: str, offset: int, max_rows: int, gone):
        """(the rest of the answer's pieces, its first piece); a JSON page is one piece (None,
        the page)."""
        store, run = self.runner.results, self.app.fort_store.run
        try:
            if fmt == "json":
                data = await run(R.page, store, rec.id, offset, max_rows)
                nxt = data.pop("next_offset")
                data["next_page_token"] = None if nxt is None else str(nxt)
                data["id"] = rec.id
                return None, R.json_dumps(data)
            chunks = R.iter_bytes(store, rec.id) if fmt == "arrow" else R.iter_csv(store, rec.id)
            return chunks, await run(next, chunks, None)
        except FileNotFoundError:  # removed between the size check and the read
            raise gone from None
        except R.RowTooLarge as e:
            raise ServiceError(422, str(e)) from None
        except (pa.ArrowException, OverflowError, ValueError) as e:  # e.g. a list column in CSV
            raise ServiceError(
                422,
                f"this result cannot be written as {fmt} ({type(e).__name__}: "
                f"{str(e)[:200]}); download it with format=arrow",
            ) from None

    async def may_download(self, rec: QueryRecord) -> None:
        """A result is data: its owner must still be granted the dataset now (a membership
        that ended since the query ran ends the download too). Refusals are audited. Others'
        results reach only admins, whose power :meth:`load` checked just now."""
        if rec.username != self.username:
            return
        policy, groups = await self.runner.effective_groups(self.username)
        try:
            self.runner.may_query(policy, self.username, groups, rec.dataset)
        except ServiceError as refusal:
            await self.audit(
                "query.download", rec.dataset, refusal.message,
                {"query_id": rec.id, "owner": rec.username}, decision="deny",
            )  # fmt: skip
            raise

    async def follow(self, rec: QueryRecord, live: asyncio.Future) -> bool:
        """Stream the Arrow result while the query (running here) still writes it. The last 8
        bytes (the end-of-stream marker) are held back until the query succeeded, so a query
        that fails midway leaves the client with a truncated stream, never a complete-looking
        one. False when the query finished before its spool file could be opened (the caller
        then serves the stored result)."""
        f, idle = None, _Idle()
        while f is None:
            spool = self.runner.live_spool(rec.id)  # None until the engine has a schema
            if spool:
                with contextlib.suppress(FileNotFoundError):
                    f = open(spool, "rb")  # noqa: SIM115 - closed below
            if f is None:
                if live.done():
                    state, error = live.result()
                    if state == "succeeded":
                        return False
                    raise ServiceError(409, f"query {rec.id} {state}: {error or 'no result'}")
                await idle.wait(progress=False)
        await self.audit(
            "query.download", rec.dataset, "result as arrow (followed while running)",
            {"query_id": rec.id, "format": "arrow", "owner": rec.username, "offset": 0},
        )  # fmt: skip
        sent = 0
        try:
            self.set_header("Content-Type", ARROW)
            while True:
                done = live.done()
                ok = done and live.result()[0] == "succeeded"
                limit = os.fstat(f.fileno()).st_size - (0 if ok else 8)
                progress = sent < limit
                while sent < limit:
                    chunk = f.read(min(R.CHUNK, limit - sent))
                    sent += len(chunk)
                    self.write(chunk)
                    await self.flush()
                if done:
                    break
                await idle.wait(progress)
        except StreamClosedError:
            return True
        finally:
            f.close()
        if not ok:
            state, error = live.result()
            if sent == 0:
                raise ServiceError(409, f"query {rec.id} {state}: {error or 'no result'}")
            self.request.connection.stream.close()  # truncated on purpose: the client errs
            return True
        self.finish()
        return True

    def pick_format(self) -> str:
        fmt = self.get_query_argument("format", None)
        if fmt is not None:
            if fmt not in FORMATS:
                raise ServiceError(
                    400, f"format must be one of {', '.join(FORMATS)}, not '{fmt[:32]}'"
                )
            return fmt
        accept = self.request.headers.get("Accept", "")
        for name, mime in FORMATS.items():
            if mime in accept:
                return name
        return "json"

    def page_offset(self) -> int:
        token = self.get_query_argument("page_token", None)
        if token is None:
            return 0
        if not re.fullmatch(r"\d{1,15}", token):
            raise ServiceError(
                400, "page_token is not valid: use next_page_token from the previous page"
            )
        return int(token)


class DatasetsHandler(QueryHandlerBase):
    async def get(self):
        policy, groups = await self.runner.effective_groups(self.username)
        datasets = await describe_datasets(self.runner, policy, groups, self.username)
        self.write_json({"datasets": datasets})


class UsageHandler(QueryHandlerBase):
    async def get(self):
        policy, groups = await self.runner.effective_groups(self.username)
        quota = policy.quota_for(groups)
        inflight = await self.app.fort_store.run(self.runner.records.inflight_count, self.username)
        usage = await self.app.fort_store.run(
            self.runner.quotas.usage, self.username, quota, inflight
        )
        self.write_json({"user": self.username, "limits": usage})


class OpenAPIHandler(FortHandler):
    """The API description; public (it holds no data)."""

    authenticated = False

    def get(self):
        with open(OPENAPI, "rb") as f:
            self.set_header("Content-Type", "application/json")
            self.finish(f.read())


def handlers() -> list[tuple]:
    q = r"([^/]+)"
    return [
        ("", MyAccessPage),
        ("api/v1/openapi.json", OpenAPIHandler),
        ("api/v1/queries", QueriesHandler),
        (f"api/v1/queries/{q}", QueryHandler),
        (f"api/v1/queries/{q}/results", ResultsHandler),
        ("api/v1/datasets", DatasetsHandler),
        ("api/v1/usage", UsageHandler),
    ]
