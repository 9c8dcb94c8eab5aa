"""Authorization of SQL: a pure function from (SQL, dataset, grants) to a checked query.

:func:`check_sql` parses the text with sqlglot in the engine's dialect and refuses anything but
exactly one read-only query whose every real table is a granted table of the target dataset::

    checked = check_sql(
        "WITH t AS (SELECT * FROM url_shares) SELECT count(*) FROM t",
        dataset="url_shares",
        tables={"url_shares": ["url_shares"]},  # dataset -> its tables (from the policy)
        granted={"url_shares"},  # datasets the caller may query
        dialect="duckdb",
        target=(None, "url_shares"),  # (catalog, schema) the engine exposes the dataset under
    )
    checked.sql  # rewritten: every real table fully qualified, so no CTE can shadow it

Refusals raise :class:`SqlRejected` with ``status`` 400 (not valid: unparsable, not exactly one
statement, too long) or 403 (not allowed: writes and commands, table functions, files and URLs,
tables outside the caller's grants), and a message naming the offending table or construct.

Every table is found twice: through sqlglot's scopes (which tell a CTE reference from a real
table) and by walking the whole tree. A table node the scopes did not classify as a CTE
reference is treated as a real table, so anything the scope analysis misses fails closed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import Scope, traverse_scope

MAX_SQL_LENGTH = 100_000

#: statement types a read query may have at its root
READ_ROOTS = (exp.Select, exp.SetOperation, exp.Values, exp.Subquery)

#: nodes that must not appear anywhere in a read query
FORBIDDEN_NODES: dict[type, str] = {
    exp.Insert: "INSERT",
    exp.Update: "UPDATE",
    exp.Delete: "DELETE",
    exp.Merge: "MERGE",
    exp.Create: "CREATE",
    exp.Drop: "DROP",
    exp.Alter: "ALTER",
    exp.Command: "a command",
    exp.Copy: "COPY",
    exp.Set: "SET",
    exp.Pragma: "PRAGMA",
    exp.Attach: "ATTACH",
    exp.Detach: "DETACH",
    exp.Install: "INSTALL",
    exp.Use: "USE",
    exp.Into: "SELECT ... INTO",
    exp.TruncateTable: "TRUNCATE",
    exp.Describe: "DESCRIBE",
    exp.Show: "SHOW",
    exp.Summarize: "SUMMARIZE",
    exp.Transaction: "a transaction statement",
    exp.Commit: "COMMIT",
    exp.Rollback: "ROLLBACK",
}

#: leading keywords of statements that are never read queries: refused by name before parsing,
#: since sqlglot parses some of them (EXPORT, UNLOAD in DuckDB's dialect) only as errors
STATEMENT_KEYWORDS = frozenset(
    [
        "ALTER",
        "ANALYZE",
        "ATTACH",
        "BEGIN",
        "CALL",
        "CHECKPOINT",
        "COMMIT",
        "COPY",
        "CREATE",
        "DEALLOCATE",
        "DELETE",
        "DESCRIBE",
        "DETACH",
        "DROP",
        "EXECUTE",
        "EXPLAIN",
        "EXPORT",
        "FORCE",
        "GRANT",
        "IMPORT",
        "INSERT",
        "INSTALL",
        "LOAD",
        "MERGE",
        "MSCK",
        "PRAGMA",
        "PREPARE",
        "REFRESH",
        "RESET",
        "REVOKE",
        "ROLLBACK",
        "SET",
        "SHOW",
        "SUMMARIZE",
        "TRUNCATE",
        "UNLOAD",
        "UPDATE",
        "UPSERT",
        "USE",
        "VACUUM",
    ]
)

#: scalar or table functions that read files, the network, settings or the environment
FORBIDDEN_FUNCTION = re.compile(
    r"^(read_\w+|.*_scan|glob|getenv|query|query_table|sniff_csv|parquet_\w+|duckdb_\w+|"
    r"pragma_\w+|current_setting|load_\w+|http_\w+|system|exec|iceberg_\w+|delta_\w+|"
    r"which_secret|load_aws_credentials|enable_\w+|disable_\w+)$",
    re.IGNORECASE,
)
#: statements people send to see a table's columns: refused (not read queries), pointing at the
#: datasets listing, which shows every granted table's columns and declared noise
CATALOG_KEYWORDS = frozenset(["DESCRIBE", "SHOW", "SUMMARIZE"])
COLUMNS_ELSEWHERE = (
    "; the columns of your tables are listed by fort.datasets() (R: fort_datasets(), "
    "HTTP: GET datasets)"
)
PATHLIKE = re.compile(r"^[a-z][a-z0-9+.-]*://|[/\\*?~]|\.(csv|tsv|parquet|json|db|duckdb)$", re.I)


class SqlRejected(Exception):
    """The SQL may not run. ``status`` is 400 (invalid) or 403 (not allowed)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class CheckedQuery:
    sql: str  # the query as the engine runs it, every real table fully qualified
    tables: tuple[str, ...]  # "dataset.table" for every real table read, sorted
    dataset: str


