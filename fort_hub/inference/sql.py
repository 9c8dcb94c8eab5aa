"""``SQLSource``: fit inside a database or the fort warehouse, moving only sums.

    SQLSource(engine, "url_shares")                        # any SQLAlchemy engine or connection
    SQLSource(FortClient(), "url_shares", where="country = 'US'")   # through fort-query

Each pass of a fit is one aggregate query (``SELECT COUNT(*), SUM(...), ... FROM table WHERE
<no used column is NULL> AND (where)``), written once in a generic SQL and transpiled by sqlglot
to the database's dialect (DuckDB, Athena, SQLite, PostgreSQL, ...). Through fort-query, every
pass is an ordinary query: authorized, quota'd and audited; its result is one row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from fort_hub.inference.expr import Expr, literal, named_levels, quote, to_sql

NUMERIC = re.compile(
    r"(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?\d*|INT\d|REAL|FLOAT\d*|DOUBLE( PRECISION)?"
    r"|(NUMERIC|DECIMAL|NUMBER)(\(.*\))?|BOOL(EAN)?)",
    re.IGNORECASE,
)
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z")
PLACEHOLDER_RE = re.compile(r"[\"`\[]fortparam_(\w+?)_[\"`\]]")
DIALECTS = {"postgresql": "postgres", "duckdb": "duckdb", "sqlite": "sqlite", "mysql": "mysql",
            "athena": "athena", "trino": "trino", "bigquery": "bigquery"}  # fmt: skip


class SQLSource:
    """Rows of *table* in *source* (a SQLAlchemy engine or connection, a DuckDB connection, or a
    :class:`~fort_hub.client.FortClient`), optionally filtered by *where*: a plain SQL predicate
    on the table's columns in the database's dialect (no aggregates, window functions or
    subqueries). *dataset* names the fort-query dataset (default: the one holding *table*)."""

    def __init__(self, source, table: str, where: str | None = None, dataset: str | None = None):
        if not isinstance(table, str) or not NAME.match(table):
            raise ValueError(f"table: expected a table name like url_shares, not {table!r}")
        self.table = table
        self.runner = runner_for(source, table, dataset)
        self.dialect = self.runner.dialect
        self.where = None if where is None else check_where(where, self.dialect)
        self._columns: dict[str, str] | None = None
        self._templates: dict[tuple, tuple[str, list]] = {}
        self.queries = 0

    def columns(self) -> dict[str, str]:
        if self._columns is None:
            self._columns = self.runner.columns(self.table)
            if not self._columns:
                raise ValueError(f"table: {self.table!r} has no columns (does it exist?)")
        return self._columns

    def column_names(self) -> list[str]:
        return list(self.columns())

    def check_numeric(self, columns: Sequence[str], argument: str) -> None:
        for c in columns:
            kind = self.columns()[c]
            if not NUMERIC.fullmatch(kind.strip()):
                raise TypeError(f"{argument}: column {c!r} is not numeric ({kind}) in {self.table}")

    def sql(self, columns: Sequence[str], exprs: Sequence[Expr]) -> str:
        """The aggregate query in the source's dialect, with placeholders for the parameters:
        sums over nested SELECTs that compute each row's shared values once."""
        import sqlglot

        table = ".".join(quote(p) for p in self.table.split("."))
        present = " AND ".join(f"{quote(c)} IS NOT NULL" for c in columns)
        levels = named_levels(exprs) or [{}]
        cols = [f"CAST({quote(c)} AS DOUBLE) AS {quote(c)}" for c in columns]
        cols += [f"{to_sql(n.expr, raw=True)} AS {quote(name)}" for name, n in levels[0].items()]
        rows = sqlglot.parse_one(f"SELECT {', '.join(cols)} FROM {table} WHERE {present}",
                                 read="duckdb")  # fmt: skip
        if self.where is not None:
            rows = rows.where(self.where.copy(), append=True)
        for i, named in enumerate(levels[1:], 1):
            shared = ", ".join(f"{to_sql(n.expr, raw=False)} AS {quote(name)}"
                               for name, n in named.items())  # fmt: skip
            rows = sqlglot.parse_one(f"SELECT *, {shared}", read="duckdb").from_(
                rows.subquery(f"fort_rows{i - 1}"), copy=False
            )
        sums = ", ".join(f"SUM({to_sql(e, raw=False)}) AS s{i}" for i, e in enumerate(exprs))
        outer = sqlglot.parse_one(f"SELECT COUNT(*) AS n, {sums}", read="duckdb")
        return outer.from_(rows.subquery("fort_rows"), copy=False).sql(dialect=self.dialect)

    def aggregate(
        self, columns: Sequence[str], exprs: Sequence[Expr], params: dict | None = None
    ) -> tuple[int, np.ndarray]:
        key = (tuple(columns), tuple(map(id, exprs)))
        if key not in self._templates:  # the expressions are kept so that their ids stay theirs
            self._templates = {key: (self.sql(columns, exprs), list(exprs))}
        template = self._templates[key][0]
        values = params or {}
        sql = PLACEHOLDER_RE.sub(lambda m: literal(values[m.group(1)]), template)
        row = self.runner.one_row(sql) or (0,) + (None,) * len(exprs)
        self.queries += 1
        n = int(row[0] or 0)
        return n, np.array([np.nan if v is None else float(v) for v in row[1:]], dtype=float)

    def first_row(self, columns: Sequence[str]) -> np.ndarray | None:
        """Any one row without NULL in *columns* (after *where*), or None if there is none."""
        import sqlglot

        table = ".".join(quote(p) for p in self.table.split("."))
        cols = ", ".join(f"CAST({quote(c)} AS DOUBLE) AS {quote(c)}" for c in columns)
        present = " AND ".join(f"{quote(c)} IS NOT NULL" for c in columns)
        tree = sqlglot.parse_one(f"SELECT {cols} FROM {table} WHERE {present}", read="duckdb")
        if self.where is not None:
            tree = tree.where(self.where.copy(), append=True)
        row = self.runner.one_row(tree.limit(1).sql(dialect=self.dialect))
        self.queries += 1
        return None if row is None else np.array(row, dtype=float)

    def noise(self) -> dict[str, float]:
        return self.runner.noise()


