"""The sufficient statistics of a linear fit and Evans and King's simulation of their sampling
distribution (PrivacyUnbiased's ``varianceMVN``), in the standardized design.

The design is D = [1, (x - shift) / scale] (no column of ones without an intercept) and the
response y - y_shift. The covariance formulas of the moments are tensors under such a linear
reparametrization of the covariates, so simulating in D and mapping the draws back gives the
same distribution as simulating in the original columns, without its loss of precision.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np


@dataclass
class Moments:
    n: int
    xx: np.ndarray  #: D'D
    xyc: np.ndarray  #: D'(y - y_shift)
    ycyc: float  #: (y - y_shift)'(y - y_shift)
    shift: np.ndarray
    scale: np.ndarray
    y_shift: float

    def standardized(self) -> Moments:
        """The same sums for the design's x columns divided by their root mean square."""
        k = len(self.scale)
        icpt = self.xx.shape[0] - k
        rms = np.sqrt(np.diag(self.xx)[icpt:] / self.n)
        factor = np.where(np.isfinite(rms) & (rms > 0), rms, 1.0)
        t = np.concatenate([np.ones(icpt), 1.0 / factor])
        return Moments(self.n, self.xx * np.outer(t, t), self.xyc * t, self.ycyc, self.shift,
                       self.scale * factor, self.y_shift)  # fmt: skip

    def intercept_shift(self, intercept: bool) -> np.ndarray:
        """Add to a fit of y - y_shift on D to get the fit of y on D."""
        out = np.zeros(self.xx.shape[0])
        if intercept:
            out[0] = self.y_shift
        return out

    def back_transform(self, intercept: bool) -> np.ndarray:
        """T with beta(original columns) = T @ beta(D)."""
        inv = 1.0 / self.scale
        if not intercept:
            return np.diag(inv)
        k = len(self.scale)
        t = np.zeros((k + 1, k + 1))
        t[0, 0] = 1.0
        t[0, 1:] = -self.shift * inv
        t[1:, 1:] = np.diag(inv)
        return t

    def xy_raw(self, intercept: bool) -> tuple[np.ndarray, float]:
        """D'y and y'y for the unshifted y."""
        if not intercept:
            return self.xyc, self.ycyc
        xy = self.xyc + self.y_shift * self.xx[:, 0]
        yy = self.ycyc + 2 * self.y_shift * self.xyc[0] + self.n * self.y_shift**2
        return xy, yy


def moment_covariance(mom: Moments, s: np.ndarray, sigma_sq: float, intercept: bool):
    """Mean and covariance of vec(upper triangle of D'D, row by row; D'y), as PrivacyUnbiased's
    ``covXX``, ``covXyXX`` and ``covXyXy`` estimate them."""
    q, n = mom.xx, mom.n
    xy, yy = mom.xy_raw(intercept)
    p = q.shape[0]
    omega = q - n * s
    pairs = [(i, j) for i in range(p) for j in range(i, p)]
    t = len(pairs)
    size = t + p
    sig = np.zeros((size, size))
    for r, (k, j) in enumerate(pairs):
        for c, (m, o) in enumerate(pairs):  # covXX(k, j, l=o, m)
            sig[r, c] = (
                omega[k, o] * s[j, m] + omega[k, m] * s[j, o] + omega[j, o] * s[k, m]
                + omega[j, m] * s[k, o] + n * (s[k, m] * s[j, o] + s[k, o] * s[j, m])
            )  # fmt: skip
        for a in range(p):
            sig[r, t + a] = sig[t + a, r] = xy[j] * s[a, k] + xy[k] * s[a, j]
    for a in range(p):
        for b in range(p):
            sig[t + a, t + b] = sigma_sq * omega[a, b] + s[a, b] * yy
    mu = np.concatenate([[q[i, j] for i, j in pairs], xy])
    return mu, sig, pairs


def simulate_beta(mom: Moments, s_diag: np.ndarray, sigma_sq: float, reps: int,
                  rng: np.random.Generator, intercept: bool) -> np.ndarray:  # fmt: skip
    """*reps* draws of the corrected coefficients (in D) from normal draws of the moments.

    As in PrivacyUnbiased, the count n (the first moment, with an intercept) is held fixed and
    the covariance is made positive semi-definite (eigenvalues below zero set to zero; the
    package uses Matrix::nearPD, which differs only for singular covariances)."""
    s = np.diag(s_diag)
    mu, sig, pairs = moment_covariance(mom, s, sigma_sq, intercept)
    free = slice(1, None) if intercept else slice(0, None)
    vals, vecs = np.linalg.eigh(sig[free, free])
    # the principal square root: unique, so the same seed gives the same draws whatever the
    # rounding of the moments (an eigenvector basis is not unique)
    root = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    draws = np.tile(mu, (reps, 1))
    draws[:, free] += rng.standard_normal((reps, len(vals))) @ root
    p = mom.xx.shape[0]
    q = np.zeros((reps, p, p))
    for c, (i, j) in enumerate(pairs):
        q[:, i, j] = q[:, j, i] = draws[:, c]
    xy = draws[:, len(pairs) :]
    try:
        return np.linalg.solve(q - mom.n * s, xy[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        out = np.full((reps, p), np.nan)
        for r in range(reps):
            with contextlib.suppress(np.linalg.LinAlgError):
                out[r] = np.linalg.solve(q[r] - mom.n * s, xy[r])
        return out[~np.isnan(out).any(axis=1)]
