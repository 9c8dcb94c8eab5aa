"""``FortClient``: query the fort warehouse from a notebook.

    from fort_hub.client import FortClient
    fort = FortClient()                      # token and URLs from the notebook's environment
    table = fort.query("SELECT country, count(*) FROM url_shares GROUP BY 1", dataset="url_shares")
    df = table.to_pandas()

Reads ``JUPYTERHUB_API_TOKEN`` and ``FORT_QUERY_URL`` (else ``FORT_SERVICES_URL`` + ``fort-query/``).
Needs only ``requests`` and ``pyarrow`` (the ``[client]`` extra); never imports jupyterhub.
"""

from __future__ import annotations

import http.client
import os
import time
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import requests
import urllib3

from .display import Datasets, Progress, Usage

ARROW = "application/vnd.apache.arrow.stream"


class FortQueryError(Exception):
    """The service refused or failed the request; ``str(e)`` is the server's message.

    ``status`` is the HTTP status of a refusal, ``query_id`` the query that failed, ``detail``
    the engine's original message when the service rewrote it (e.g. DuckDB's "Binder Error:
    ..."). IPython and Jupyter show it as one line, without the client's frames."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        query_id: str | None = None,
        detail: str | None = None,
    ):
        super().__init__(message)
        self.message, self.status, self.query_id = message, status, query_id
        self.detail = detail

    def _render_traceback_(self) -> list[str]:  # IPython's hook for custom tracebacks
        status = f" (HTTP {self.status})" if self.status else ""
        return [f"{type(self).__name__}{status}: {self.message}"]


class FortRefused(FortQueryError):
    """The request was refused (400 bad SQL or input, 403 no grant, 404, 409, 413)."""


class FortQuotaExceeded(FortRefused):
    """A usage limit (429): ``quota`` is ``{"limit", "used", "max", "resets"}``,
    ``retry_after`` the seconds the service asks to wait."""

    def __init__(self, message: str, status: int | None = 429, quota: dict | None = None,
                 retry_after: int | None = None):  # fmt: skip
        super().__init__(message, status)
        self.quota, self.retry_after = quota or {}, retry_after


class FortQueryFailed(FortQueryError):
    """The query ran and failed, or was cancelled (``state``)."""

    def __init__(self, message: str, query_id: str | None = None, detail: str | None = None,
                 state: str = "failed"):  # fmt: skip
        super().__init__(message, query_id=query_id, detail=detail)
        self.state = state


def _service_url(name: str, specific: str) -> str:
    url = os.environ.get(specific)
    if not url:
        base = os.environ.get("FORT_SERVICES_URL")
        if not base:
            raise FortQueryError(f"set {specific} or FORT_SERVICES_URL (the fort services' URL)")
        url = base.rstrip("/") + f"/{name}/"
    return url if url.endswith("/") else url + "/"


def session_for(url: str) -> requests.Session:
    """A session for requests to *url* with the environment's settings for it (proxies and
    ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``) read once, here: a plain session
    reads the environment again on every request (and ``~/.netrc``, which never applies to
    this client: it sends its own Authorization header)."""
    session = requests.Session()
    found = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(found["proxies"])
    session.verify = found["verify"]
    if found.get("cert"):
        session.cert = found["cert"]
    session.trust_env = False
    return session


class _BodyReader:
    """The body of a streamed answer for Arrow's stream reader: each read fills a buffer of
    Arrow's memory pool with ``readinto`` of the underlying ``http.client`` response, which
    decodes the chunked body straight into it (urllib3's ``read`` copies each piece once or
    twice more). Used when the body is not content-encoded."""

    closed = False

    def __init__(self, fp):
        self.fp = fp

    def read(self, n: int = -1):
        if n is None or n < 0:
            return self.fp.read()
        buf = pa.allocate_buffer(n)
        view, got = memoryview(buf).cast("B"), 0
        while got < n:
            k = self.fp.readinto(view[got:])
            if not k:
                break
            got += k
        return buf if got == n else buf.slice(0, got)

    def close(self) -> None:
        pass


def _plain_body(r: requests.Response):
    """The ``http.client`` response under *r* when its body can be read there directly (not
    content-encoded), else None: urllib3 reads and decodes it."""
    fp = getattr(r.raw, "_fp", None)
    if r.headers.get("Content-Encoding") or not hasattr(fp, "readinto"):
        return None
    return fp


def _arrow_body(r: requests.Response):
    fp = _plain_body(r)
    if fp is None:
        r.raw.decode_content = True
        return r.raw
    return _BodyReader(fp)


#: at most this many bytes after an Arrow stream's end are read to reuse the connection
_TAIL_BYTES = 64 * 1024


def _release_if_read(r: requests.Response) -> None:
    """After the Arrow stream of *r* ended: read what is left of the answer (a chunked
    body's last chunk, normally nothing else) and hand its connection back to the session's
    pool, so that the next call does not open a new one. A body with more than
    ``_TAIL_BYTES`` left, or one whose rest cannot be read, is left: closing the response then
    closes the connection (the table read is whole either way)."""
    fp = _plain_body(r)
    try:
        if fp is None:
            r.raw.read(_TAIL_BYTES)  # urllib3 hands the connection back once the body ended
            return
        if not fp.isclosed():
            fp.read(_TAIL_BYTES)
    except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError):
        return
    if fp.isclosed():  # http.client read the whole answer: the connection is clean
        r.raw.release_conn()


class FortClient:
    """A client of the fort-query API v1 (see docs/query.md)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 60,
        session: requests.Session | None = None,
    ):
        self.url = (url.rstrip("/") + "/") if url else _service_url("fort-query", "FORT_QUERY_URL")
        self.api = self.url + "api/v1/"
        token = token or os.environ.get("JUPYTERHUB_API_TOKEN")
        if not token:
            raise FortQueryError("JUPYTERHUB_API_TOKEN is not set (are you in a fort notebook?)")
        self.timeout = timeout
        self.session = session or session_for(self.api)
        self.session.headers["Authorization"] = f"token {token}"

    # ----- plumbing -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", self.timeout)
        try:
            r = self.session.request(method, self.api + path, **kw)
        except requests.RequestException as e:
            raise FortQueryError(f"fort-query is unreachable at {self.api}: {e}") from None
        if r.status_code >= 400:
            raise self._refusal(r)
        return r

    @staticmethod
    def _refusal(r: requests.Response) -> FortQueryError:
        """The server's error as an exception: its message, its class by status."""
        try:
            error = r.json()["error"]
            message = error["message"]
        except (ValueError, KeyError, TypeError):
            error, message = {}, f"HTTP {r.status_code}: {r.text[:200]}"
        if r.status_code == 429:
            retry = r.headers.get("Retry-After", "")
            return FortQuotaExceeded(
                message, 429, error.get("quota"), int(retry) if retry.isdigit() else None
            )
        if r.status_code < 500:
            return FortRefused(message, r.status_code)
        return FortQueryError(message, r.status_code)

    @staticmethod
    def _failed(st: dict) -> FortQueryFailed:
        return FortQueryFailed(
            st.get("error") or st["state"], st.get("id"), st.get("error_detail"), st["state"]
        )

    def _json(self, method: str, path: str, **kw) -> Any:
        return self._request(method, path, **kw).json()

    # ----- API ----------------------------------------------------------------------------------

    def submit(self, sql: str, dataset: str) -> str:
        """Start a query; returns its id."""
        return self._json("POST", "queries", json={"sql": sql, "dataset": dataset})["id"]

    def status(self, query_id: str, wait: int = 0) -> dict:
        """The query's record; with *wait*, the server holds the answer up to *wait* seconds
        until the query finished (a long poll)."""
        return self._json("GET", f"queries/{query_id}", params={"wait": wait} if wait else None)

    def wait(self, query_id: str, progress: bool = True) -> dict:
        """Wait (long polls of one second) until the query finished; raise
        :class:`FortQueryError` if it did not succeed."""
        bar = Progress(progress)
        start = time.monotonic()
        while True:
            st = self.status(query_id, wait=1)
            if st["state"] not in ("queued", "running"):
                break
            bar.show(f"fort-query {query_id[:8]}: {st['state']} {time.monotonic() - start:.1f}s")
        if st["state"] != "succeeded":
            bar.done(f"fort-query {query_id[:8]}: {st['state']}", always=False)
            raise self._failed(st) from None
        if time.monotonic() - start > 0.5:
            bar.done(
                f"fort-query {query_id[:8]}: {st['rows']} rows in {time.monotonic() - start:.1f}s"
            )
        return st

    def results(self, query_id: str, follow: bool = False) -> pa.Table:
        """The result of a query as a ``pyarrow.Table`` (streamed as Arrow IPC).

        With *follow*, the download starts while the query still runs (``?follow=true``): the
        first bytes arrive only when the engine produced its first batch, so the read waits
        without a timeout (the service ends it within its ``query_timeout``). A query that
        fails midway raises :class:`FortQueryError` with its error."""
        params = {"follow": "true"} if follow else None
        timeout = (self.timeout, None) if follow else self.timeout
        r = self._request(
            "GET", f"queries/{query_id}/results", headers={"Accept": ARROW}, params=params,
            stream=True, timeout=timeout,
        )  # fmt: skip
        return self._read_arrow(r, query_id)

    def _read_arrow(self, r: requests.Response, query_id: str) -> pa.Table:
        """The Arrow stream answered in *r*; a stream cut off because the query failed raises
        :class:`FortQueryError` with the query's error."""
        try:
            table = ipc.open_stream(_arrow_body(r)).read_all()
        except Exception as e:  # a cut-off stream surfaces as arrow, urllib3 or http errors
            r.close()
            # the stream ends as soon as the engine failed; the final state is recorded just
            # after, so ask with a long poll (it answers once the query is finished)
            st = self.status(query_id, wait=10)
            if st["state"] != "succeeded":
                raise self._failed(st) from None
            raise FortQueryError(f"the result download broke off: {e}", query_id=query_id) from None
        _release_if_read(r)
        r.close()
        return table

    #: seconds a submit waits for the result in its own answer (``POST queries?wait=``)
    submit_wait = 0.5

    def _submit_waiting(self, sql: str, dataset: str) -> pa.Table | str:
        """Submit and wait in one request: the result as a table when it came back in the
        answer (whole, or streamed while the query runs), else the query's id (still running
        after :attr:`submit_wait` seconds, or ended without a result)."""
        r = self._request(
            "POST", "queries", params={"wait": self.submit_wait},
            json={"sql": sql, "dataset": dataset}, headers={"Accept": ARROW}, stream=True,
            timeout=(self.timeout, None),
        )  # fmt: skip
        if r.headers.get("Content-Type", "").startswith(ARROW):
            return self._read_arrow(r, r.headers.get("X-Fort-Query-Id", ""))
        try:
            return r.json()["id"]
        finally:
            r.close()

    def query(self, sql: str, dataset: str, progress: bool = True) -> pa.Table:
        """Run *sql* on *dataset* and return the result (``.to_pandas()`` for a DataFrame).

        One request when the query ends within a few seconds (the result comes back in the
        submit's answer); otherwise waits with long polls (a progress line shows the query's
        state), then downloads the result as an Arrow stream."""
        got = self._submit_waiting(sql, dataset)
        if isinstance(got, pa.Table):
            return got
        self.wait(got, progress=progress)
        return self.results(got)

    def datasets(self) -> Datasets:
        """The datasets you may query: a list of dicts (``name``, ``description``, ``engine``,
        ``tables`` with their ``columns``, declared ``noise``), shown as a table of columns."""
        return Datasets(self._json("GET", "datasets")["datasets"])

    def noise(self, dataset: str) -> dict[str, dict]:
        """The additive noise *dataset* declares by column (the access policy's
        ``datasets[].noise``), e.g. ``{"shares": {"distribution": "gaussian", "variance": 196}}``;
        ``fort_hub.inference`` corrects estimates for it."""
        for d in self.datasets():
            if d["name"] == dataset:
                return d.get("noise") or {}
        raise FortQueryError(f"no dataset {dataset!r} among the ones you may query")

    def usage(self) -> Usage:
        """Your quotas and today's use: a dict ``{limit: {"used", "max", "resets"}}`` shown as
        a table (``fort.usage()["bytes_scanned_per_day"]["used"]``)."""
        body = self._json("GET", "usage")
        return Usage(body["limits"], body.get("user"))

    def history(self, limit: int = 50) -> list[dict]:
        return self._json("GET", "queries", params={"limit": limit})["queries"]

    def cancel(self, query_id: str) -> dict:
        return self._json("DELETE", f"queries/{query_id}")
