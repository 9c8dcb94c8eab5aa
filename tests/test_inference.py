"""fort_hub.inference in memory: known-truth simulations, noise-free equality with OLS,
statsmodels and scipy, the interface, and the guard rails."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats

from fort_hub.inference import (
    InferenceWarning,
    LinearRegression,
    LogisticRegression,
    SummaryStatistics,
)

TRUE = np.array([0.5, 1.5, -0.8])


def noisy_linear(rng, n=2000, sd=(0.8, 0.5)):
    x = np.column_stack([rng.normal(1.0, 1.0, n), rng.gamma(2.0, 1.0, n)])
    y = TRUE[0] + x @ TRUE[1:] + rng.normal(0, 1.0, n)
    w = x + rng.normal(size=x.shape) * np.array(sd)
    return pd.DataFrame({"x1": w[:, 0], "x2": w[:, 1], "y": y}), np.square(sd)


def test_linear_noise_free_equals_ols():
    rng = np.random.default_rng(1)
    df, _ = noisy_linear(rng, n=500, sd=(0, 0))
    df["x1"] += 1e6  # a large mean: the two passes keep the precision
    X = np.column_stack([np.ones(len(df)), df[["x1", "x2"]]])
    b, *_ = np.linalg.lstsq(X, df["y"], rcond=None)
    rss = float(np.sum((df["y"] - X @ b) ** 2))
    m = LinearRegression(["x1", "x2"], "y", n_replications=4000, random_state=0).fit(df)
    np.testing.assert_allclose(m.beta, b, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(m.naive_beta, b, rtol=1e-9, atol=1e-9)
    # PrivacyUnbiased's degrees of freedom: n - (k - 1), k counting the intercept
    assert m.sigma_sq == pytest.approx(rss / (len(df) - 2), rel=1e-10)
    nodf = LinearRegression(["x1", "x2"], "y", df_corrected=False, random_state=0).fit(df)
    assert nodf.sigma_sq == pytest.approx(rss / len(df), rel=1e-10)
    classical = m.sigma_sq * np.linalg.inv(X.T @ X)
    # simulated: each variance within 5 standard errors of a 4000-draw estimate
    np.testing.assert_allclose(np.diag(m.beta_vcov), np.diag(classical), rtol=5 * (2 / 4000) ** 0.5)


def test_linear_without_intercept_equals_ols():
    rng = np.random.default_rng(2)
    df, _ = noisy_linear(rng, n=300, sd=(0, 0))
    b, *_ = np.linalg.lstsq(df[["x1", "x2"]], df["y"], rcond=None)
    m = LinearRegression(["x1", "x2"], "y", fit_intercept=False, random_state=0).fit(df)
    np.testing.assert_allclose(m.beta, b, rtol=1e-10)
    assert list(m.summary().index) == ["x1", "x2"]


def test_linear_naive_is_biased_corrected_covers_the_truth():
    """200 simulated releases: the corrected 95% intervals cover the truth 92-98% of the time,
    the naive estimate of the noisiest slope is attenuated."""
    rng = np.random.default_rng(2021)
    covered = np.zeros(3)
    naive, corrected = [], []
    reps = 200
    for _ in range(reps):
        df, s2 = noisy_linear(rng)
        m = LinearRegression(["x1", "x2"], "y", x_s2=s2, n_replications=200,
                             random_state=rng).fit(df)  # fmt: skip
        q = stats.norm.ppf(0.975)
        covered += np.abs(m.beta - TRUE) <= q * m.beta_standarderror
        naive.append(m.naive_beta)
        corrected.append(m.beta)
    naive, corrected = np.array(naive), np.array(corrected)
    coverage = covered / reps
    assert np.all((coverage >= 0.92) & (coverage <= 0.98)), coverage
    # x1's reliability is 1 / (1 + 0.64): the naive slope is about 0.91, far from 1.5
    assert naive[:, 1].mean() < 1.1
    assert abs(corrected[:, 1].mean() - TRUE[1]) < 0.02


def test_summary_table_and_interface():
    rng = np.random.default_rng(3)
    df, s2 = noisy_linear(rng)
    m = LinearRegression(["x1", "x2"], "y", x_s2=s2, random_state=7).fit(df)
    table = m.summary()
    assert list(table.columns) == ["coef", "std err", "z", "P>|z|", "[0.025", "0.975]"]
    assert list(table.index) == ["const", "x1", "x2"]
    np.testing.assert_allclose(table["coef"], m.beta)
    np.testing.assert_allclose(table["std err"], m.beta_standarderror)
    assert "<table" in table._repr_html_()
    again = LinearRegression(["x1", "x2"], "y", x_s2=s2, random_state=7).fit(df)
    np.testing.assert_array_equal(again.beta_vcov, m.beta_vcov)  # seeded


def test_dataframe_arrow_and_nulls_give_the_same_numbers():
    rng = np.random.default_rng(4)
    df, s2 = noisy_linear(rng, n=400)
    holes = df.copy()
    holes.loc[[3, 50], "x1"] = np.nan
    holes.loc[[7], "y"] = np.nan
    table = pa.Table.from_pandas(holes, preserve_index=False)  # NaN becomes NULL
    assert table.column("x1").null_count == 2
    dropped = holes.dropna()
    for model in (
        LinearRegression(["x1", "x2"], "y", x_s2=s2, random_state=1),
        LogisticRegression(["x1", "x2"], "y_bin", x_s2=s2),
    ):
        frames = [f.assign(y_bin=(f["y"] > 2.5).astype(float).where(f["y"].notna()))
                  for f in (dropped, holes)]  # fmt: skip
        a = model.fit(frames[0]).beta
        b = model.fit(frames[1]).beta
        c = model.fit(pa.Table.from_pandas(frames[1], preserve_index=False)).beta
        assert model.n == len(dropped)
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(c, a, rtol=1e-9, atol=1e-12)
    assert table.num_rows == 400


def test_logistic_noise_free_equals_statsmodels_hc0():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(5)
    n = 3000
    x = np.column_stack([rng.normal(0, 1, n), rng.normal(50, 4, n)])
    y = (rng.random(n) < 1 / (1 + np.exp(-(4 + x @ [1.0, -0.08])))).astype(int)
    df = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": y})
    m = LogisticRegression(["a", "b"], "y").fit(df)
    ref = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial()).fit(
        cov_type="HC0", tol=1e-14
    )
    assert m.converged
    np.testing.assert_allclose(m.beta, ref.params, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m.beta_vcov, ref.cov_params(), rtol=1e-8, atol=1e-14)
    assert list(m.summary().index) == ["const", "a", "b"]


def noisy_logistic(rng, n=4000, sd=0.8):
    x = rng.normal(0, 1, (n, 2))
    y = (rng.random(n) < 1 / (1 + np.exp(-(-0.5 + x @ [1.0, 0.5])))).astype(int)
    w = x + rng.normal(size=x.shape) * [sd, 0.0]
    return pd.DataFrame({"w1": w[:, 0], "x2": w[:, 1], "y": y}), [sd * sd, 0.0]


def test_logistic_corrects_the_attenuation():
    rng = np.random.default_rng(6)
    df, s2 = noisy_logistic(rng, n=60000)
    naive = LogisticRegression(["w1", "x2"], "y").fit(df)
    fixed = LogisticRegression(["w1", "x2"], "y", x_s2=s2).fit(df)
    assert naive.beta[1] < 0.75  # attenuated: truth 1.0
    assert abs(fixed.beta[1] - 1.0) < 3 * fixed.beta_standarderror[1]
    assert fixed.beta_standarderror[1] > naive.beta_standarderror[1]


def test_logistic_coverage():
    rng = np.random.default_rng(7)
    reps, covered = 200, np.zeros(3)
    truth = np.array([-0.5, 1.0, 0.5])
    for _ in range(reps):
        df, s2 = noisy_logistic(rng, n=3000, sd=0.6)
        m = LogisticRegression(["w1", "x2"], "y", x_s2=s2).fit(df)
        covered += np.abs(m.beta - truth) <= 1.96 * m.beta_standarderror
    coverage = covered / reps
    assert np.all((coverage >= 0.92) & (coverage <= 0.98)), coverage


@pytest.mark.parametrize("bias", [True, False])
def test_summary_statistics_noise_free_equal_scipy(bias):
    rng = np.random.default_rng(8)
    df = pd.DataFrame({"a": rng.gamma(2.0, 3.0, 500), "b": rng.normal(10, 2, 500)})
    s = SummaryStatistics(["a", "b"], bias=bias).fit(df).summary_statistics
    np.testing.assert_allclose(s["mean"], df.mean(), rtol=1e-12)
    np.testing.assert_allclose(s["sd"], df.std(ddof=0 if bias else 1), rtol=1e-12)
    np.testing.assert_allclose(s["skewness"], stats.skew(df, bias=bias), rtol=1e-9)
    np.testing.assert_allclose(
        s["kurtosis"], stats.kurtosis(df, fisher=False, bias=bias), rtol=1e-9
    )
    assert list(s.index) == ["a", "b"]


def test_summary_statistics_correct_the_noise():
    rng = np.random.default_rng(9)
    x = rng.gamma(2.0, 3.0, 400_000)  # skewness sqrt(2), Pearson kurtosis 6
    df = pd.DataFrame({"w": x + rng.normal(0, 4.0, x.size)})
    naive = SummaryStatistics("w").fit(df).summary_statistics.loc["w"]
    fixed = SummaryStatistics("w", x_s2=16.0).fit(df).summary_statistics.loc["w"]
    assert naive["skewness"] < 1.0 and naive["kurtosis"] < 4.5
    assert fixed["sd"] == pytest.approx(np.sqrt(18), rel=0.01)
    assert fixed["skewness"] == pytest.approx(np.sqrt(2), rel=0.05)
    assert fixed["kurtosis"] == pytest.approx(6.0, rel=0.08)


# ----- bad input and guard rails ------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"x_columns": []}, ValueError, "x_columns: give at least one"),
        ({"x_columns": ["a", "a"]}, ValueError, "x_columns: a column is listed twice"),
        ({"x_columns": [1]}, TypeError, "x_columns: column names are"),
        ({"y_column": None}, TypeError, "y_column: expected a column name"),
        ({"y_column": "a"}, ValueError, "y_column: 'a' is also in x_columns"),
        ({"x_s2": -1.0}, ValueError, "x_s2: noise variances are finite and >= 0"),
        ({"x_s2": [1.0]}, ValueError, "x_s2: 1 variances for 2 x_columns"),
        ({"x_s2": {"zz": 1.0}}, ValueError, r"x_s2: \['zz'\] are not among x_columns"),
        ({"x_s2": ["one", 2]}, TypeError, "x_s2: variances are numbers"),
        ({"x_s2": float("nan")}, ValueError, "x_s2: noise variances are finite"),
        ({"x_s2": {"a": None}}, ValueError, r"x_s2: the noise variance of \['a'\] is not known"),
        ({"x_s2": [1.0, None]}, ValueError, r"x_s2: the noise variance of \['b'\] is not known"),
        ({"n_replications": 0}, ValueError, "n_replications: expected an integer >= 2"),
    ],
)
def test_linear_bad_arguments(kwargs, error, match):
    args = {"x_columns": ["a", "b"], "y_column": "y"} | kwargs
    with pytest.raises(error, match=match):
        LinearRegression(**args)


def test_bad_data():
    df = pd.DataFrame(
        {"a": [1.0, 2, 3, 4], "b": [2.0, 1, 5, 3], "s": list("wxyz"), "y": [1.0, 0, 1, 0]}
    )
    with pytest.raises(ValueError, match=r"x_columns: unknown column\(s\) \['nope'\]"):
        LinearRegression(["a", "nope"], "y").fit(df)
    with pytest.raises(TypeError, match="x_columns: column 's' is not numeric"):
        LinearRegression(["a", "s"], "y").fit(df)
    with pytest.raises(TypeError, match="y_column: column 's' is not numeric"):
        LogisticRegression(["a"], "s").fit(pa.Table.from_pandas(df))
    with pytest.raises(ValueError, match="y_column: 'b' has values other than 0 and 1"):
        LogisticRegression(["a"], "b").fit(df)
    with pytest.raises(ValueError, match="y_column: 'y' is always 1"):
        LogisticRegression(["a"], "y").fit(df.assign(y=1.0))
    with pytest.raises(TypeError, match="data: expected a pandas DataFrame, a pyarrow Table"):
        LinearRegression(["a"], "y").fit([[1, 2]])
    with pytest.raises(ValueError, match="data: no rows left"):
        LinearRegression(["a"], "y").fit(df.assign(y=np.nan))
    with pytest.raises(ValueError, match="data: 2 rows are too few for 3 coefficients"):
        LinearRegression(["a", "b"], "y").fit(df.head(2))


def test_too_much_noise_warns_instead_of_crashing():
    rng = np.random.default_rng(10)
    df, _ = noisy_linear(rng, n=500)
    with pytest.warns(InferenceWarning, match="not positive definite"):
        m = LinearRegression(["x1", "x2"], "y", x_s2=[50.0, 0.0], random_state=0).fit(df)
    assert any("not positive definite" in w for w in m.warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        m = LinearRegression(["x1", "x2"], "y", x_s2=[1.4, 0.0], random_state=0).fit(df)
    assert m.sigma_sq < 0 and any("residual variance estimate is negative" in w for w in m.warnings)
    with pytest.warns(InferenceWarning, match="singular: no estimate"):
        m = LinearRegression(["x1", "x2"], "y").fit(df.assign(x2=df["x1"] * 2))
    assert np.isnan(m.beta).all() and np.isnan(m.beta_vcov).all()
    with pytest.warns(InferenceWarning, match="x1: the noise variance"):
        s = SummaryStatistics(["x1", "x2"], x_s2=[100.0, 0.0]).fit(df)
    assert np.isnan(s.summary_statistics.loc["x1", "sd"])
    assert not np.isnan(s.summary_statistics.loc["x2", "sd"])
