"""Engine error messages in plain words: a pure function from DuckDB's message to what a
researcher reads, the original kept as the query's ``error_detail``.

This runs in the service (not in the clients), so that the Python client, the R client, the
``%%fort_sql`` magic and the query list show the same sentence::

    plain_duckdb_error('Binder Error: Referenced column "age" not found in FROM clause!\\n'
                       'Candidate bindings: "age_bracket", "country"')
    # 'no column "age" in the tables of this query; did you mean "age_bracket" or "country"?
    #  (fort.datasets() (R: fort_datasets()) lists each table's columns)'

A message it does not recognise comes back as its first line. :func:`plain_athena_error` does
the same for Athena's most common one (a missing column).
"""

from __future__ import annotations

import re

COLUMNS_HINT = "fort.datasets() (R: fort_datasets()) lists each table's columns"

_NO_COLUMN = re.compile(r'Referenced column "(?P<col>[^"]+)" not found in FROM clause')
_CANDIDATES = re.compile(r"Candidate bindings: (?P<names>.+)")
_NO_COLUMN_IN = re.compile(
    r'(?:Table|Values list) "(?P<table>[^"]+)" does not have a column named "(?P<col>[^"]+)"'
)
_NO_FUNCTION = re.compile(
    r"No function matches the given name and argument types '(?P<name>\w+)\((?P<args>[^)]*)\)'"
)
_GROUP_BY = re.compile(r'column "(?P<col>[^"]+)" must appear in the GROUP BY clause')
_CONVERSION = re.compile(r"^Conversion Error: (?P<what>.+)$")


_ATHENA_NO_COLUMN = re.compile(r"COLUMN_NOT_FOUND: (?:line [\d:]+: )?Column '(?P<col>[^']+)'")


def plain_athena_error(message: str) -> str:
    """What to tell the user for Athena's ``StateChangeReason`` (*message* if unrecognised)."""
    m = _ATHENA_NO_COLUMN.search(message)
    if m:
        return f'no column "{m["col"]}" in the tables of this query; {COLUMNS_HINT}'
    return message


def _or(names: list[str]) -> str:
    quoted = [f'"{n}"' for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def plain_duckdb_error(message: str) -> str:
    """What to tell the user for DuckDB's error *message* (its first line if unrecognised)."""
    lines = message.splitlines() or [""]
    first = lines[0]
    m = _NO_COLUMN.search(first)
    if m:
        out = f'no column "{m["col"]}" in the tables of this query'
        names = []
        for line in lines[1:]:
            c = _CANDIDATES.match(line.strip())
            if c:
                names = re.findall(r'"((?:[^"]|"")+)"', c["names"])[:3]
        if names:
            return f"{out}; did you mean {_or(names)}? ({COLUMNS_HINT})"
        return f"{out}; {COLUMNS_HINT}"
    m = _NO_COLUMN_IN.search(first)
    if m:
        return f'table "{m["table"]}" has no column "{m["col"]}"; {COLUMNS_HINT}'
    m = _NO_FUNCTION.search(first)
    if m:
        return (
            f"{m['name']}() does not take ({m['args']}): cast the argument, e.g. "
            f"{m['name']}(CAST(column AS DOUBLE))"
        )
    m = _GROUP_BY.search(first)
    if m:
        return (
            f'column "{m["col"]}" must be listed in GROUP BY or used inside an aggregate '
            f'(e.g. any_value("{m["col"]}"))'
        )
    m = _CONVERSION.match(first)
    if m:
        return f"{m['what']} (TRY_CAST gives NULL instead of failing)"
    return first
