"""fort-query as a hub-managed service of a REAL JupyterHub: started by the hub with its
``command``, reached through the proxy, authenticating users' hub tokens with the fort scopes."""

from __future__ import annotations

import pytest
import requests

from fort_hub.client import FortClient, FortQueryError
from fort_hub.store import Store
from tests.fortsvc import make_users, user_token
from tests.hubproc import RunningHub, wait_http
from tests.query_support import hub_config_with_fort_query, make_datasets

pytestmark = pytest.mark.hub


def test_fort_query_through_a_real_hub(tmp_path):
    make_datasets(tmp_path)
    store_url = f"sqlite:///{tmp_path / 'fort.sqlite'}"
    config = hub_config_with_fort_query(tmp_path, store_url)
    with RunningHub(tmp_path / "hub", config) as hub:
        try:
            base = f"{hub.url}/services/fort-query/"
            wait_http(base + "api/v1/openapi.json", timeout=90, ok=lambda r: r.status_code == 200)
            make_users(hub, "alice", "bob")
            alice = FortClient(url=base, token=user_token(hub, "alice"))
            table = alice.query(
                "SELECT country, count(*) AS n FROM url_shares GROUP BY 1 ORDER BY 1",
                dataset="url_shares",
                progress=False,
            )
            assert table.to_pydict() == {"country": ["BR", "DE", "IN", "US"], "n": [50] * 4}
            with pytest.raises(FortQueryError) as info:
                alice.query("SELECT * FROM ads_targeting", dataset="ads_targeting", progress=False)
            assert info.value.status == 403
            qid = alice.history()[-1]["id"]
            # bob's token does not see alice's query; a token without the query scope is refused
            bob = FortClient(url=base, token=user_token(hub, "bob"))
            with pytest.raises(FortQueryError) as info:
                bob.status(qid)
            assert info.value.status == 404
            weak = user_token(hub, "alice", ["read:users:name!user"])
            r = requests.get(base + "api/v1/queries", headers={"Authorization": f"token {weak}"},
                             timeout=30)  # fmt: skip
            assert r.status_code == 403
            store = Store(store_url)
            actions = {rec.action for rec in store.audit.query(user="alice")}
            store.dispose()
            assert {"query.submit", "query.complete", "query.download"} <= actions
        except BaseException:
            print(hub.log()[-8000:])
            raise
