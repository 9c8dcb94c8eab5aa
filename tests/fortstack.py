"""All three fort services in-process behind one real hub (dummy login), with the example
policy, sample datasets and users in every situation the security tests need: alice (urls-study),
bob (ads-study), admin (admins), dave (no group), erin (urls-study ended yesterday, in the
store) and exadmin (admins ended yesterday, in the store)."""

from __future__ import annotations

import datetime as dt
import shutil

import requests

from fort_hub import scopes
from fort_hub.services.credentials import CredentialsService, StubStsBackend
from fort_hub.services.groups import GroupsService
from fort_hub.services.query import QueryService
from fort_hub.store import Store
from fort_hub.store.memberships import Memberships
from tests.conftest import EXAMPLE_POLICY
from tests.fortsvc import ServiceSlot, ServiceThread, auth, hub_config, make_users, user_token
from tests.hubproc import RunningHub
from tests.query_support import make_datasets

UTC = dt.UTC
USERS = ("alice", "bob", "admin", "dave", "erin", "exadmin")


def services_behind_hub(work, extra_hub_config: str = ""):
    """Generator for a module-scoped fixture: yields {"hub", "apps", "threads", "tokens"}.
    *extra_hub_config* is appended to the hub's configuration."""
    policy = work / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, policy)
    make_datasets(work)
    store_url = f"sqlite:///{work / 'fort.sqlite'}"
    slots = {  # the OAuth (cookie) sessions may carry the service's own scopes
        scopes.GROUPS_SERVICE: ServiceSlot(scopes.GROUPS_SERVICE, [scopes.GROUPS_READ]),
        scopes.CREDENTIALS_SERVICE: ServiceSlot(
            scopes.CREDENTIALS_SERVICE, [scopes.CREDENTIALS_AWS]
        ),
        scopes.QUERY_SERVICE: ServiceSlot(scopes.QUERY_SERVICE, [scopes.QUERY_USE]),
    }
    hub = RunningHub(work / "hub")
    hub.extra_config = hub_config(list(slots.values()), hub.url, extra_hub_config)
    classes = {scopes.GROUPS_SERVICE: GroupsService, scopes.CREDENTIALS_SERVICE: CredentialsService,
               scopes.QUERY_SERVICE: QueryService}  # fmt: skip
    apps, threads = {}, []
    for name, slot in slots.items():
        cfg = slot.config(hub, policy, store_url)
        cfg.CredentialsService.sts_backend_class = StubStsBackend
        cfg.QueryService.results_dir = str(work / "results")
        cfg.GroupsService.reconcile_interval = 3600
        apps[name] = classes[name](config=cfg)
        apps[name].initialize([])
    try:
        threads = [ServiceThread(app).start() for app in apps.values()]
        hub.start()
        make_users(hub, *USERS)
        members = Memberships(apps[scopes.GROUPS_SERVICE].fort_store)
        ended = dt.datetime.now(UTC) - dt.timedelta(days=1)
        members.upsert("urls-study", "erin", expires=ended, source="api")
        members.upsert("admins", "exadmin", expires=ended, source="api")
        threads[0].call(apps[scopes.GROUPS_SERVICE].reconcile, "test")
        tokens = {u: user_token(hub, u) for u in USERS}
        yield {"hub": hub, "apps": apps, "threads": threads, "tokens": tokens, "work": work}
    finally:
        for t in threads:
            t.stop()
        hub.stop()


def url(env, probe_or_service, path: str) -> str:
    name = getattr(probe_or_service, "service", probe_or_service)
    return f"{env['hub'].url}/services/{name}/{path}"


def call(env, probe, method, path, body=None, user="alice", token=None, **kw):
    headers = auth(token or env["tokens"][user])
    headers.update(kw.pop("headers", {}))
    return requests.request(method, url(env, probe, path), json=body, headers=headers,
                            timeout=30, **kw)  # fmt: skip


def error_of(r) -> str:
    assert "Traceback" not in r.text
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["status"] == r.status_code
    assert body["error"]["request_id"] == r.headers["X-Request-Id"]
    return body["error"]["message"]


def store_of(env) -> Store:
    return env["apps"][scopes.GROUPS_SERVICE].fort_store  # one Store per URL per process