def _fold(name: str) -> str:
    return name.casefold()


def parse_one_read_query(sql: str, dialect: str) -> exp.Expression:
    """Parse *sql* as exactly one read-only statement, or raise :class:`SqlRejected`."""
    if not isinstance(sql, str) or not sql.strip():
        raise SqlRejected(400, "the query is empty")
    if len(sql) > MAX_SQL_LENGTH:
        raise SqlRejected(
            400, f"the query is {len(sql)} characters long (at most {MAX_SQL_LENGTH})"
        )
    if "\x00" in sql:
        raise SqlRejected(400, "the query contains a NUL character")
    logging.getLogger("sqlglot").setLevel(logging.ERROR)  # no "falling back to Command" noise
    try:
        engine_dialect = Dialect.get_or_raise(dialect)
        tokens = engine_dialect.tokenize(sql)  # once: for the leading keyword and the parser
        keyword = tokens[0].text.upper() if tokens else ""
        if keyword in STATEMENT_KEYWORDS:
            hint = COLUMNS_ELSEWHERE if keyword in CATALOG_KEYWORDS else ""
            raise SqlRejected(
                403, f"{keyword} statements are not allowed: only read queries may run{hint}"
            )
        statements = [s for s in engine_dialect.parser().parse(tokens, sql) if s is not None]
    except SqlglotError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SqlRejected(400, f"the query could not be parsed: {first}") from None
    except RecursionError:
        raise SqlRejected(400, "the query is nested too deeply") from None
    if len(statements) != 1:
        raise SqlRejected(
            400, f"send exactly one statement; this text has {len(statements)} statements"
        )
    root = statements[0]
    for node in root.walk():
        for cls, label in FORBIDDEN_NODES.items():
            if isinstance(node, cls):
                if isinstance(node, exp.Command) and isinstance(node.this, str):
                    label = f"{node.this.upper()[:32]} (a command)"
                hint = COLUMNS_ELSEWHERE if label in CATALOG_KEYWORDS else ""
                raise SqlRejected(403, f"{label} is not allowed: only read queries may run{hint}")
    if not isinstance(root, READ_ROOTS):
        raise SqlRejected(
            403, f"{root.key.upper()} statements are not allowed: only SELECT, WITH, set "
            "operations and VALUES may run",
        )  # fmt: skip
    for func in root.find_all(exp.Func):
        name = func.name if isinstance(func, exp.Anonymous) else func.sql_name()
        if FORBIDDEN_FUNCTION.match(name or ""):
            raise SqlRejected(403, f"the function {name}() is not allowed")
    return root


