"""fort_hub.inference on SQL sources: the same numbers through a DataFrame, Arrow, SQLite,
PostgreSQL, DuckDB and fort-query (DuckDB behind the proxy, with the release's declared noise);
only sums travel; `where` predicates and columns are checked."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from fort_hub.client import FortClient, FortQueryError
from fort_hub.dev import datasets
from fort_hub.inference import LinearRegression, LogisticRegression, SQLSource, SummaryStatistics
from fort_hub.store import Store
from tests.query_support import QueryEnv

X = ["shares", "reactions"]
NOISE = {c: datasets.NOISE_SD[c] ** 2 for c in ("shares", "views", "reactions")}


def url_shares(rows=4000) -> pa.Table:
    """The demo's url_shares with a 0/1 column and a few NULLs."""
    t = datasets.url_shares_table(rows)
    views = t["views"].to_numpy()
    reactions = pa.array(t["reactions"].to_numpy(), mask=np.arange(rows) % 97 == 5)
    t = t.set_column(t.column_names.index("reactions"), "reactions", reactions)
    return t.append_column("viral", pa.array((views > np.median(views)).astype(np.int64)))


def fits(data, x_s2=NOISE):
    s2 = [x_s2[c] for c in X] if x_s2 is not None else None
    lin = LinearRegression(X, "views", x_s2=s2, random_state=3).fit(data)
    logit = LogisticRegression(X, "viral", x_s2=s2).fit(data)
    summary = SummaryStatistics(X, x_s2=s2, bias=False).fit(data).summary_statistics
    return lin, logit, summary


def assert_same(a, b):
    (lin_a, logit_a, sum_a), (lin_b, logit_b, sum_b) = a, b
    assert lin_a.n == lin_b.n == logit_a.n == logit_b.n
    np.testing.assert_allclose(lin_b.beta, lin_a.beta, rtol=1e-9)
    assert lin_b.sigma_sq == pytest.approx(lin_a.sigma_sq, rel=1e-9)
    # simulated: the same seed draws the same normals; the moments differ in the last digits
    np.testing.assert_allclose(lin_b.beta_vcov, lin_a.beta_vcov, rtol=1e-4)
    np.testing.assert_allclose(logit_b.beta, logit_a.beta, rtol=1e-9)
    np.testing.assert_allclose(logit_b.beta_vcov, logit_a.beta_vcov, rtol=1e-8)
    np.testing.assert_allclose(sum_b.to_numpy(float), sum_a.to_numpy(float), rtol=1e-9)


@pytest.fixture(scope="module")
def table():
    return url_shares()


@pytest.fixture(scope="module")
def reference(table):
    return fits(table.to_pandas())


def test_arrow_sqlite_and_duckdb_equal_the_dataframe(table, reference):
    df = table.select(X + ["views", "viral"]).to_pandas()
    assert df["reactions"].isna().sum() == 42
    engine = sa.create_engine("sqlite://")
    df.to_sql("url_shares", engine, index=False)
    import duckdb

    con = duckdb.connect()
    con.register("t", table.select(X + ["views", "viral"]))
    con.execute("CREATE TABLE url_shares AS SELECT * FROM t")
    for data in (table, SQLSource(engine, "url_shares"), SQLSource(con, "url_shares")):
        assert_same(reference, fits(data))
    assert reference[0].n == table.num_rows - 42


@pytest.mark.postgres
def test_postgresql_equals_the_dataframe(table, reference, pg_url):
    url = pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    table.select(X + ["views", "viral"]).to_pandas().to_sql("url_shares", engine, index=False)
    with engine.connect() as conn:  # a connection works as well as an engine
        assert_same(reference, fits(SQLSource(conn, "url_shares")))
    engine.dispose()


@pytest.fixture
def fort(tmp_path, sqlite_url, table):
    env = QueryEnv(tmp_path, sqlite_url)  # the example policy declares url_shares' noise
    pq.write_table(table, tmp_path / "data" / "url_shares.parquet")
    env.start()
    yield env, FortClient(url=env.base.removesuffix("api/v1/"), token="alice-token")
    env.stop()


def test_through_fort_query_with_the_declared_noise(fort, reference):
    env, client = fort
    assert client.noise("url_shares") == {
        c: {"distribution": "gaussian", "variance": v} for c, v in NOISE.items()
    }
    source = SQLSource(client, "url_shares")
    assert source.noise() == NOISE
    assert_same(reference, fits(source, x_s2=None))  # x_s2 from the release
    # each pass is one audited query whose result is one row: moments, not rows, travel
    lin = LinearRegression(X, "views").fit(source)
    assert lin.x_s2_.tolist() == [NOISE[c] for c in X]
    queries = client.history(limit=200)
    assert queries and all(q["rows"] == 1 for q in queries if q["state"] == "succeeded")
    store = Store(env.store_url)
    try:
        submits = [r for r in store.audit.query(user="alice", limit=500)
                   if r.action == "query.submit"]  # fmt: skip
    finally:
        store.dispose()
    assert len(submits) == len(queries)


