"""Logistic regression with covariates observed with additive Gaussian noise of known variance.

Stefanski and Carroll (1985), "Covariate measurement error in logistic regression", Annals of
Statistics 13(4), theorem 4: the conditional score. With W = X + U, U ~ N(0, Omega), the
statistic Delta = W + y Omega beta is sufficient for the unobserved X, and
P(y = 1 | Delta) = F(alpha + beta'Delta - beta'Omega beta / 2), F the logistic function. The
estimate solves sum_i (y_i - F(eta_i)) (1, Delta_i) = 0 (Newton's method, each step one pass of
sums over the rows) and its variance is the sandwich A^-1 B A^-T. With Omega = 0 it is the
maximum-likelihood fit with the HC0 sandwich covariance.
"""

from __future__ import annotations

import numpy as np

from fort_hub.inference.base import Regression, first_pass, positive_int, warn
from fort_hub.inference.expr import Col, Const, Logistic, Named, Param
from fort_hub.inference.moments import Moments


class LogisticRegression(Regression):
    """Conditional-score logistic regression of the 0/1 *y_column* on noisy *x_columns*.

    ``x_s2`` as for :class:`~fort_hub.inference.LinearRegression`. After :meth:`fit`: ``beta``
    (intercept first), ``beta_vcov`` (sandwich), ``beta_standarderror``, ``n``, ``n_iter``,
    ``converged``, ``warnings``. ``max_iter`` and ``tol`` bound Newton's method (each step is
    one aggregate query on a SQL source)."""

    def __init__(self, x_columns, y_column, x_s2=None, fit_intercept=True, max_iter=50,
                 tol=1e-10):  # fmt: skip
        super().__init__(x_columns, y_column, x_s2, fit_intercept)
        self.max_iter = positive_int(max_iter, "max_iter")
        if not isinstance(tol, int | float) or not 0 < tol < 1:
            raise ValueError(f"tol: expected a number between 0 and 1, not {tol!r}")
        self.tol = float(tol)

    def fit(self, data) -> LogisticRegression:
        source, used = self.prepare(data)
        y = Col(self.y_column)
        off = y * (Const(1.0) - y)
        std = first_pass(source, self.x_columns, used, [off * off, y])
        if std.extra[0] != 0:
            raise ValueError(f"y_column: {self.y_column!r} has values other than 0 and 1")
        if std.extra[1] in (0, std.n):
            raise ValueError(f"y_column: {self.y_column!r} is always {int(std.extra[1] > 0)}")
        if not self.fit_intercept:
            std.shift = np.zeros(len(self.x_columns))
        self.n = std.n
        omega = self.x_s2_ / std.scale**2
        step = NewtonStep(source, used, std.columns(self.x_columns), y, omega, self.fit_intercept)
        theta, self.n_iter, self.converged, info = newton(step, self.max_iter, self.tol)
        if not self.converged:
            warn(self.warnings, f"Newton's method did not converge in {self.max_iter} steps")
        jac, meat = info["jacobian"], info["meat"]
        try:
            inv = np.linalg.inv(jac)
            vcov = inv @ meat @ inv.T
        except np.linalg.LinAlgError:
            warn(self.warnings, "the score's derivative is singular: no variance estimate")
            vcov = np.full((len(theta), len(theta)), np.nan)
        back = Moments(std.n, np.zeros((0, 0)), np.zeros(0), 0.0, std.shift, std.scale, 0.0)
        t = back.back_transform(self.fit_intercept)
        self.beta, self.beta_vcov = t @ theta, t @ vcov @ t.T
        self.beta_standarderror = np.sqrt(np.clip(np.diag(self.beta_vcov), 0, None))
        return self


class NewtonStep:
    """Sums of the conditional score, its derivative and the sandwich's meat at theta; the
    expressions are built once with theta as parameters (one SQL text for every step)."""

    def __init__(self, source, used, z, y, omega, intercept):
        self.source, self.used, self.omega, self.intercept = source, used, omega, intercept
        k, icpt, one = len(z), int(intercept), Const(1.0)
        self.p = p = k + icpt
        theta = [Param(f"t{i}") for i in range(p)]
        eta = theta[0] if icpt else Const(0.0)
        for zj, bj in zip(z, theta[icpt:], strict=True):
            eta = eta + bj * zj
        # eta = alpha + beta'w + (y - 1/2) beta'Omega beta; Delta = w + y Omega beta
        f = Named("fort_f_", Logistic(eta + (y - Const(0.5)) * Param("c")))
        ob = [Param(f"ob{j}") for j in range(k)]
        # per-row values computed once (nested SELECT columns in SQL, memoized in memory):
        # d = (1, Delta), g = d eta / d theta, the residual r and the weight F (1 - F)
        zo = list(enumerate(zip(z, ob, strict=True)))
        d = [one] * icpt + [Named(f"fort_d{j}_", zj + y * o) for j, (zj, o) in zo]
        g = [one] * icpt + [Named(f"fort_g{j}_", zj + (2.0 * y - one) * o) for j, (zj, o) in zo]
        r, w = Named("fort_r_", y - f), Named("fort_w_", f - f * f)
        rd = [Named(f"fort_rd{a}_", r * da) for a, da in enumerate(d)]
        wd = [Named(f"fort_wd{a}_", w * da) for a, da in enumerate(d)]
        self.upper = [(a, b) for a in range(p) for b in range(a, p)]
        self.exprs = rd + [wd[a] * g[b] for a in range(p) for b in range(p)]
        self.exprs += [r * y] + [rd[a] * rd[b] for a, b in self.upper]

    def __call__(self, theta: np.ndarray) -> dict:
        icpt, p = int(self.intercept), self.p
        beta = theta[icpt:]
        params = {f"t{i}": v for i, v in enumerate(theta)}
        params |= {f"ob{j}": v for j, v in enumerate(self.omega * beta)}
        params["c"] = float(np.sum(self.omega * beta**2))
        n, s = self.source.aggregate(self.used, self.exprs, params)
        score = s[:p]
        jac = -s[p : p + p * p].reshape(p, p)
        jac[icpt:, icpt:] += np.diag(s[p + p * p] * self.omega)
        meat = np.zeros((p, p))
        for v, (i, j) in zip(s[p + p * p + 1 :], self.upper, strict=True):
            meat[i, j] = meat[j, i] = v
        return {"score": score, "jacobian": jac, "meat": meat, "n": n}


def newton(step: NewtonStep, max_iter: int, tol: float):
    """Solve score(theta) = 0 from theta = 0, halving a step that increases |score|."""
    theta = np.zeros(step.p)
    info = step(theta)
    for it in range(1, max_iter + 1):
        try:
            delta = -np.linalg.solve(info["jacobian"], info["score"])
        except np.linalg.LinAlgError:
            return theta, it, False, info
        norm = np.linalg.norm(info["score"])
        for _ in range(30):
            candidate = step(theta + delta)
            if np.linalg.norm(candidate["score"]) <= norm or np.linalg.norm(delta) < tol:
                break
            delta = delta / 2
        theta, info = theta + delta, candidate
        if np.max(np.abs(delta)) < tol * (1 + np.max(np.abs(theta))):
            return theta, it, True, info
    return theta, max_iter, False, info