def _cte_references(root: exp.Expression) -> set[int]:
    """ids of the Table nodes that sqlglot's scopes resolve to a CTE (not a real table)."""
    ids: set[int] = set()
    try:
        scopes: list[Scope] = traverse_scope(root)
    except (SqlglotError, RecursionError) as e:
        raise SqlRejected(400, f"the query could not be analysed: {e}") from None
    for scope in scopes:
        for table in scope.tables:
            source = scope.sources.get(table.alias_or_name)
            if (
                isinstance(source, Scope)
                and not table.args.get("db")
                and not table.args.get("catalog")
                and table.name in scope.cte_sources
                and scope.cte_sources[table.name] is source
            ):
                ids.add(id(table))
    return ids


def _table_label(table: exp.Table) -> str:
    return ".".join(p.name for p in table.parts) or table.sql()


def check_sql(
    sql: str,
    *,
    dataset: str,
    tables: Mapping[str, Collection[str]],
    granted: Collection[str],
    dialect: str = "duckdb",
    target: tuple[str | None, str | None] = (None, None),
) -> CheckedQuery:
    """Authorize *sql* against *dataset* for a caller who may query the datasets in *granted*.

    *tables* maps every dataset name in the policy to its table names. A table may be written
    ``table`` (in *dataset*) or ``dataset.table``; identifiers compare case-insensitively (as
    in DuckDB and Athena). *target* is the (catalog, schema) under which the engine exposes
    *dataset*; the returned SQL names every real table that way.
    """
    if dataset not in tables:
        raise SqlRejected(400, f"unknown dataset '{dataset}'")
    root = parse_one_read_query(sql, dialect)
    try:  # a tree the parser built may still be too deep to walk or to render
        return _authorize(root, dataset, tables, granted, dialect, target)
    except RecursionError:
        raise SqlRejected(400, "the query is nested too deeply") from None


def _authorize(root: exp.Expression, dataset, tables, granted, dialect, target) -> CheckedQuery:
    """:func:`check_sql` after the parse: every real table of *root* granted and qualified."""
    ctes = _cte_references(root)
    own = {_fold(t): t for t in tables[dataset]}
    datasets = {_fold(d): d for d in tables}
    granted_f = {_fold(g) for g in granted}
    seen: set[str] = set()
    for table in list(root.find_all(exp.Table)):
        if id(table) in ctes:
            continue
        label = _table_label(table)
        if not isinstance(table.this, exp.Identifier):
            kind = table.this.sql_name() if isinstance(table.this, exp.Func) else table.this.key
            raise SqlRejected(403, f"table functions are not allowed: {kind} in FROM")
        name = table.name
        if PATHLIKE.search(name):
            raise SqlRejected(403, f"files and URLs are not allowed in FROM: '{name}'")
        if table.args.get("catalog"):
            raise SqlRejected(403, f"table '{label}' is not in dataset '{dataset}'")
        db = table.args.get("db")
        ds_name = datasets.get(_fold(db.name)) if db else dataset
        if ds_name is None:
            raise SqlRejected(403, f"table '{label}' is not in a dataset you may query")
        if _fold(ds_name) not in granted_f:
            raise SqlRejected(
                403, f"table '{label}': you have no grant to query dataset '{ds_name}'"
            )
        if ds_name != dataset:
            raise SqlRejected(
                403, f"table '{label}' is in dataset '{ds_name}'; this query runs on dataset "
                f"'{dataset}' (one dataset per query)",
            )  # fmt: skip
        real = own.get(_fold(name))
        if real is None:
            raise SqlRejected(403, f"table '{label}' is not in dataset '{dataset}'")
        seen.add(f"{dataset}.{real}")
        _qualify(table, real, target)
    return CheckedQuery(sql=root.sql(dialect=dialect), tables=tuple(sorted(seen)), dataset=dataset)


def _qualify(table: exp.Table, real: str, target: tuple[str | None, str | None]) -> None:
    catalog, schema = target
    if not table.alias:
        table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name, quoted=True)))
    table.set("this", exp.to_identifier(real, quoted=True))
    table.set("db", exp.to_identifier(schema, quoted=True) if schema else None)
    table.set("catalog", exp.to_identifier(catalog, quoted=True) if catalog else None)
