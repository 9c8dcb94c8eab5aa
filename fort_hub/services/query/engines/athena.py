"""The Athena engine: serverless SQL at web scale, run as the user.

Each query runs with the caller's own short-lived STS session (AssumeRole of the policy's role
for the caller's group, session name ``fort-<user>``, so CloudTrail attributes the query to the
user), in the dataset's workgroup. The engine polls with exponential backoff, stops the query on
cancel, reports ``DataScannedInBytes`` (counted against the quota) and reads the result CSV
object from S3 straight into Arrow batches (like PyAthena's fast cursors); when the object cannot
be read it falls back to paging ``GetQueryResults``.

The credentials come from a :class:`CredentialsProvider` (chosen by
``c.AthenaEngine.credentials_provider_class``): ``session(username, role_arn, region, group)``
returns a ``boto3.Session``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import boto3
import pyarrow as pa
import pyarrow.csv as pacsv
from botocore.exceptions import BotoCoreError, ClientError
from jupyterhub.traitlets import EntryPointType
from traitlets import Float, Integer, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from ....naming import check_username_problem
from ....policy.model import Dataset
from ...credentials.backends import StsBackend, StsError, user_session
from .base import EngineError, EngineJob, Outcome, QueryCancelled, QueryEngine, ResultSink
from .errors import plain_athena_error

#: seconds a cancelled execution is polled on, until Athena reports it stopped with its scan
STOP_WAIT = 5.0

ATHENA_TYPES = {
    "boolean": pa.bool_(), "tinyint": pa.int8(), "smallint": pa.int16(),
    "integer": pa.int32(), "int": pa.int32(), "bigint": pa.int64(), "float": pa.float32(),
    "real": pa.float32(), "double": pa.float64(), "date": pa.date32(),
    "timestamp": pa.timestamp("ms"), "varchar": pa.string(), "char": pa.string(),
    "string": pa.string(),
}  # fmt: skip


def arrow_type(athena_type: str) -> pa.DataType:
    return ATHENA_TYPES.get(athena_type.split("(", 1)[0].strip().lower(), pa.string())


def data_scanned(execution: dict) -> int:
    """``Statistics.DataScannedInBytes`` of an Athena query execution (0 if absent); Athena
    reports it for failed and cancelled executions too, and fort counts it for them as well."""
    value = (execution.get("Statistics") or {}).get("DataScannedInBytes") or 0
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _stop_quietly(athena, qid: str) -> None:
    with contextlib.suppress(ClientError, BotoCoreError):
        athena.stop_query_execution(QueryExecutionId=qid)


def _aws_message(e: Exception) -> str:
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip()
    return str(e).splitlines()[0] if str(e) else type(e).__name__


class CredentialsProvider(LoggingConfigurable):
    """Gives a boto3 session acting as *username* in *role_arn*. Override :meth:`session`."""

    def session(self, username: str, role_arn: str, region: str, group: str = "") -> boto3.Session:
        """*group* is the caller's group that holds *role_arn* (for session tags)."""
        raise NotImplementedError


class AssumeRoleProvider(CredentialsProvider):
    """STS AssumeRole with the service's own AWS credentials, cached until shortly before
    expiry: the same session fort-credentials vends to notebooks
    (:func:`fort_hub.services.credentials.backends.user_session`), through the same
    :class:`~fort_hub.services.credentials.backends.StsBackend` (``c.StsBackend.*`` settings
    apply to both), without an inline policy."""

    duration = Integer(
        3600,
        help="""Seconds the assumed-role session lasts (900..43200).

            c.AssumeRoleProvider.duration = 900
        """,
    ).tag(config=True)

    @validate("duration")
    def _validate_duration(self, proposal):
        if not 900 <= proposal["value"] <= 43200:
            raise TraitError("AssumeRoleProvider.duration must be between 900 and 43200 seconds")
        return proposal["value"]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sts = StsBackend(parent=self)
        self._cache: dict[tuple[str, str, str], tuple[float, boto3.Session]] = {}
        self._lock = threading.Lock()

    def session(self, username: str, role_arn: str, region: str, group: str = "") -> boto3.Session:
        if not role_arn:
            raise EngineError(
                "no AWS role is given to your groups for this dataset (policy aws.roles)"
            )
        problem = check_username_problem(username)  # the session name, identity and tags
        if problem:
            raise EngineError(f"{problem}; ask a fort admin to rename the account")
        key = (username, role_arn, group)
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[0] > time.time() + 300:
                return hit[1]
        request = user_session(username, role_arn, group, region, self.duration)
        try:
            creds = self.sts.assume_role_blocking(request)
        except StsError as e:
            raise EngineError(f"your AWS role could not be assumed: {e}") from None
        session = boto3.Session(
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            aws_session_token=creds.session_token,
            region_name=region,
        )
        with self._lock:
            self._cache[key] = (creds.expiration.timestamp(), session)
        return session


