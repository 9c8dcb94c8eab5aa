"""The test harness itself: a real hub starts and answers; the PostgreSQL schema fixture works."""

import requests

from fort_hub.store import Store
from tests.hubproc import RunningHub


def test_real_hub_starts_with_python_chp(tmp_path):
    with RunningHub(tmp_path, "c.JupyterHub.authenticator_class = 'dummy'") as hub:
        r = requests.get(hub.api("users"), headers=hub.admin_headers, timeout=10)
        assert r.status_code == 200
        assert r.json() == []
        # through the proxy, the login page is served
        assert requests.get(hub.url + "/hub/login", timeout=10).status_code == 200


def test_store_schema_is_idempotent(store_url):
    Store(store_url).dispose()
    s = Store(store_url)  # second creation must not fail
    s.audit.record("svc", "test.action", "r", "allow", "because")
    assert s.audit.verify().ok
