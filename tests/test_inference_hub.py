"""fort_hub.inference inside the warehouse through a real fort-query behind a real hub: the same
numbers as in memory, with the noise the release declares, and every pass audited."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from fort_hub.client import FortClient
from fort_hub.inference import LinearRegression, LogisticRegression, SQLSource
from fort_hub.store import Store
from tests.fortsvc import make_users, user_token
from tests.hubproc import RunningHub, wait_http
from tests.query_support import hub_config_with_fort_query
from tests.test_inference_sql import NOISE, X, url_shares

pytestmark = pytest.mark.hub


def test_fits_through_fort_query_behind_a_real_hub(tmp_path):
    (tmp_path / "data").mkdir()
    table = url_shares(3000)
    pq.write_table(table, tmp_path / "data" / "url_shares.parquet")
    store_url = f"sqlite:///{tmp_path / 'fort.sqlite'}"
    config = hub_config_with_fort_query(tmp_path, store_url)
    df = table.to_pandas()
    s2 = [NOISE[c] for c in X]
    lin_mem = LinearRegression(X, "views", x_s2=s2, random_state=5).fit(df)
    logit_mem = LogisticRegression(X, "viral", x_s2=s2).fit(df)
    with RunningHub(tmp_path / "hub", config) as hub:
        try:
            base = f"{hub.url}/services/fort-query/"
            wait_http(base + "api/v1/openapi.json", timeout=90, ok=lambda r: r.status_code == 200)
            make_users(hub, "alice")
            client = FortClient(url=base, token=user_token(hub, "alice"))
            source = SQLSource(client, "url_shares")
            lin = LinearRegression(X, "views", random_state=5).fit(source)
            logit = LogisticRegression(X, "viral").fit(source)
        except BaseException:
            print(hub.log()[-8000:])
            raise
    np.testing.assert_allclose(lin.beta, lin_mem.beta, rtol=1e-9)
    assert lin.sigma_sq == pytest.approx(lin_mem.sigma_sq, rel=1e-9)
    np.testing.assert_allclose(logit.beta, logit_mem.beta, rtol=1e-9)
    np.testing.assert_allclose(logit.beta_vcov, logit_mem.beta_vcov, rtol=1e-8)
    store = Store(store_url)
    try:
        submits = [r for r in store.audit.query(user="alice", limit=500)
                   if r.action == "query.submit"]  # fmt: skip
    finally:
        store.dispose()
    # linear: two passes; logistic: one pass, then one per Newton evaluation
    assert len(submits) == source.queries >= 2 + 1 + logit.n_iter + 1
    assert all(r.decision == "allow" and r.resource == "url_shares" for r in submits)
