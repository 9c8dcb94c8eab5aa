"""One contract suite over the fort-query engines: DuckDB (real) and Athena (moto's
ThreadedMotoServer: canned results, so this tests the plumbing, not SQL semantics). Plus the
DuckDB connection hardening holding even when the SQL check is bypassed."""

from __future__ import annotations

import asyncio
import os
import re

import boto3
import pyarrow as pa
import pyarrow.parquet
import pytest
import requests

from fort_hub.policy.model import Dataset
from fort_hub.services.query.engines import worker as W
from fort_hub.services.query.engines.athena import AthenaEngine
from fort_hub.services.query.engines.base import (
    EngineError,
    EngineJob,
    QueryCancelled,
    ResultTooLarge,
)
from fort_hub.services.query.engines.duckdb import DuckDBEngine
from fort_hub.services.query.engines.pool import WorkerProcess
from fort_hub.services.query.results import FileSink
from tests.query_support import make_datasets

ROLE = "arn:aws:iam::123456789012:role/fort-urls-study"


@pytest.fixture
def aws_env(moto_url, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    requests.post(moto_url + "/moto-api/reset", timeout=10)
    return moto_url


def canned(moto_url, rows: list[list[str]], columns: list[tuple[str, str]]):
    """Queue one Athena result (the first row is the header, as Athena returns it)."""
    data = [{"Data": [{"VarCharValue": n} for n, _ in columns]}]
    data += [{"Data": [{"VarCharValue": v} if v is not None else {} for v in r]} for r in rows]
    info = [{"Name": n, "Label": n, "Type": t, "Nullable": "NULLABLE"} for n, t in columns]
    r = requests.post(moto_url + "/moto-api/static/athena/query-results",
                      json={"results": [{"rows": data, "column_info": info}]}, timeout=10)  # fmt: skip
    assert r.status_code == 201


class DuckCase:
    def __init__(self, tmp_path, **settings):
        make_datasets(tmp_path, rows=30)
        self.engine = DuckDBEngine(**settings)
        self.dataset = Dataset(
            "url_shares", "duckdb", tables=("url_shares",),
            location={"paths": {"url_shares": str(tmp_path / "data" / "url_shares.parquet")}},
        )  # fmt: skip

    def prepare(self, rows):
        pass

    def sql(self):
        return (
            'SELECT country, shares FROM "url_shares"."url_shares" ORDER BY shares, country LIMIT 3'
        )


class AthenaCase:
    def __init__(self, tmp_path, moto_url):
        self.moto_url = moto_url
        boto3.client("s3").create_bucket(Bucket="fort-athena-results")
        boto3.client("athena").create_work_group(
            Name="fort-urls",
            Configuration={
                "ResultConfiguration": {"OutputLocation": "s3://fort-athena-results/q/"}
            },
        )
        self.engine = AthenaEngine(poll_initial=0.01)
        self.dataset = Dataset(
            "url_shares", "athena", tables=("url_shares",),
            location={"database": "fort_urls", "workgroup": "fort-urls",
                      "output_location": "s3://fort-athena-results/q/"},
        )  # fmt: skip

    def prepare(self, rows):
        canned(
            self.moto_url,
            [[c, str(s)] for c, s in rows],
            [("country", "varchar"), ("shares", "bigint")],
        )

    def sql(self):
        return 'SELECT country, shares FROM "awsdatacatalog"."fort_urls"."url_shares" LIMIT 3'


@pytest.fixture(params=["duckdb", "athena"])
def case(request, tmp_path):
    if request.param == "duckdb":
        c = DuckCase(tmp_path)
        yield c
        c.engine.close()
        return
    yield AthenaCase(tmp_path, request.getfixturevalue("aws_env"))


def job(case, sql, jid="j1"):
    return EngineJob(id=jid, sql=sql, dataset=case.dataset, username="alice", role_arn=ROLE,
                     extra={"region": "us-east-1"})  # fmt: skip


def run(case, sql, tmp_path, max_rows=1000, jid="j1"):
    sink = FileSink(str(tmp_path / f"{jid}.arrows"), max_rows, 10**9)
    outcome = asyncio.run(case.engine.run(job(case, sql, jid), sink))
    sink.commit()
    return outcome, pa.ipc.open_stream(pa.memory_map(sink.path)).read_all()


# ----- the contract --------------------------------------------------------------------------


def test_contract_runs_and_streams_typed_batches(case, tmp_path):
    expected = [("BR", -20), ("DE", -13), ("US", -6)]
    case.prepare(expected)
    outcome, table = run(case, case.sql(), tmp_path)
    assert outcome.rows == 3 == table.num_rows
    assert table.column_names == ["country", "shares"]
    assert pa.types.is_integer(table.schema.field("shares").type)
    if isinstance(case, DuckCase):
        got = table.to_pylist()
        assert [r["shares"] for r in got] == sorted(r["shares"] for r in got)
    else:
        assert [tuple(r.values()) for r in table.to_pylist()] == expected
        assert outcome.engine_id  # the QueryExecutionId, for CloudTrail/Athena history


def test_contract_row_cap(case, tmp_path):
    case.prepare([("US", 1), ("DE", 2), ("BR", 3)])
    with pytest.raises(EngineError, match="max_result_rows"):
        run(case, case.sql(), tmp_path, max_rows=2)


def test_contract_target_and_dialect(case):
    _catalog, schema = case.engine.target(case.dataset)
    assert schema in ("url_shares", "fort_urls")
    assert case.engine.dialect in ("duckdb", "athena")


def test_contract_cancel(case, tmp_path):
    case.prepare([("US", 1)])

    async def go():
        sink = FileSink(str(tmp_path / "c.arrows"), 10**9, 10**12)
        sql = case.sql()
        if isinstance(case, DuckCase):
            # 30^8 rows: minutes of work, so it is surely running when the cancel comes
            sql = "SELECT count(*) FROM " + ", ".join(
                f'"url_shares"."url_shares" t{i}' for i in range(8)
            )
        task = asyncio.ensure_future(case.engine.run(job(case, sql, "c1"), sink))
        await asyncio.sleep(0.2 if isinstance(case, DuckCase) else 0)
        await case.engine.cancel("c1")
        return await task

    if isinstance(case, AthenaCase):
        # moto finishes instantly; a cancel before the first poll must still win
        case.engine.poll_initial = 0.5
    with pytest.raises(QueryCancelled):
        asyncio.run(go())


# ----- Athena specifics ------------------------------------------------------------------------


def record_assume_role(monkeypatch) -> list[dict]:
    """The AssumeRole calls made through StsBackend (what the engine asks STS for)."""
    from fort_hub.services.credentials.backends import StsBackend

    assumed, real = [], StsBackend.client

    def client(self, region):
        c = real(self, region)
        if not getattr(c, "fort_recorded", False):
            orig = c.assume_role
            c.assume_role = lambda **a: assumed.append(a) or orig(**a)
            c.fort_recorded = True
        return c

    monkeypatch.setattr(StsBackend, "client", client)
    return assumed


def test_athena_runs_as_the_user_in_the_workgroup(aws_env, tmp_path, monkeypatch):
    from fort_hub.services.query.engines import athena as athena_mod

    identities = []
    assumed = record_assume_role(monkeypatch)
    real_session = athena_mod.boto3.Session

    def session(**kw):  # the session the engine's Athena client is made from
        sess = real_session(**kw)
        identities.append(sess.client("sts").get_caller_identity()["Arn"])
        return sess

    monkeypatch.setattr(athena_mod.boto3, "Session", session)
    case = AthenaCase(tmp_path, aws_env)
    case.prepare([("US", 5)])
    j = job(case, case.sql())
    j.extra["group"] = "urls-study"
    sink = FileSink(str(tmp_path / "j.arrows"), 100, 10**9)
    outcome = asyncio.run(case.engine.run(j, sink))
    ex = boto3.client("athena").get_query_execution(QueryExecutionId=outcome.engine_id)[
        "QueryExecution"
    ]
    assert ex["WorkGroup"] == "fort-urls"
    assert ex["QueryExecutionContext"]["Database"] == "fort_urls"
    # one AssumeRole, shaped as the study roles' trust policy requires (docs/deploy-eks.md);
    # moto checks no trust policy, so the request itself is what is asserted
    (req,) = assumed
    assert req["RoleArn"] == ROLE
    assert (req["RoleSessionName"], req["SourceIdentity"]) == ("fort-alice", "alice")
    assert {t["Key"]: t["Value"] for t in req["Tags"]} == {
        "fort-user": "alice",
        "fort-group": "urls-study",
    }
    # the engine's clients were made from that assumed-role session, not the service's own
    assert identities and all("fort-urls-study/fort-alice" in arn for arn in identities)


def test_athena_session_names_are_sts_safe(aws_env, tmp_path, monkeypatch):
    assumed = record_assume_role(monkeypatch)
    engine = AthenaEngine()
    # a name outside the username rule (fort_hub.naming) never reaches STS (#10 finding 2)
    for bad in ("josé müller", "a*", "a?b", "${aws:username}"):
        with pytest.raises(EngineError, match="is not an allowed username"):
            engine.credentials.session(bad, ROLE, "us-east-1", "urls-study")
    assert assumed == []
    long = "a" * 70 + "@example.org"  # allowed, but longer than STS's 64 characters
    engine.credentials.session(long, ROLE, "us-east-1", "urls-study")
    (req,) = assumed
    for name in (req["RoleSessionName"], req["SourceIdentity"]):
        assert name.isascii() and re.fullmatch(r"[\w+=,.@-]{2,64}", name), name
    assert req["RoleSessionName"].startswith("fort-aaaa")


def test_athena_reads_the_s3_result_object_into_arrow(aws_env, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="res")
    s3.put_object(Bucket="res", Key="q.csv", Body=b'"country","shares"\n"US","7"\n"DE",\n')
    sink = FileSink(str(tmp_path / "s.arrows"), 100, 10**9)
    schema = pa.schema([("country", pa.string()), ("shares", pa.int64())])
    AthenaEngine.read_s3_csv(s3, "s3://res/q.csv", schema, sink)
    sink.commit()
    table = pa.ipc.open_stream(pa.memory_map(sink.path)).read_all()
    assert table.schema == schema
    assert table.to_pylist() == [{"country": "US", "shares": 7}, {"country": "DE", "shares": None}]


def test_athena_failure_message_reaches_the_user(aws_env, tmp_path):
    case = AthenaCase(tmp_path, aws_env)
    case.dataset = Dataset(
        "x", "athena", tables=("t",), location={"database": "d", "workgroup": "nope"}
    )
    with pytest.raises(EngineError, match="Athena"):
        run(case, "SELECT 1", tmp_path)


# ----- DuckDB hardening, with the SQL check bypassed, in the query worker ------------------------

HOSTILE = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "ATTACH '/tmp/fort-evil.duckdb' AS x",
    "COPY (SELECT 1) TO '/tmp/fort-evil.csv'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET memory_limit = '100GB'",
    "SET allowed_paths = ['/etc/passwd']",
    "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
]


