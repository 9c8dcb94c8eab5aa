"""Where the rows come from: a pandas DataFrame or a pyarrow Table in memory, or a
:class:`~fort_hub.inference.sql.SQLSource` (aggregate SQL on a database or through fort-query).

A source answers one question: the row count and the sums of some row-level expressions over
the rows where none of the used columns is NULL (in memory, NaN counts as NULL too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fort_hub.inference.expr import Expr, evaluate


class Source(Protocol):
    def column_names(self) -> list[str]: ...

    def check_numeric(self, columns: Sequence[str], argument: str) -> None: ...

    def aggregate(
        self, columns: Sequence[str], exprs: Sequence[Expr], params: dict | None = None
    ) -> tuple[int, np.ndarray]:
        """(rows without NULL in *columns*, the sum of each expression over them), the
        :class:`~fort_hub.inference.expr.Param` values taken from *params*."""

    def first_row(self, columns: Sequence[str]) -> np.ndarray | None:
        """Any one row without NULL in *columns*, or None if there is none."""

    def noise(self) -> dict[str, float]:
        """Declared noise variances by column ({} when the source declares none)."""


BLOCK = 65_536


class InMemory:
    """A pandas DataFrame or a pyarrow Table."""

    def __init__(self, data):
        self.data = data
        self.kind = "pyarrow Table" if _is_arrow(data) else "DataFrame"
        self._cache: dict[tuple, dict[str, np.ndarray]] = {}

    def column_names(self) -> list[str]:
        return [str(c) for c in (self.data.column_names if _is_arrow(self.data) else self.data)]

    def check_numeric(self, columns: Sequence[str], argument: str) -> None:
        for c in columns:
            if _is_arrow(self.data):
                import pyarrow.types as pt

                t = self.data.schema.field(c).type
                ok = pt.is_integer(t) or pt.is_floating(t) or pt.is_boolean(t)
                ok = ok or pt.is_decimal(t) or pt.is_null(t)
            else:
                import pandas as pd

                dtype = self.data[c].dtype
                ok = pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
            if not ok:
                raise TypeError(f"{argument}: column {c!r} is not numeric in the {self.kind}")

    def arrays(self, columns: Sequence[str]) -> dict[str, np.ndarray]:
        key = tuple(columns)
        if key not in self._cache:
            raw = {c: self._column(c) for c in columns}
            keep = np.ones(len(next(iter(raw.values()))), dtype=bool)
            for values in raw.values():
                keep &= ~np.isnan(values)
            self._cache = {key: {c: v[keep] for c, v in raw.items()}}
        return self._cache[key]

    def _column(self, name: str) -> np.ndarray:
        if _is_arrow(self.data):
            col = self.data.column(name)
            import pyarrow as pa

            col = col.cast(pa.float64()) if col.num_chunks else pa.array([], pa.float64())
            return np.asarray(col.to_numpy(zero_copy_only=False), dtype=float)
        import pandas as pd

        series = self.data[name]
        return pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()

    def aggregate(
        self, columns: Sequence[str], exprs: Sequence[Expr], params: dict | None = None
    ) -> tuple[int, np.ndarray]:
        arrays = self.arrays(columns)
        n = len(next(iter(arrays.values())))
        sums = np.zeros(len(exprs))
        # in blocks of rows, so that the temporaries stay in the processor's cache
        for start in range(0, n, BLOCK):
            block = {c: v[start : start + BLOCK] for c, v in arrays.items()}
            rows, memo = len(next(iter(block.values()))), {}
            for i, e in enumerate(exprs):
                sums[i] += np.sum(np.broadcast_to(evaluate(e, block, memo, params or {}), (rows,)))
        return n, sums

    def first_row(self, columns: Sequence[str]) -> np.ndarray | None:
        arrays = self.arrays(columns)
        if not len(next(iter(arrays.values()))):
            return None
        return np.array([arrays[c][0] for c in columns])

    def noise(self) -> dict[str, float]:
        return {}


def _is_arrow(data) -> bool:
    return type(data).__module__.startswith("pyarrow") and hasattr(data, "column_names")


def as_source(data) -> Source:
    """*data* as a source, or a TypeError naming what is accepted."""
    if hasattr(data, "aggregate") and hasattr(data, "noise"):
        return data
    if _is_arrow(data):
        return InMemory(data)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency of the client extra
        pd = None
    if pd is not None and isinstance(data, pd.DataFrame):
        return InMemory(data)
    raise TypeError(
        "data: expected a pandas DataFrame, a pyarrow Table or a SQLSource, "
        f"not {type(data).__name__}"
    )
