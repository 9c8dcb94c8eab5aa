"""The fort store work a login and a spawn cost the hub (#13): each is ONE store transaction
that holds both the decision's reads and its audit record, committed before the action, on
SQLite and PostgreSQL."""

# ruff: noqa: F811 - the fixtures imported from test_facebook_auth and test_spawner_kubernetes

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from fort_hub.config import shared_store
from fort_hub.spawners.base import SpawnDenied
from fort_hub.store import Store, StoreError
from fort_hub.store.audit import AuditLog
from tests.test_facebook_auth import _model, auth, standin  # noqa: F401
from tests.test_spawner_kubernetes import k8s, kubeconfig, make, policy_path  # noqa: F401


class StoreCalls(dict):
    """Counts of store transactions, reading connections and group-committed audit records
    opened on the watched stores only (another store in the process, e.g. a service thread
    of an earlier test, does not count)."""

    def __init__(self):
        super().__init__(transaction=0, reading=0, group_commit=0)
        self.watched: list[Store] = []

    def watch(self, store: Store) -> Store:
        self.watched.append(store)
        return store

    def counts(self, store: Store) -> bool:
        return any(store is w for w in self.watched)


@pytest.fixture
def store_calls(monkeypatch):
    """How many store transactions, reading connections and group-committed audit records
    the code under test opens on the stores it watches (the hub runs each in its thread
    pool)."""
    calls = StoreCalls()
    for cls, name in ((Store, "transaction"), (Store, "reading"), (AuditLog, "_group_commit")):
        real = getattr(cls, name)

        def counted(self, *a, _real=real, _name=name, **k):
            if calls.counts(self if isinstance(self, Store) else self.store):
                calls[_name.lstrip("_")] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(cls, name, counted)
    return calls


async def test_a_first_login_binds_and_records_in_one_transaction(auth, standin, store_calls):
    model = await _model(auth, standin, "carol")
    store_calls.watch(auth.fort_store)
    store_calls.update(transaction=0, reading=0, group_commit=0)
    await auth.run_post_auth_hook(None, model)
    assert store_calls == {"transaction": 1, "reading": 0, "group_commit": 0}
    (rec,) = auth.fort_store.audit.query(action="auth.login")
    assert (rec.actor, rec.resource) == ("carol", "facebook:10000000000000003")
    assert auth.identities.by_username("carol").subject == "10000000000000003"
    # a re-login: the binding is there already, the record is the transaction's only write
    store_calls.update(transaction=0, reading=0)
    await auth.run_post_auth_hook(None, model)
    assert store_calls == {"transaction": 1, "reading": 0, "group_commit": 0}
    assert len(auth.fort_store.audit.query(action="auth.login")) == 2


async def test_a_conflicting_login_records_nothing_and_binds_nothing(auth, standin):
    model = await _model(auth, standin, "carol")
    auth.identities.bind("someone-else", "carol")  # a concurrent login bound carol meanwhile
    with pytest.raises(Exception, match="Login refused"):
        await auth.run_post_auth_hook(None, model)
    assert auth.fort_store.audit.query(action="auth.login") == []
    assert auth.identities.by_subject("10000000000000003") is None


async def test_the_spawn_decision_reads_and_records_in_one_transaction(
    k8s,
    make,
    store_url,
    store_calls,
    monkeypatch,
):
    store = shared_store(store_url)
    s = make("alice", {"profile": "python"})
    store_calls.watch(s.fort_store)
    created = []  # the pod's creation sees the record committed already
    real_post = type(s)._make_create_pod_request

    async def post(self, *a, **k):
        created.append([r.decision for r in store.audit.query(action="spawn.start")])
        return await real_post(self, *a, **k)

    monkeypatch.setattr(type(s), "_make_create_pod_request", post)
    plan = await s.fort_prepare()
    assert store_calls == {"transaction": 1, "reading": 0, "group_commit": 0}
    assert plan.groups == ["urls-study"] and plan.selection.slug == "python"
    (rec,) = store.audit.query(action="spawn.start")
    assert (rec.decision, rec.details["outcome"], rec.details["groups"]) == (
        "allow", "starting", ["urls-study"])  # fmt: skip
    await asyncio.wait_for(s.start(), 30)
    assert created == [["allow", "allow"]] and len(k8s.list("pods")) == 1
    await s.stop(now=True)


async def test_a_refused_spawn_is_recorded_in_its_decisions_transaction(
    k8s,
    make,
    store_url,
    store_calls,
    monkeypatch,
):
    s = make("bob", {"profile": "urls-large"})
    store_calls.watch(s.fort_store)
    with pytest.raises(SpawnDenied) as e:
        await s.fort_prepare()
    assert e.value.status_code == 403
    assert store_calls == {"transaction": 1, "reading": 0, "group_commit": 0}
    (rec,) = shared_store(store_url).audit.query(action="spawn.start")
    assert rec.decision == "deny" and rec.details["outcome"] == "refused"

    def broken(self, *a, **k):
        raise StoreError("disk full")

    # the audit log down while refusing: still a refusal (403), not "unavailable" (503)
    monkeypatch.setattr(AuditLog, "_append_in", broken)
    with pytest.raises(SpawnDenied) as e:
        await s.fort_prepare()
    assert e.value.status_code == 403 and k8s.list("pods") == []


async def test_stop_changes_the_hub_row_only_after_its_last_await(k8s, make, monkeypatch):
    """The stopped state goes on the hub's spawner row with no await after it, so JupyterHub's
    commit right after stop() writes it; set before the audit record's await, it left the hub's
    shared session dirty while other requests finished, and each of them rolled the whole
    session back (every object the hub holds expired and reloaded)."""
    s = make("alice", {"profile": "python"})
    await asyncio.wait_for(s.start(), 30)
    s.orm_spawner = SimpleNamespace(name="", server=None, state=s.get_state())
    real_audit = s.fort_audit
    seen = []

    async def audit(*a, **k):
        seen.append("fort_plan" in s.orm_spawner.state)  # the row untouched while we wait
        await real_audit(*a, **k)

    monkeypatch.setattr(s, "fort_audit", audit)
    await s.stop(now=True)
    assert seen == [True] and "fort_plan" not in s.orm_spawner.state
