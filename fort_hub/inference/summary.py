"""Descriptive statistics of columns observed with additive Gaussian noise of known variance.

W = X + U with U ~ N(0, s2) independent of X: the cumulants add, and the Gaussian's are zero
beyond the second, so k1(X) = k1(W), k2(X) = k2(W) - s2, k3(X) = k3(W), k4(X) = k4(W). The
cumulants of W are estimated from its central moments (``bias=True``, as ``scipy.stats`` does by
default) or by Fisher's k-statistics (``bias=False``, which gives ``scipy.stats.skew`` and
``kurtosis`` with ``bias=False`` on noise-free columns). Kurtosis is Pearson's (3 for a normal).
"""

from __future__ import annotations

import numpy as np

from fort_hub.inference.base import check_columns, column_list, first_pass, variances, warn
from fort_hub.inference.data import as_source


class SummaryStatistics:
    """Noise-corrected mean, standard deviation, skewness and kurtosis of *x_columns*.

    Rows with NULL in any of the columns are dropped. After :meth:`fit`:
    ``summary_statistics``, a DataFrame indexed by column (n, mean, sd, skewness, kurtosis)."""

    def __init__(self, x_columns, x_s2=None, bias=True):
        self.x_columns = column_list(x_columns, "x_columns")
        self.x_s2 = x_s2
        if x_s2 is not None:
            variances(x_s2, self.x_columns, {})
        if not isinstance(bias, bool):
            raise TypeError(f"bias: expected True or False, not {bias!r}")
        self.bias = bias

    def fit(self, data) -> SummaryStatistics:
        import pandas as pd

        source = as_source(data)
        check_columns(source, self.x_columns, "x_columns")
        self.x_s2_ = variances(self.x_s2, self.x_columns, source.noise())
        std = first_pass(source, self.x_columns, self.x_columns)
        z = std.columns(self.x_columns)
        powers = [e for zj in z for e in (zj, zj * zj, zj * zj * zj, zj * zj * zj * zj)]
        n, sums = source.aggregate(self.x_columns, powers)
        self.n, self.warnings = n, []
        rows = []
        for j, name in enumerate(self.x_columns):
            raw = sums[4 * j : 4 * j + 4] / n
            rows.append(self._column(name, raw, std.shift[j], std.scale[j], self.x_s2_[j]))
        self.summary_statistics = pd.DataFrame(rows, index=pd.Index(self.x_columns))
        return self

    def _column(self, name, raw, shift, scale, s2) -> dict:
        n = self.n
        a = raw[0]
        m2 = raw[1] - a * a
        m3 = raw[2] - 3 * a * raw[1] + 2 * a**3
        m4 = raw[3] - 4 * a * raw[2] + 6 * a * a * raw[1] - 3 * a**4
        m2, m3, m4 = m2 * scale**2, m3 * scale**3, m4 * scale**4
        if self.bias:
            k2, k3, k4 = m2, m3, m4 - 3 * m2 * m2
        elif n < 4:
            raise ValueError(f"data: bias=False needs at least 4 rows, not {n}")
        else:
            k2 = n / (n - 1) * m2
            k3 = n * n / ((n - 1) * (n - 2)) * m3
            k4 = n * n * ((n + 1) * m4 - 3 * (n - 1) * m2 * m2) / ((n - 1) * (n - 2) * (n - 3))
        var = k2 - s2
        out = {"n": n, "mean": shift + scale * a, "sd": np.nan, "skewness": np.nan,
               "kurtosis": np.nan}  # fmt: skip
        if var <= 0:
            warn(self.warnings, f"{name}: the noise variance ({s2:.6g}) is not below the "
                 f"column's variance ({k2:.6g}): no corrected sd, skewness or kurtosis")  # fmt: skip
            return out
        out.update(sd=np.sqrt(var), skewness=k3 / var**1.5, kurtosis=k4 / var**2 + 3.0)
        return out