def check_where(where: str, dialect: str):
    """*where* parsed (a sqlglot expression), or ValueError saying why it is refused."""
    import sqlglot
    from sqlglot import exp

    if not isinstance(where, str) or not where.strip():
        raise ValueError("where: expected an SQL predicate such as \"country = 'US'\"")
    try:
        statements = sqlglot.parse(f"SELECT 1 FROM t WHERE {where}", read=dialect)
    except sqlglot.errors.ParseError as e:
        raise ValueError(f"where: not a valid SQL predicate: {str(e).splitlines()[0]}") from None
    tree = statements[0] if len(statements) == 1 else None
    extra = set() if tree is None else {k for k, v in tree.args.items() if v} - {
        "expressions", "from", "from_", "where"
    }  # fmt: skip
    if tree is None or not isinstance(tree, exp.Select) or extra:
        raise ValueError("where: only a predicate on the rows is allowed, not more SQL")
    predicate = tree.args["where"].this
    for kind, why in ((exp.Query, "a subquery"), (exp.Subquery, "a subquery"),
                      (exp.AggFunc, "an aggregate"), (exp.Window, "a window function")):  # fmt: skip
        node = predicate.find(kind)
        if node is not None:
            raise ValueError(
                f"where: {why} ({node.sql(dialect=dialect)[:60]}) is refused: the correction "
                "is valid for rows filtered one by one, on the release's own columns"
            )
    return predicate


def runner_for(source, table: str, dataset: str | None):
    if hasattr(source, "query") and hasattr(source, "datasets") and hasattr(source, "submit"):
        from fort_hub.inference.warehouse import FortRunner

        return FortRunner(source, table, dataset)
    if type(source).__module__.lstrip("_").startswith("duckdb"):
        return DuckDBRunner(source)
    if hasattr(source, "dialect") and (hasattr(source, "connect") or hasattr(source, "execute")):
        return SQLAlchemyRunner(source)
    raise TypeError(
        "source: expected a SQLAlchemy engine or connection, a DuckDB connection or a "
        f"FortClient, not {type(source).__name__}"
    )


class SQLAlchemyRunner:
    def __init__(self, source):
        self.source = source
        name = source.dialect.name
        self.dialect = DIALECTS.get(name, name)

    def one_row(self, sql: str) -> tuple | None:
        from sqlalchemy import text

        if hasattr(self.source, "connect") and not hasattr(self.source, "commit"):
            with self.source.connect() as conn:
                row = conn.execute(text(sql)).first()
        else:
            row = self.source.execute(text(sql)).first()
        return None if row is None else tuple(row)

    def columns(self, table: str) -> dict[str, str]:
        import sqlalchemy

        schema, _, name = table.rpartition(".")
        try:
            cols = sqlalchemy.inspect(self.source).get_columns(name, schema=schema or None)
        except sqlalchemy.exc.NoSuchTableError:
            raise ValueError(f"table: no table {table!r} in the database") from None
        return {c["name"]: str(c["type"]) for c in cols}

    def noise(self) -> dict[str, float]:
        return {}


class DuckDBRunner:
    dialect = "duckdb"

    def __init__(self, con):
        self.con = con

    def one_row(self, sql: str) -> tuple | None:
        rows = self.con.execute(sql).fetchall()
        return tuple(rows[0]) if rows else None

    def columns(self, table: str) -> dict[str, str]:
        import duckdb

        try:
            rows = self.con.execute(f"DESCRIBE {'.'.join(map(quote, table.split('.')))}").fetchall()
        except duckdb.Error:
            raise ValueError(f"table: no table {table!r} in the database") from None
        return {r[0]: r[1] for r in rows}

    def noise(self) -> dict[str, float]:
        return {}