def test_where_filters_rows_the_same_way(fort, table):
    _, client = fort
    df = table.to_pandas()
    us = df[df["country"] == "US"]
    a = LinearRegression(X, "views", x_s2=[NOISE[c] for c in X], random_state=1).fit(us)
    source = SQLSource(client, "url_shares", where="country = 'US' AND month >= DATE '2017-01-01'")
    b = LinearRegression(X, "views", random_state=1).fit(source)
    assert a.n == b.n < len(df)
    np.testing.assert_allclose(b.beta, a.beta, rtol=1e-9)


def test_fort_query_refusals_and_bad_columns(fort):
    _, client = fort
    source = SQLSource(client, "url_shares")
    with pytest.raises(TypeError, match=r"x_columns: column 'country' is not numeric"):
        LinearRegression(["country"], "views").fit(source)
    with pytest.raises(ValueError, match=r"x_columns: unknown column\(s\) \['shares \* 2'\]"):
        LinearRegression(["shares * 2"], "views").fit(source)
    with pytest.raises(ValueError, match="dataset: 'ads_targeting' is not one of your datasets"):
        SQLSource(client, "url_shares", dataset="ads_targeting")
    with pytest.raises(ValueError, match="table: 'ads_targeting' is in none of your datasets"):
        SQLSource(client, "ads_targeting")
    with pytest.raises(ValueError, match="table: expected a table name"):
        SQLSource(client, "url_shares; DROP TABLE x")
    with pytest.raises(FortQueryError, match="no dataset 'ads_targeting' among the ones you may"):
        client.noise("ads_targeting")


@pytest.mark.parametrize(
    "where, message",
    [
        ("views > (SELECT avg(views) FROM url_shares)", "where: a subquery"),
        ("EXISTS (SELECT 1)", "where: a subquery"),
        ("shares IN (SELECT 1)", "where: a subquery"),
        ("count(*) > 3", r"where: an aggregate \(COUNT\(\*\)\)"),
        ("row_number() OVER () < 10", "where: a window function"),
        ("1 = 1 GROUP BY country", "where: only a predicate on the rows is allowed"),
        ("1 = 1; DROP TABLE url_shares", "where: only a predicate on the rows is allowed"),
        ("1 = 1 UNION SELECT 2", "where: only a predicate on the rows is allowed"),
        ("views >", "where: not a valid SQL predicate"),
        ("  ", "where: expected an SQL predicate"),
    ],
)
def test_where_refusals(where, message):
    engine = sa.create_engine("sqlite://")
    with pytest.raises(ValueError, match=message):
        SQLSource(engine, "url_shares", where=where)


def test_bad_sources():
    with pytest.raises(TypeError, match="source: expected a SQLAlchemy engine or connection"):
        SQLSource("sqlite://", "t")
    engine = sa.create_engine("sqlite://")
    with pytest.raises(ValueError, match="table: no table 'missing' in the database"):
        LinearRegression(["a"], "b").fit(SQLSource(engine, "missing"))


class AthenaStandIn:
    """A FortClient whose dataset is on Athena: the SQL it is sent must parse as Athena's
    (Trino) SQL; it is run by DuckDB after sqlglot reads it as Athena's."""

    def __init__(self, table: pa.Table):
        import duckdb

        self.con = duckdb.connect()
        self.con.register("url_shares", table)
        self.sent: list[str] = []
        columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
        self.entry = {"name": "url_shares", "engine": "athena", "error": None,
                      "tables": [{"name": "url_shares", "columns": columns}], "noise": {}}  # fmt: skip

    def datasets(self):
        return [self.entry]

    def submit(self, sql, dataset):
        import sqlglot

        self.sent.append(sql)
        return sqlglot.transpile(sql, read="athena", write="duckdb")[0]

    def results(self, sql, follow=False):
        return self.con.sql(sql).to_arrow_table()

    query = None  # present, as on a FortClient


def test_athena_sql(table, reference):
    client = AthenaStandIn(table.select(X + ["views", "viral"]).cast(
        pa.schema([(c, pa.float64()) for c in X + ["views", "viral"]])))  # fmt: skip
    source = SQLSource(client, "url_shares")
    assert source.dialect == "athena"
    assert_same(reference, fits(source))
    assert sum("EXP(" in sql for sql in client.sent) >= 3  # the logistic fit's Newton passes
