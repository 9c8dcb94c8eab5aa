"""Aggregate queries through fort-query (a :class:`~fort_hub.client.FortClient`): each pass of a
fit is a query like any other, authorized, quota'd and audited, whose result is one row."""

from __future__ import annotations

ENGINE_DIALECTS = {"duckdb": "duckdb", "athena": "athena"}


class FortRunner:
    def __init__(self, client, table: str, dataset: str | None):
        self.client = client
        entries = {d["name"]: d for d in client.datasets()}
        if dataset is None:
            holding = [n for n, d in entries.items() if table in table_names(d)]
            if len(holding) != 1:
                where = f"in {holding}" if holding else "in none of your datasets"
                raise ValueError(f"table: {table!r} is {where}; name one with dataset=")
            dataset = holding[0]
        if dataset not in entries:
            raise ValueError(f"dataset: {dataset!r} is not one of your datasets {sorted(entries)}")
        self.dataset, self.entry = dataset, entries[dataset]
        if table not in table_names(self.entry):
            raise ValueError(f"table: dataset {dataset!r} has no table {table!r}")
        if self.entry.get("error"):
            raise ValueError(f"dataset: {dataset!r} cannot be described: {self.entry['error']}")
        self.dialect = ENGINE_DIALECTS.get(self.entry.get("engine"), "duckdb")

    def one_row(self, sql: str) -> tuple | None:
        # the one-row result is followed as soon as it is submitted: no status polls
        table = self.client.results(self.client.submit(sql, self.dataset), follow=True)
        if table.num_rows == 0:
            return None
        if table.num_rows != 1:
            raise RuntimeError(f"fort-query answered {table.num_rows} rows, not one")
        return tuple(table.column(i)[0].as_py() for i in range(table.num_columns))

    def columns(self, table: str) -> dict[str, str]:
        for t in self.entry.get("tables", []):
            if t["name"] == table:
                return {c["name"]: c["type"] for c in t.get("columns", [])}
        return {}

    def noise(self) -> dict[str, float]:
        """The variances the release declares (``datasets[].noise`` of the access policy)."""
        return {c: float(v["variance"]) for c, v in (self.entry.get("noise") or {}).items()}


def table_names(entry: dict) -> list[str]:
    return [t["name"] for t in entry.get("tables", [])]
