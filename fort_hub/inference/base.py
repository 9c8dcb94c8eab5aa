"""What the estimators share: argument checks, the noise variances, the moments, the table."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fort_hub.inference.data import Source, as_source
from fort_hub.inference.expr import Col, Const, Expr, Named


class InferenceWarning(UserWarning):
    """The correction's assumptions look violated by the data (e.g. a corrected X'X that is not
    positive definite, or a negative residual variance): the numbers are not to be trusted."""


def column_list(value, argument: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    try:
        out = list(value)
    except TypeError:
        raise TypeError(f"{argument}: expected a list of column names, not {value!r}") from None
    if not out:
        raise ValueError(f"{argument}: give at least one column")
    for c in out:
        if not isinstance(c, str) or not c:
            raise TypeError(f"{argument}: column names are non-empty strings, not {c!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{argument}: a column is listed twice: {out}")
    return out


def variances(x_s2, columns: Sequence[str], declared: dict[str, float]) -> np.ndarray:
    """The noise variance of each column, from *x_s2* (a number, a list as long as the columns
    or a {column: variance} mapping) or else from the source's declared noise (0 if none)."""
    if x_s2 is None:
        return np.array([float(declared.get(c, 0.0)) for c in columns])
    if isinstance(x_s2, dict):
        unknown = sorted(set(x_s2) - set(columns))
        if unknown:
            raise ValueError(f"x_s2: {unknown} are not among x_columns {list(columns)}")
        out = [x_s2.get(c, declared.get(c, 0.0)) for c in columns]
    elif np.ndim(x_s2) == 0:
        out = [x_s2] * len(columns)
    else:
        out = list(np.asarray(x_s2, dtype=object).ravel())
        if len(out) != len(columns):
            raise ValueError(
                f"x_s2: {len(out)} variances for {len(columns)} x_columns; give one per column"
            )
    unknown = [c for c, v in zip(columns, out, strict=True) if v is None]
    if unknown:
        raise ValueError(
            f"x_s2: the noise variance of {unknown} is not known (None); the correction is "
            "valid only for row-level additive noise of known, constant variance"
        )
    try:
        arr = np.array([float(v) for v in out])
    except (TypeError, ValueError):
        raise TypeError(f"x_s2: variances are numbers, not {out!r}") from None
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"x_s2: noise variances are finite and >= 0, not {arr.tolist()}")
    return arr


def check_columns(source: Source, columns: Sequence[str], argument: str) -> None:
    known = source.column_names()
    missing = [c for c in columns if c not in known]
    if missing:
        raise ValueError(f"{argument}: unknown column(s) {missing}; the data has {known}")
    source.check_numeric(columns, argument)


def positive_int(value, argument: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{argument}: expected an integer >= {minimum}, not {value!r}")
    return int(value)


def warn(messages: list[str], text: str) -> None:
    messages.append(text)
    warnings.warn(text, InferenceWarning, stacklevel=3)


@dataclass
class Standardized:
    """Column shifts and scales from a first pass: later passes sum (x - shift) / scale."""

    n: int
    shift: np.ndarray
    scale: np.ndarray
    extra: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def columns(self, names: Sequence[str]) -> list[Expr]:
        return [
            Named(f"fort_z{i}_", (Col(c) - Const(m) if m else Col(c)) / Const(s))
            for i, (c, m, s) in enumerate(zip(names, self.shift, self.scale, strict=True))
        ]


def first_pass(source: Source, names: Sequence[str], used: Sequence[str],
               extra: Sequence[Expr] = ()) -> Standardized:  # fmt: skip
    """Row count, means and scales of *names* (and the sums of *extra*) over the rows where no
    *used* column is NULL."""
    exprs = [Col(c) for c in names] + [Col(c) * Col(c) for c in names] + list(extra)
    n, sums = source.aggregate(used, exprs)
    if n == 0:
        raise ValueError("data: no rows left (after dropping rows with NULL in the used columns)")
    k = len(names)
    mean = sums[:k] / n
    with np.errstate(invalid="ignore"):
        scale = np.sqrt(sums[k : 2 * k] / n - mean**2)
    # the scale only conditions the later passes: any positive number gives the same estimates
    scale = np.where(np.isfinite(scale) & (scale > 1e-12 * np.maximum(1.0, np.abs(mean))),
                     scale, 1.0)  # fmt: skip
    return Standardized(n, mean, scale, sums[2 * k :])


class Regression:
    """What both regressions share: their columns, noise variances, intercept and table."""

    def __init__(self, x_columns, y_column, x_s2, fit_intercept):
        self.x_columns = column_list(x_columns, "x_columns")
        if not isinstance(y_column, str) or not y_column:
            raise TypeError(f"y_column: expected a column name, not {y_column!r}")
        if y_column in self.x_columns:
            raise ValueError(f"y_column: {y_column!r} is also in x_columns")
        self.y_column = y_column
        self.x_s2 = x_s2
        if x_s2 is not None:
            variances(x_s2, self.x_columns, {})  # bad input fails here, not at fit()
        self.fit_intercept = bool(fit_intercept)

    @property
    def names(self) -> list[str]:
        return (["const"] if self.fit_intercept else []) + self.x_columns

    def prepare(self, data) -> tuple[Source, list[str]]:
        """The source, checked, and the used columns; sets ``x_s2_`` (explicit or declared)."""
        source = as_source(data)
        check_columns(source, self.x_columns, "x_columns")
        check_columns(source, [self.y_column], "y_column")
        self.x_s2_ = variances(self.x_s2, self.x_columns, source.noise())
        self.warnings: list[str] = []
        return source, self.x_columns + [self.y_column]

    def summary(self):
        """coef, std err, z, P>|z| and the 95% interval of each coefficient (a DataFrame)."""
        return coefficient_table(self.names, self.beta, self.beta_vcov)


def coefficient_table(names: Sequence[str], beta: np.ndarray, vcov: np.ndarray):
    """A statsmodels-like table: coef, std err, z, P>|z|, [0.025, 0.975] (normal reference)."""
    import pandas as pd
    from scipy import stats

    se = np.sqrt(np.clip(np.diag(vcov), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = beta / se
    q = stats.norm.ppf(0.975)
    return pd.DataFrame(
        {
            "coef": beta,
            "std err": se,
            "z": z,
            "P>|z|": 2 * stats.norm.sf(np.abs(z)),
            "[0.025": beta - q * se,
            "0.975]": beta + q * se,
        },
        index=pd.Index(list(names), name=None),
    )
