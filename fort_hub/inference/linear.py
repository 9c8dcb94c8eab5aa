"""Linear regression with covariates observed with additive Gaussian noise of known variance.

Evans and King (2021), "Statistically Valid Inferences from Differentially Private Data
Releases, with Application to the Facebook URLs Dataset", Political Analysis: the estimator is a
function of the sufficient statistics n, X'X, X'y, y'y only, computed here in two passes over the
rows (centred and scaled columns, so that sums over many rows keep their precision); see
docs/inference.md. The conventions are those of the authors' R package PrivacyUnbiased
(``lmdp``), against which tests/test_inference_reference.py checks the numbers.
"""

from __future__ import annotations

import numpy as np

from fort_hub.inference.base import Regression, Standardized, positive_int, warn
from fort_hub.inference.expr import Const
from fort_hub.inference.moments import Moments, simulate_beta


class LinearRegression(Regression):
    """Bias-corrected OLS of *y_column* on noisy *x_columns* (SVInfer's interface).

    ``x_s2``: the noise variance of each x column (a number, a list or a {column: variance}
    mapping; omitted, the source's declared noise, else 0). ``df_corrected``: the residual
    variance divides by n - (k - 1), k counting the intercept column, as PrivacyUnbiased does;
    else by n. ``n_replications`` draws of the moments estimate the variance-covariance
    (``random_state`` seeds them). After :meth:`fit`: ``beta`` (intercept first), ``sigma_sq``,
    ``beta_vcov``, ``beta_standarderror``, ``naive_beta`` (uncorrected OLS), ``n``, ``warnings``.
    """

    def __init__(self, x_columns, y_column, x_s2=None, fit_intercept=True, df_corrected=True,
                 n_replications=500, random_state=None):  # fmt: skip
        super().__init__(x_columns, y_column, x_s2, fit_intercept)
        self.df_corrected = bool(df_corrected)
        self.n_replications = positive_int(n_replications, "n_replications", 2)
        self.random_state = random_state

    def fit(self, data) -> LinearRegression:
        source, used = self.prepare(data)
        # one pass over the rows: the columns shifted by the values of any one row (precise
        # sums unless a column's spread is tiny next to that row's distance from its mean),
        # then scaled in the sums (the design's columns are standardized for the solve)
        shift = np.zeros(len(used))
        if self.fit_intercept:
            shift = source.first_row(used)
            if shift is None:
                raise ValueError("data: no rows left (after dropping rows with NULL in the used "
                                 "columns)")  # fmt: skip
        std = Standardized(0, shift, np.ones(len(used)))
        self.moments_ = second_pass(source, used, std, self.fit_intercept).standardized()
        self.n = self.moments_.n
        self._solve()
        return self

    def _solve(self) -> None:
        mom, icpt = self.moments_, int(self.fit_intercept)
        s_diag = np.concatenate([[0.0] * self.fit_intercept, self.x_s2_ / mom.scale**2])
        corrected = mom.xx - mom.n * np.diag(s_diag)
        p = corrected.shape[0]
        if mom.n <= p:
            raise ValueError(f"data: {mom.n} rows are too few for {p} coefficients")
        if np.linalg.eigvalsh(corrected).min() <= 0:
            warn(self.warnings, "the noise-corrected X'X is not positive definite: the noise "
                 "variances are too large for these data (or x_s2 is wrong); estimates unreliable")  # fmt: skip
        gamma, naive = solve(corrected, mom.xyc), solve(mom.xx, mom.xyc)
        if not np.all(np.isfinite(gamma)):
            warn(self.warnings, "the noise-corrected X'X is singular: no estimate")
        rss = mom.ycyc - 2 * gamma @ mom.xyc + gamma @ mom.xx @ gamma
        df = mom.n - (p - 1) if self.df_corrected else mom.n
        self.sigma_sq = float(rss / df - np.sum(gamma[icpt:] ** 2 * s_diag[icpt:]))
        if self.sigma_sq < 0:
            warn(self.warnings, f"the residual variance estimate is negative ({self.sigma_sq:.6g}): "
                 "the noise variances are too large for these data (or x_s2 is wrong)")  # fmt: skip
        back = mom.back_transform(self.fit_intercept)
        self.beta = back @ (gamma + mom.intercept_shift(self.fit_intercept))
        self.naive_beta = back @ (naive + mom.intercept_shift(self.fit_intercept))
        self.beta_vcov = np.full((p, p), np.nan)
        if np.all(np.isfinite(gamma)):
            rng = np.random.default_rng(self.random_state)
            draws = simulate_beta(
                mom, s_diag, self.sigma_sq, self.n_replications, rng, self.fit_intercept
            )
            self.beta_vcov = back @ np.atleast_2d(np.cov(draws, rowvar=False)) @ back.T
        self.beta_standarderror = np.sqrt(np.clip(np.diag(self.beta_vcov), 0, None))


def solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.full(len(b), np.nan)


def second_pass(source, used, std: Standardized, intercept: bool) -> Moments:
    """Sums of the standardized design's products: X'X, X'(y - shift_y), (y - shift_y)'(...)."""
    z = std.columns(used)
    design = ([Const(1.0)] if intercept else []) + z[:-1]
    yc = z[-1]
    p = len(design)
    pairs = [(i, j) for i in range(p) for j in range(i, p)]
    exprs = [design[i] * design[j] for i, j in pairs] + [d * yc for d in design] + [yc * yc]
    n, sums = source.aggregate(used, exprs)
    if n == 0:
        raise ValueError("data: no rows left (after dropping rows with NULL in the used columns)")
    xx = np.zeros((p, p))
    for (i, j), v in zip(pairs, sums, strict=False):
        xx[i, j] = xx[j, i] = v
    return Moments(n=n, xx=xx, xyc=sums[len(pairs) : len(pairs) + p], ycyc=float(sums[-1]),
                   shift=std.shift[:-1], scale=std.scale[:-1], y_shift=float(std.shift[-1]))  # fmt: skip