@pytest.fixture(scope="module")
def hardened(tmp_path_factory):
    """One engine (one worker process) for the hostile statements; the service's environment
    holds a secret."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FORT_TEST_SECRET", "s3cr3t")
    case = DuckCase(tmp_path_factory.mktemp("hardened"), memory_limit="512MB", idle_workers=0)
    yield case
    case.engine.close()
    mp.undo()


@pytest.mark.parametrize("sql", HOSTILE)
def test_duckdb_connection_is_hardened(hardened, tmp_path, sql):
    # engine.run is what every query goes through: the SQL reaches the worker's cursor as is
    with pytest.raises(EngineError):
        run(hardened, sql, tmp_path)
    # the dataset itself stays readable
    _, table = run(hardened, 'SELECT count(*) AS n FROM "url_shares"."url_shares"', tmp_path)
    assert table.to_pylist() == [{"n": 30}]
    # and the settings of the connection queries run on are the hardened ones
    _, table = run(hardened, (
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('threads', 'memory_limit', "
        "'enable_external_access', 'lock_configuration', 'autoinstall_known_extensions', "
        "'autoload_known_extensions')"
    ), tmp_path)  # fmt: skip
    settings = {r["name"]: r["value"] for r in table.to_pylist()}
    assert settings.pop("memory_limit").replace(" ", "") in ("488.2MiB", "512.0MB", "512MB")
    assert settings == {
        "threads": str(hardened.engine.threads), "enable_external_access": "false",
        "lock_configuration": "true", "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
    }  # fmt: skip


def test_duckdb_queries_run_in_a_limited_worker_process(hardened, tmp_path):
    import os

    _, table = run(hardened, "SELECT current_setting('threads') AS t", tmp_path)
    assert table.to_pylist() == [{"t": hardened.engine.threads}]
    (pid,) = hardened.engine.workers.pids()  # idle_workers = 0: the one that ran it
    assert pid != os.getpid()
    with open(f"/proc/{pid}/limits") as f:
        limits = f.read()
    size = int(re.search(r"Max address space\s+(\d+)", limits).group(1))
    assert size == hardened.engine.address_space  # default: 2 x memory_limit + 1 GiB
    assert abs(size - (2 * 512 * 10**6 + 2**30)) < 2**20  # (DuckDB reads back 488.2 MiB)
    assert re.search(r"Max core file size\s+0\s", limits)
    # none of the service's secrets (tokens, store URL, AWS keys) is in the worker's environment
    with open(f"/proc/{pid}/environ", "rb") as f:
        names = {v.split(b"=", 1)[0].decode() for v in f.read().split(b"\0") if v}
    assert "FORT_TEST_SECRET" in os.environ
    assert names <= {*W.INHERITED, *W.ENVIRONMENT}, names


def test_duckdb_results_cross_the_worker_pipe_unchanged(tmp_path):
    """Every Arrow type DuckDB produces, dictionaries (ENUM) included and over several batches,
    arrives as DuckDB made it in-process."""
    import duckdb

    case = DuckCase(tmp_path, batch_rows=7, idle_workers=0)
    path = case.dataset.location["paths"]["url_shares"]
    body = (
        "SELECT country::ENUM('US', 'DE', 'BR', 'IN') AS e, [shares, 2] AS l, {'x': views} AS s,"
        " MAP {'k': shares} AS m, shares::HUGEINT AS h, INTERVAL 1 DAY AS i, url::BLOB AS b,"
        " DATE '2020-01-01' + shares::INT AS d, views::DECIMAL(10, 2) AS dec, NULL AS n FROM T"
        " ORDER BY url, shares"
    )
    try:
        _, got = run(case, body.replace(" T", ' "url_shares"."url_shares"'), tmp_path)
    finally:
        case.engine.close()
    expected = duckdb.sql(body.replace(" T", f" read_parquet('{path}')")).to_arrow_table()
    assert got.num_rows == 30 and got.equals(expected)


def test_duckdb_workers_write_the_result_file_themselves(tmp_path, monkeypatch):
    """The worker appends the result to the stored copy's file (no batch crosses the pipe or
    is written by the service), several batches; a batch over a cap is refused and the
    worker appends nothing past the cap."""

    def no_bytes_here(self, data, rows, nbytes):
        raise AssertionError("the result's bytes crossed the pipe")

    monkeypatch.setattr(FileSink, "write_ipc", no_bytes_here)
    case = DuckCase(tmp_path, batch_rows=7, idle_workers=0)
    sql = 'SELECT * FROM "url_shares"."url_shares" ORDER BY url, shares'
    try:
        outcome, got = run(case, sql, tmp_path)
        assert outcome.rows == 30 == got.num_rows
        path = case.dataset.location["paths"]["url_shares"]
        expected = pa.ipc.open_stream(pa.memory_map(str(tmp_path / "j1.arrows"))).read_all()
        assert got.equals(expected) and got.num_rows == pa.parquet.read_table(path).num_rows
        small = FileSink(str(tmp_path / "cap.arrows"), 10**9, 2000)  # a batch of 7: ~700 bytes
        with pytest.raises(EngineError, match="max_result_bytes"):
            asyncio.run(case.engine.run(job(case, sql, "cap"), small))
        assert 0 < small.size == os.path.getsize(small.partial) <= 2000
        small.discard()
    finally:
        case.engine.close()


# ----- bytes scanned (DuckDB's profile) --------------------------------------------------------


def test_duckdb_reports_the_bytes_a_query_read_from_its_parquet_files(tmp_path):
    """What counts against bytes_scanned_per_day: positive for a scan, growing with the
    columns and the row groups read, nothing for a query that reads no file."""
    import pyarrow.parquet as pq

    path = tmp_path / "wide.parquet"
    n = 40_000
    pq.write_table(pa.table({
        "id": list(range(n)), "a": [i * 3 for i in range(n)],
        "b": [f"row {i} " * 4 for i in range(n)], "c": [float(i) for i in range(n)],
    }), path, row_group_size=4_000)  # fmt: skip
    case = DuckCase(tmp_path, idle_workers=0)
    case.dataset = Dataset("wide", "duckdb", tables=("t",), location={"paths": {"t": str(path)}})
    try:

        def scanned(sql):
            outcome, _ = run(case, sql.replace(" T", ' "wide"."t"'), tmp_path)
            return outcome.bytes_scanned

        one = scanned("SELECT sum(a) AS s FROM T")
        two = scanned("SELECT sum(a) AS s, max(b) AS m FROM T")
        few_rows = scanned("SELECT sum(a) AS s FROM T WHERE id < 4000")  # one row group of ten
        nothing = scanned("SELECT 42 AS x")
        again = scanned("SELECT sum(a) AS s FROM T")
    finally:
        case.engine.close()
    assert one > 0 and two > one  # more columns read, more bytes
    assert 0 < few_rows < one  # the row groups skipped are not counted
    assert nothing == 0
    assert again == one  # the same for the same query (no cache effect)


# ----- engine errors in plain words -------------------------------------------------------------


def test_duckdb_errors_are_rewritten_in_plain_words():
    from fort_hub.services.query.engines.errors import COLUMNS_HINT, plain_duckdb_error

    cases = {
        'Binder Error: Referenced column "age" not found in FROM clause!\n'
        'Candidate bindings: "age_bracket", "a"\n\nLINE 1: SELECT age': (
            f'no column "age" in the tables of this query; did you mean "age_bracket" or "a"? '
            f"({COLUMNS_HINT})"
        ),
        'Binder Error: Referenced column "zz" not found in FROM clause!': (
            f'no column "zz" in the tables of this query; {COLUMNS_HINT}'
        ),
        'Binder Error: Values list "x" does not have a column named "age"': (
            f'table "x" has no column "age"; {COLUMNS_HINT}'
        ),
        "Binder Error: No function matches the given name and argument types 'sum(VARCHAR)'. "
        "You might need to add explicit type casts.\n\tCandidate functions:\n\tsum(arg DECIMAL)": (
            "sum() does not take (VARCHAR): cast the argument, e.g. sum(CAST(column AS DOUBLE))"
        ),
        'Binder Error: column "a" must appear in the GROUP BY clause or must be part of an '
        'aggregate function.\nEither add it to the GROUP BY list, or use ANY_VALUE("a")': (
            'column "a" must be listed in GROUP BY or used inside an aggregate '
            '(e.g. any_value("a"))'
        ),
        "Conversion Error: Could not convert string 'x' to INT32 when casting from source column "
        "c\n\nLINE 1: ...": (
            "Could not convert string 'x' to INT32 when casting from source column c "
            "(TRY_CAST gives NULL instead of failing)"
        ),
        "Out of Range Error: Overflow in multiplication of INT32\nmore": (
            "Out of Range Error: Overflow in multiplication of INT32"
        ),
    }
    assert {m: plain_duckdb_error(m) for m in cases} == cases


def test_duckdb_engine_error_keeps_the_original_as_detail(tmp_path):
    case = DuckCase(tmp_path, idle_workers=0)
    try:
        with pytest.raises(EngineError) as info:
            run(case, 'SELECT age FROM "url_shares"."url_shares"', tmp_path)
    finally:
        case.engine.close()
    assert str(info.value).startswith('no column "age" in the tables of this query; did you mean')
    assert info.value.detail.startswith('Binder Error: Referenced column "age" not found')
    assert "Candidate bindings:" in info.value.detail


def test_athena_missing_column_in_plain_words():
    from fort_hub.services.query.engines.errors import COLUMNS_HINT, plain_athena_error

    reason = (
        "Athena: COLUMN_NOT_FOUND: line 1:8: Column 'age' cannot be resolved or requester is "
        "not authorized to access requested resources"
    )
    assert plain_athena_error(reason) == (
        f'no column "age" in the tables of this query; {COLUMNS_HINT}'
    )
    other = "Athena: SYNTAX_ERROR: line 1:1: mismatched input"
    assert plain_athena_error(other) == other


def test_a_duckdb_worker_at_a_cap_answers_an_error_naming_it(tmp_path, monkeypatch):
    """Left alone in stop 19: a worker that stopped before a batch over a cap sent an empty
    APPENDED frame, then DONE, and only the service's refusal failed the query. It now
    answers ERROR (kind too_large) naming the cap, with no empty APPENDED and no DONE; the
    service refuses in its own words (its caps), and the worker serves the next query."""
    frames, appended = [], []
    real_json, real_appended = WorkerProcess.json, FileSink.appended

    def json_of(self, length):
        frames.append((self.pid, real_json(self, length)))
        return frames[-1][1]

    def appended_to(self, *args):
        appended.append(args)
        real_appended(self, *args)

    monkeypatch.setattr(WorkerProcess, "json", json_of)
    monkeypatch.setattr(FileSink, "appended", appended_to)
    case = DuckCase(tmp_path, batch_rows=7, idle_workers=0)
    sql = 'SELECT * FROM "url_shares"."url_shares" ORDER BY url, shares'
    try:
        with pytest.raises(ResultTooLarge, match=r"more than 20 rows \(limit max_result_rows"):
            run(case, sql, tmp_path, max_rows=20, jid="cap")
        pid, last = frames[-1] if frames else (None, {})  # before: no ERROR frame read
        assert last["kind"] == "too_large" and "max_result_rows" in last["message"], last
        assert [a[0] for a in appended] == [7, 7] and all(a[2] > 0 for a in appended)
        assert all("kind" in f for _, f in frames)  # no DONE
        assert last["bytes_scanned"] > 0  # what it read before the cap counts (quota)
        outcome, _ = run(case, sql, tmp_path, jid="next")
        assert outcome.rows == 30 and frames[-1][0] == pid  # the same worker, not retired
    finally:
        case.engine.close()


@pytest.mark.parametrize("rows", [float("inf"), "many", None])
def test_a_cap_error_with_nonsense_counts_is_a_failure_not_a_crash(rows):
    """The service re-checks a worker's ``too_large`` with its own caps; counts it cannot
    read (JSON's ``Infinity``: ``int()`` raises OverflowError) make the query fail, never
    escape as an internal error."""
    from fort_hub.services.query.engines.duckdb import DuckDBEngine
    from fort_hub.services.query.results import FileSink

    sink = FileSink("/nonexistent/q.arrows", 10, 10**6)
    err = DuckDBEngine._over_cap({"kind": "too_large", "rows": rows, "bytes": 1}, sink)
    assert "did not reach" in str(err)