class AthenaEngine(QueryEngine):
    """Runs queries on Amazon Athena as the user (see the module docstring)."""

    dialect = "athena"

    credentials_provider_class = EntryPointType(
        AssumeRoleProvider,
        klass=CredentialsProvider,
        entry_point_group="fort_hub.athena_credentials",
        help="""How the per-user AWS session is made: an entry point name of the
        `fort_hub.athena_credentials` group (`assume-role`: `AssumeRoleProvider`) or an import
        string.

            c.AthenaEngine.credentials_provider_class = "mypackage.MyProvider"
        """,
    ).tag(config=True)

    region = Unicode(
        "",
        help="""AWS region; empty uses the policy's `aws.region`.

            c.AthenaEngine.region = "eu-west-1"
        """,
    ).tag(config=True)

    poll_initial = Float(0.2, help="First wait between GetQueryExecution polls, seconds.").tag(
        config=True
    )
    poll_max = Float(3.0, help="Longest wait between polls (exponential backoff x1.5).").tag(
        config=True
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.credentials = self.credentials_provider_class(parent=self)
        self._running: dict[str, tuple] = {}
        self._cancelled: set[str] = set()

    def target(self, dataset: Dataset) -> tuple[str | None, str | None]:
        loc = dataset.location
        return (loc.get("catalog") or "awsdatacatalog", loc.get("database"))

    def _client(self, job: EngineJob, service: str):
        region = self.region or job.extra.get("region") or "us-east-1"
        group = job.extra.get("group", "")
        return self.credentials.session(job.username, job.role_arn, region, group).client(service)

    async def describe(self, dataset: Dataset, job: EngineJob | None = None) -> dict[str, list]:
        if job is None:
            return {t: [] for t in dataset.tables}

        def _describe():
            athena = self._client(job, "athena")
            catalog, db = self.target(dataset)
            out = {}
            for table in dataset.tables:
                try:
                    meta = athena.get_table_metadata(
                        CatalogName=catalog, DatabaseName=db, TableName=table
                    )["TableMetadata"]
                    out[table] = [{"name": c["Name"], "type": c["Type"]} for c in meta["Columns"]]
                except (ClientError, BotoCoreError):
                    out[table] = []
            return out

        return await asyncio.to_thread(_describe)

    async def run(self, job: EngineJob, sink: ResultSink) -> Outcome:
        qid, scanned = "", None  # a failed or cancelled execution's scan counts too
        try:
            athena = await asyncio.to_thread(self._client, job, "athena")
            qid = await asyncio.to_thread(self._start, athena, job)
            self._running[job.id] = (athena, qid)
            if job.id in self._cancelled:
                await self.cancel(job.id)
            execution = await self._poll(athena, qid, job.id)
            scanned = data_scanned(execution)
            output = execution.get("ResultConfiguration", {}).get("OutputLocation", "")
            await asyncio.to_thread(self._fetch, job, athena, qid, output, sink)
            return Outcome(rows=sink.rows, bytes_scanned=scanned, engine_id=qid)
        except (ClientError, BotoCoreError) as e:
            if qid and scanned is None:  # it may still run (and scan): stop it
                await asyncio.to_thread(_stop_quietly, athena, qid)
            error = EngineError(f"Athena: {_aws_message(e)}")
            error.bytes_scanned, error.engine_id = scanned, qid
            raise error from None
        except EngineError as e:  # failed, cancelled, or over a cap while fetched
            if e.bytes_scanned is None:
                e.bytes_scanned = scanned
            e.engine_id = e.engine_id or qid
            raise
        finally:
            self._running.pop(job.id, None)
            self._cancelled.discard(job.id)

    def _start(self, athena, job: EngineJob) -> str:
        loc = job.dataset.location
        catalog, db = self.target(job.dataset)
        params = {
            "QueryString": job.sql,
            "QueryExecutionContext": {"Catalog": catalog, "Database": db},
            "WorkGroup": loc.get("workgroup", "primary"),
        }
        if 32 <= len(job.id) <= 128:  # idempotent retries of the same fort query
            params["ClientRequestToken"] = job.id
        if loc.get("output_location"):
            params["ResultConfiguration"] = {"OutputLocation": loc["output_location"]}
        return athena.start_query_execution(**params)["QueryExecutionId"]

    async def _poll(self, athena, qid: str, job_id: str) -> dict:
        """The execution once it SUCCEEDED; raises once it failed or was cancelled, with the
        bytes it scanned (a cancelled one is polled up to :data:`STOP_WAIT` seconds more, until
        Athena has stopped it and its final scan is known)."""
        delay, stopping = self.poll_initial, 0.0
        while True:
            ex = (await asyncio.to_thread(athena.get_query_execution, QueryExecutionId=qid))[
                "QueryExecution"
            ]
            state = ex["Status"]["State"]
            if state == "SUCCEEDED":
                return ex
            cancelled = job_id in self._cancelled
            if cancelled and state not in ("CANCELLED", "FAILED"):  # stopping: its final scan
                stopping = stopping or asyncio.get_running_loop().time() + STOP_WAIT
                if asyncio.get_running_loop().time() < stopping:  # counts, once Athena has it
                    await asyncio.sleep(delay)
                    delay = min(delay * 1.5, self.poll_max)
                    continue
            if state == "CANCELLED" or cancelled:
                error = QueryCancelled("cancelled")
            elif state == "FAILED":
                reason = f"Athena: {ex['Status'].get('StateChangeReason', 'the query failed')}"
                plain = plain_athena_error(reason)
                error = EngineError(plain, detail=reason if plain != reason else None)
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, self.poll_max)
                continue
            error.bytes_scanned = data_scanned(ex)  # as of its last state: at least that
            raise error

    def _fetch(self, job, athena, qid: str, output: str, sink: ResultSink) -> None:
        first = athena.get_query_results(QueryExecutionId=qid, MaxResults=1)
        columns = first["ResultSet"]["ResultSetMetadata"].get("ColumnInfo", [])
        schema = pa.schema([(c["Name"], arrow_type(c.get("Type", "varchar"))) for c in columns])
        if output.startswith("s3://") and output.endswith(".csv"):
            try:
                self.read_s3_csv(self._client(job, "s3"), output, schema, sink)
                return
            except (ClientError, BotoCoreError, pa.ArrowInvalid) as e:
                self.log.info(
                    "Athena %s: reading %s failed (%s); paging", qid, output, _aws_message(e)
                )
                if sink.rows:
                    raise EngineError("the result object could not be read completely") from None
        self.page_results(athena, qid, schema, sink)

    @staticmethod
    def read_s3_csv(s3, uri: str, schema: pa.Schema, sink: ResultSink) -> None:
        """Stream the CSV result object at *uri* into *sink*, batch by batch."""
        bucket, _, key = uri[len("s3://") :].partition("/")
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        names = schema.names or None
        reader = pacsv.open_csv(
            pa.PythonFile(body, mode="r"),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1 if names else 0),
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: f.type for f in schema}, strings_can_be_null=True
            ),
        )
        sink.set_schema(reader.schema)
        for batch in reader:
            sink.write(batch)

    @staticmethod
    def page_results(athena, qid: str, schema: pa.Schema, sink: ResultSink) -> None:
        """GetQueryResults pages (the first row of the first page is the header)."""
        sink.set_schema(schema)
        token, first = None, True
        while True:
            kw = {"QueryExecutionId": qid, "MaxResults": 1000}
            if token:
                kw["NextToken"] = token
            page = athena.get_query_results(**kw)
            rows = page["ResultSet"]["Rows"][1 if first else 0 :]
            first = False
            if rows:
                cols = list(
                    zip(*[[d.get("VarCharValue") for d in r["Data"]] for r in rows], strict=False)
                )
                arrays = [
                    pa.array(list(col), pa.string()).cast(f.type, safe=False)
                    for col, f in zip(cols, schema, strict=False)
                ]
                sink.write(pa.RecordBatch.from_arrays(arrays, schema=schema))
            token = page.get("NextToken")
            if not token:
                return

    async def cancel(self, job_id: str) -> None:
        self._cancelled.add(job_id)
        running = self._running.get(job_id)
        if running:
            athena, qid = running
            try:
                await asyncio.to_thread(athena.stop_query_execution, QueryExecutionId=qid)
            except (ClientError, BotoCoreError) as e:
                self.log.warning("StopQueryExecution %s failed: %s", qid, _aws_message(e))
