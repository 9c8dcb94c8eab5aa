"""LinearRegression against PrivacyUnbiased, Evans and King's own R implementation (``lmdp``).

PrivacyUnbiased is not part of fort-hub and cannot be installed in CI (it is on GitHub only), so
its numbers were produced once and are recorded here:

    python -c "from tests.test_inference_reference import write_csv; write_csv('ref.csv')"
    PRIVACYUNBIASED_DIR=/path/to/PrivacyUnbiased \\
        Rscript tests/reference/privacyunbiased_lmdp.R ref.csv 1 20000

with PrivacyUnbiased at commit 5f4c8c37d152e6b5ffa76fbc1003c8c52687d7de, R 4.2.2 (Debian
bookworm) with r-cran-mvtnorm 1.1-3, r-cran-matrix 1.5-3, r-cran-gdata 2.18, r-cran-matrixcalc
1.0.6. ``test_rerun_privacyunbiased`` repeats the run whenever Rscript and a checkout named by
``PRIVACYUNBIASED_DIR`` are there (it is skipped otherwise, saying so).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fort_hub.inference import LinearRegression

SCRIPT = Path(__file__).parent / "reference" / "privacyunbiased_lmdp.R"
SD = {"x1": 0.6, "x2": 1.1, "x3": 0.0}  # noise standard deviations (x3 is noise-free)

# lmdp(y ~ x1 + x2 + x3, nsims_var = 20000) after set.seed(1), on reference_data()
BETA = [0.49054679370140575, 1.493311531885221, -0.7964300021287436, 0.2920957249051883]
SIGMA_SQ = 1.4525970406977797
VCOV = [
    [0.00139158117510794, -0.0004243283358144222, -0.00012817349626953508, 7.976181330308896e-07],
    [-0.0004243283358144222, 0.00021756606564815058, -3.7721350500524336e-06, -1.7736169258807453e-07],
    [-0.00012817349626953508, -3.7721350500524336e-06, 4.4658199721677346e-05, 1.6186534003754634e-07],
    [7.976181330308896e-07, -1.7736169258807453e-07, 1.6186534003754634e-07, 3.755879464201893e-05],
]  # fmt: skip
R_DRAWS = 20_000


def reference_data() -> pd.DataFrame:
    """20,000 rows (lmdp simulates the variance only above 9,999 rows), three covariates."""
    rng = np.random.default_rng(20210607)
    n = 20_000
    x = np.column_stack([rng.normal(2, 1, n), rng.gamma(2.0, 1.5, n), rng.normal(0, 2, n)])
    y = 0.5 + 1.5 * x[:, 0] - 0.8 * x[:, 1] + 0.3 * x[:, 2] + rng.normal(0, 1.2, n)
    w = x + rng.normal(size=(n, 3)) * np.array(list(SD.values()))
    return pd.DataFrame({"y": y, "x1": w[:, 0], "x2": w[:, 1], "x3": w[:, 2]})


def write_csv(path) -> None:
    """PrivacyUnbiased's input: a first row with each column's noise standard deviation."""
    top = pd.DataFrame([{"y": 0.0} | SD])
    pd.concat([top, reference_data()]).to_csv(path, index=False, float_format="%.17g")


def fit(reps: int) -> LinearRegression:
    data = reference_data()
    # the generator still gives the data the numbers above were computed on
    assert data.sum().to_numpy() == pytest.approx(
        [21553.900702252307, 40166.49566171177, 60610.58718176209, 116.27605771573252], rel=1e-12
    )
    s2 = {c: sd**2 for c, sd in SD.items()}
    return LinearRegression(list(SD), "y", x_s2=s2, n_replications=reps, random_state=1).fit(data)


def assert_vcov_close(ours, theirs, draws_ours, draws_theirs):
    """Within simulation error: each variance within 5 standard errors of the difference of two
    simulated variances (relative sd sqrt(2/R) each), each covariance within 5 sd of the
    difference of two simulated correlations (sd 1/sqrt(R) each)."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    d = np.sqrt(np.diag(theirs))
    rel = 5 * np.sqrt(2 / draws_ours + 2 / draws_theirs)
    np.testing.assert_allclose(np.diag(ours), np.diag(theirs), rtol=rel)
    corr_diff = (ours - theirs) / np.outer(d, d)
    assert np.abs(corr_diff).max() < 5 * np.sqrt(1 / draws_ours + 1 / draws_theirs)


def test_matches_recorded_privacyunbiased():
    m = fit(reps=20_000)
    np.testing.assert_allclose(m.beta, BETA, rtol=1e-8, atol=1e-10)
    assert m.sigma_sq == pytest.approx(SIGMA_SQ, rel=1e-8)
    assert_vcov_close(m.beta_vcov, VCOV, 20_000, R_DRAWS)
    assert list(m.summary().index) == ["const", "x1", "x2", "x3"]


def test_rerun_privacyunbiased(tmp_path):
    rscript, source = shutil.which("Rscript"), os.environ.get("PRIVACYUNBIASED_DIR")
    if not rscript or not source:
        pytest.skip(
            "re-running PrivacyUnbiased needs Rscript and PRIVACYUNBIASED_DIR (a checkout of "
            "github.com/georgieevans/PrivacyUnbiased); the recorded numbers are checked above"
        )
    write_csv(tmp_path / "ref.csv")
    run = subprocess.run(
        [rscript, str(SCRIPT), str(tmp_path / "ref.csv"), "1", "500"],
        env=os.environ | {"PRIVACYUNBIASED_DIR": source}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    r = json.loads(run.stdout.strip().splitlines()[-1])
    assert r["boot"] is False  # the simulation method, not lmdp's bootstrap
    m = fit(reps=2000)
    np.testing.assert_allclose(m.beta, r["beta"], rtol=1e-8, atol=1e-10)
    assert m.sigma_sq == pytest.approx(r["sigma_sq"], rel=1e-8)
    assert_vcov_close(m.beta_vcov, np.reshape(r["beta_vcov"], (4, 4)), 2000, 500)
