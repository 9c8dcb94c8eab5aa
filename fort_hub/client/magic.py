"""The ``%%fort_sql`` cell magic for IPython and Jupyter (``%load_ext fort_hub.client``).

    %load_ext fort_hub.client

    %%fort_sql shares
    SELECT country, sum(shares) AS shares FROM url_shares GROUP BY 1

runs the cell through fort-query with :class:`FortClient` (the same progress line, the same
errors) and returns the result as a pandas DataFrame, or assigns it to ``shares`` when a name
is given. ``--dataset NAME`` picks the dataset; without it, the one of your datasets whose
tables the SQL names. A refused or failed query raises :class:`FortSQLError` (a
:class:`FortQueryError`), shown as the service's message without a traceback.
"""

from __future__ import annotations

import re
from keyword import iskeyword
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .client import FortClient, FortQueryError


def guess_dataset(datasets: list[dict], sql: str) -> str:
    """The dataset whose tables *sql* names (``table`` or ``dataset.table``), among
    *datasets* (``FortClient.datasets()``); the only one when the caller has one."""
    names = [d["name"] for d in datasets]
    if len(names) == 1:
        return names[0]
    named = []
    for d in datasets:
        tables = [t["name"] for t in d.get("tables") or []]
        words = [*tables, *(f"{d['name']}.{t}" for t in tables)]
        if any(re.search(rf"(?<![\w.]){re.escape(w)}(?!\w)", sql, re.IGNORECASE) for w in words):
            named.append(d["name"])
    if len(named) == 1:
        return named[0]
    which = "several datasets" if named else "none of your datasets"
    raise UsageError(
        f"add --dataset NAME: the SQL names tables of {which} (yours: {', '.join(named or names)})"
    )


class FortSQLError(FortQueryError):
    """A :class:`FortQueryError` from ``%%fort_sql``: IPython shows it as one line (the
    service's message), without a traceback; the cell still fails. ``cause`` is the client's
    exception (e.g. a :class:`~.client.FortQuotaExceeded` with its ``quota``)."""

    def __init__(self, cause: FortQueryError):
        super().__init__(cause.message, cause.status, cause.query_id, cause.detail)
        self.cause = cause


@magics_class
class FortMagics(Magics):
    """``%%fort_sql [name] [--dataset NAME] [--no-progress]``"""

    def __init__(self, shell, client: FortClient | None = None):
        super().__init__(shell)
        self._client = client

    @property
    def client(self) -> FortClient:
        if self._client is None:
            try:
                self._client = FortClient()
            except FortQueryError as e:
                raise UsageError(f"fort-query is not configured: {e}") from None
        return self._client

    @magic_arguments()
    @argument("name", nargs="?", help="assign the DataFrame to this variable instead")
    @argument("--dataset", "-d", help="the dataset to query (default: the one the SQL names)")
    @argument("--no-progress", action="store_true", help="no progress line while it runs")
    @cell_magic
    def fort_sql(self, line: str, cell: str) -> Any:
        """Run the cell's SQL through fort-query; the result is a pandas DataFrame."""
        args = parse_argstring(self.fort_sql, line)
        sql = cell.strip()
        if not sql:
            raise UsageError("%%fort_sql: the cell is empty; write one SQL query below the magic")
        if args.name is not None and (not args.name.isidentifier() or iskeyword(args.name)):
            raise UsageError(f"%%fort_sql: {args.name!r} is not a valid Python variable name")
        try:
            dataset = args.dataset or guess_dataset(self.client.datasets(), sql)
            table = self.client.query(sql, dataset, progress=not args.no_progress)
        except FortQueryError as e:
            raise FortSQLError(e) from None
        df = table.to_pandas()
        if args.name is None:
            return df
        self.shell.user_ns[args.name] = df
        print(f"{args.name}: {len(df)} rows x {len(df.columns)} columns")
        return None


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(FortMagics)
