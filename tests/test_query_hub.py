"""fort-query as a hub-managed service of a REAL JupyterHub: started by the hub with its
``command``, reached through the proxy, authenticating users' hub tokens with the fort scopes."""

from __future__ import annotations

import shutil
import sys

import pytest
import requests

from fort_hub.client import FortClient, FortQueryError
from fort_hub.store import Store
from tests.conftest import EXAMPLE_POLICY
from tests.fortsvc import make_users, user_token
from tests.hubproc import RunningHub, free_port, wait_http
from tests.query_support import make_datasets

pytestmark = pytest.mark.hub


def test_fort_query_through_a_real_hub(tmp_path):
    make_datasets(tmp_path)
    policy = tmp_path / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, policy)
    store_url = f"sqlite:///{tmp_path / 'fort.sqlite'}"
    port = free_port()
    service = {
        "name": "fort-query",
        "url": f"http://127.0.0.1:{port}",
        "command": [
            sys.executable, "-m", "fort_hub.services.query",
            f"--QueryService.results_dir={tmp_path / 'results'}",
        ],
        "environment": {"FORT_POLICY_FILE": str(policy), "FORT_STORE_URL": store_url},
        "oauth_no_confirm": True,
    }  # fmt: skip
    config = f"""
import sys
from fort_hub import scopes
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.custom_scopes = scopes.CUSTOM_SCOPES
c.JupyterHub.load_roles = c.JupyterHub.load_roles + scopes.load_roles(services=("fort-query",))
c.JupyterHub.services = c.JupyterHub.services + [{service!r}]
"""
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
