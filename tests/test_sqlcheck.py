"""fort-query's SQL authorization: a hostile corpus is refused with the right status and a
message naming the construct; generated read queries over granted tables are allowed and return
the same rows as DuckDB run directly."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fort_hub.services.query.sqlcheck import SqlRejected, check_sql

TABLES = {"url_shares": ["url_shares", "url_meta"], "ads_targeting": ["ads_targeting"]}


def check(sql, granted=("url_shares",), dataset="url_shares", dialect="duckdb"):
    return check_sql(
        sql, dataset=dataset, tables=TABLES, granted=set(granted), dialect=dialect,
        target=(None, dataset),
    )  # fmt: skip


# (sql, status, a word the message must contain)
HOSTILE = [
    # CTE shadowing, set operations, subqueries into a forbidden table
    (
        "WITH url_shares AS (SELECT * FROM ads_targeting) SELECT * FROM url_shares",
        403,
        "ads_targeting",
    ),
    (
        "WITH x AS (SELECT * FROM url_shares), url_shares AS (SELECT * FROM ads_targeting) SELECT * FROM x",
        403,
        "ads_targeting",
    ),
    (
        "WITH a AS (WITH b AS (SELECT * FROM ads_targeting) SELECT * FROM b) SELECT * FROM a",
        403,
        "ads_targeting",
    ),
    ("SELECT * FROM url_shares UNION SELECT * FROM ads_targeting", 403, "ads_targeting"),
    (
        "SELECT * FROM url_shares UNION ALL (SELECT * FROM ads_targeting.ads_targeting)",
        403,
        "ads_targeting",
    ),
    ("SELECT * FROM url_shares EXCEPT SELECT * FROM ads_targeting", 403, "ads_targeting"),
    (
        "SELECT * FROM url_shares WHERE url IN (SELECT ad_id FROM ads_targeting)",
        403,
        "ads_targeting",
    ),
    ("SELECT (SELECT count(*) FROM ads_targeting) AS n FROM url_shares", 403, "ads_targeting"),
    (
        "SELECT * FROM url_shares WHERE EXISTS (SELECT 1 FROM ads_targeting.ads_targeting)",
        403,
        "ads_targeting",
    ),
    (
        "SELECT * FROM url_shares u, LATERAL (SELECT * FROM ads_targeting WHERE ad_id = u.shares) x",
        403,
        "ads_targeting",
    ),
    (
        "SELECT * FROM url_shares a JOIN url_meta b ON a.url IN (SELECT ad_id FROM ads_targeting)",
        403,
        "ads_targeting",
    ),
    (
        "SELECT * FROM url_shares a JOIN (SELECT * FROM ads_targeting) b ON true",
        403,
        "ads_targeting",
    ),
    ("SELECT * FROM (FROM ads_targeting)", 403, "ads_targeting"),
    ("FROM ads_targeting", 403, "ads_targeting"),
    ("SELECT * FROM secret_table", 403, "secret_table"),
    ("SELECT * FROM main.url_shares", 403, "main.url_shares"),
    ("SELECT * FROM memory.url_shares.url_shares", 403, "memory.url_shares.url_shares"),
    ("SELECT * FROM __fort_source.url_shares", 403, "__fort_source"),
    ("SELECT * FROM information_schema.tables", 403, "information_schema"),
    ("SELECT * FROM duckdb_settings()", 403, "duckdb_settings"),
    # files, URLs and table functions
    ("SELECT * FROM '/etc/passwd'", 403, "/etc/passwd"),
    ("SELECT * FROM 'data/*.parquet'", 403, "*.parquet"),
    ('SELECT * FROM "s3://fort-datasets/ads_targeting/x.parquet"', 403, "s3://"),
    ("SELECT * FROM 'http://evil.example/x.csv'", 403, "http://"),
    ("SELECT * FROM read_csv('/etc/passwd')", 403, "read_csv"),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", 403, "read_csv"),
    ("SELECT * FROM read_parquet('s3://bucket/x.parquet')", 403, "read_parquet"),
    ("SELECT * FROM read_text('/etc/hostname')", 403, "read_text"),
    ("SELECT * FROM glob('/home/*')", 403, "glob"),
    ("SELECT getenv('AWS_SECRET_ACCESS_KEY')", 403, "getenv"),
    (
        "SELECT * FROM url_shares WHERE url = (SELECT content FROM read_text('/etc/passwd'))",
        403,
        "read_text",
    ),
    ("SELECT * FROM query_table('ads_targeting')", 403, "query_table"),
    ("SELECT current_setting('memory_limit')", 403, "current_setting"),
    # statements that are not reads
    ("COPY url_shares TO '/tmp/out.csv'", 403, "COPY"),
    ("COPY (SELECT * FROM url_shares) TO 's3://bucket/out.parquet'", 403, "COPY"),
    ("ATTACH '/tmp/other.duckdb' AS other", 403, "ATTACH"),
    ("INSTALL httpfs", 403, "INSTALL"),
    ("LOAD httpfs", 403, "LOAD statements"),
    ("PRAGMA database_list", 403, "PRAGMA"),
    ("SET enable_external_access = true", 403, "SET"),
    ("CALL pragma_version()", 403, "CALL statements"),
    ("CREATE TABLE t AS SELECT * FROM url_shares", 403, "CREATE"),
    ("CREATE VIEW url_shares2 AS SELECT 1", 403, "CREATE"),
    ("DROP TABLE url_shares", 403, "DROP"),
    ("INSERT INTO url_shares VALUES (1)", 403, "INSERT"),
    ("UPDATE url_shares SET shares = 0", 403, "UPDATE"),
    ("DELETE FROM url_shares", 403, "DELETE"),
    ("SELECT * INTO t2 FROM url_shares", 403, "INTO"),
    ("DESCRIBE url_shares", 403, "DESCRIBE"),
    ("describe url_shares", 403, "columns of your tables are listed by fort.datasets()"),
    ("DESCRIBE SELECT * FROM read_csv('/etc/passwd')", 403, "listed by fort.datasets()"),
    ("SUMMARIZE url_shares", 403, "listed by fort.datasets()"),
    ("SHOW TABLES", 403, "SHOW"),
    ("USE ads_targeting", 403, "USE"),
    ("DETACH memory", 403, "DETACH"),
    ("VACUUM", 403, "VACUUM statements"),
    ("CHECKPOINT", 403, "CHECKPOINT statements"),
    ("EXPORT DATABASE '/tmp/dump'", 403, "EXPORT statements"),
    ("UNLOAD (SELECT * FROM url_shares) TO 's3://bucket/out/'", 403, "UNLOAD statements"),
    ("/* a comment first */ -- and another\n  export database '/tmp/dump'", 403, "EXPORT"),
    ("EXPLAIN ANALYZE SELECT * FROM url_shares", 403, "EXPLAIN statements"),
    # two statements, statements hidden after comments
    ("SELECT 1; SELECT 2", 400, "exactly one statement"),
    ("SELECT * FROM url_shares; DROP TABLE url_shares", 400, "exactly one statement"),
    ("SELECT 1 -- harmless\n; ATTACH '/tmp/x.db'", 400, "exactly one statement"),
    ("/* just a comment */ SELECT 1; /* ; */ INSTALL httpfs", 400, "exactly one statement"),
    ("-- only a comment", 400, ""),
    ("", 400, "empty"),
    ("   \n\t ", 400, "empty"),
    ("SELECT * FROM", 400, "parse"),
    ("SELEC * FROM url_shares", 400, ""),
    ("SELECT 1\x00; DROP TABLE x", 400, "NUL"),
    ("SELECT '" + "a" * 200_000 + "'", 400, "characters long"),
    # odd quoting and Unicode identifiers
    ('SELECT * FROM "ads_targeting"', 403, "ads_targeting"),
    ('SELECT * FROM "ADS_TARGETING"', 403, "ADS_TARGETING"),
    ('SELECT * FROM "ads_targeting"."ads_targeting"', 403, "ads_targeting"),
    ('SELECT * FROM "ads""targeting"', 403, 'ads"targeting'),
    ("SELECT * FROM ads_tаrgeting", 403, "ads_tаrgeting"),  # Cyrillic small a
    ('SELECT * FROM "url_shares\u200b"', 403, "url_shares"),  # zero-width space
    ('SELECT * FROM "ａｄｓ_targeting"', 403, "ａｄｓ"),  # fullwidth
    (
        'WITH "url_shares" AS (SELECT * FROM "ads_targeting") SELECT * FROM url_shares',
        403,
        "ads_targeting",
    ),
]


def test_corpus_is_big_enough():
    assert len(HOSTILE) >= 40


@pytest.mark.parametrize(
    ("sql", "status", "word"), HOSTILE, ids=[f"h{i}" for i in range(len(HOSTILE))]
)
def test_hostile_sql_is_refused(sql, status, word):
    with pytest.raises(SqlRejected) as info:
        check(sql)
    assert info.value.status == status, info.value.message
    assert word.lower() in info.value.message.lower(), info.value.message


def test_forbidden_dataset_named_even_when_granted_elsewhere():
    # granted both, but one query runs on one dataset
    with pytest.raises(SqlRejected) as info:
        check("SELECT * FROM ads_targeting.ads_targeting", granted=("url_shares", "ads_targeting"))
    assert info.value.status == 403 and "one dataset per query" in info.value.message


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM url_shares",
        "SELECT count(*) FROM url_shares.url_shares",
        'SELECT * FROM "URL_SHARES"',
        "WITH ads_targeting AS (SELECT 1 AS a) SELECT * FROM ads_targeting",  # a CTE, not the table
        "WITH t AS (SELECT * FROM url_shares) SELECT * FROM t JOIN url_meta m ON t.url = m.url",
        "SELECT * FROM url_shares UNION ALL SELECT * FROM url_shares",
        "SELECT * FROM url_shares u, LATERAL (SELECT * FROM url_meta WHERE url = u.url) m",
        "VALUES (1, 'a'), (2, 'b')",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
    ],
)
def test_reads_of_granted_tables_are_allowed(sql):
    out = check(sql)
    assert set(out.tables) <= {"url_shares.url_shares", "url_shares.url_meta"}


def test_real_tables_are_qualified_so_ctes_cannot_shadow_them():
    out = check("WITH t AS (SELECT 1 AS x) SELECT * FROM t, url_shares")
    assert '"url_shares"."url_shares" AS "url_shares"' in out.sql
    assert "FROM t," in out.sql
    assert out.tables == ("url_shares.url_shares",)


def test_athena_dialect_and_target():
    out = check_sql(
        "SELECT url FROM url_shares LIMIT 5", dataset="url_shares", tables=TABLES,
        granted={"url_shares"}, dialect="athena", target=("awsdatacatalog", "fort_urls"),
    )  # fmt: skip
    assert '"awsdatacatalog"."fort_urls"."url_shares"' in out.sql


# ----- generated read queries return the same rows as DuckDB directly ----------------------------

ROWS = [(i, ["US", "DE", "BR"][i % 3], (i * 37) % 11 - 3, float(i) / 4) for i in range(60)]


@pytest.fixture(scope="module")
def duck():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA url_shares")
    con.execute(
        "CREATE TABLE url_shares.url_shares (id INT, country VARCHAR, shares INT, v DOUBLE)"
    )
    con.executemany("INSERT INTO url_shares.url_shares VALUES (?, ?, ?, ?)", ROWS)
    con.execute(
        "CREATE TABLE url_shares.url_meta AS SELECT DISTINCT country, length(country) AS n FROM url_shares.url_shares"
    )
    con.execute("SET search_path = 'url_shares'")
    yield con
    con.close()


columns = st.sampled_from(["id", "country", "shares", "v"])
ops = st.sampled_from(["<", ">", "=", "<>", "<=", ">="])


@st.composite
def read_queries(draw):
    cols = draw(st.lists(columns, min_size=1, max_size=4, unique=True))
    where = ""
    if draw(st.booleans()):
        where = f" WHERE shares {draw(ops)} {draw(st.integers(-5, 8))}"
    kind = draw(st.sampled_from(["plain", "cte", "union", "join", "group", "subquery"]))
    sel = ", ".join(cols)
    if kind == "plain":
        q = f"SELECT {sel} FROM url_shares{where}"
    elif kind == "cte":
        q = f"WITH x AS (SELECT * FROM url_shares{where}) SELECT {sel} FROM x"
    elif kind == "union":
        q = f"SELECT {sel} FROM url_shares{where} UNION ALL SELECT {sel} FROM url_shares WHERE id < 5"
    elif kind == "join":
        q = f"SELECT {', '.join('u.' + c for c in cols)}, m.n FROM url_shares u JOIN url_meta m ON u.country = m.country{where.replace('shares', 'u.shares')}"
    elif kind == "group":
        q = f"SELECT country, count(*) AS c, sum(shares) AS s FROM url_shares{where} GROUP BY country"
    else:
        q = f"SELECT {sel} FROM url_shares WHERE shares IN (SELECT shares FROM url_shares{where})"
    return q


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(read_queries())
def test_generated_reads_match_duckdb(duck, sql):
    checked = check(sql)
    direct = sorted(duck.execute(sql).fetchall(), key=repr)
    proxied = sorted(duck.execute(checked.sql).fetchall(), key=repr)
    assert proxied == direct
