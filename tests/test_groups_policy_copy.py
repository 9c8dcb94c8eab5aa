"""fort-groups and the store's copy of the policy file (``source=policy`` rows, mirrored at each
pass): the file decides. A member the file has just dropped is no member for the admin API, even
before the next pass mirrors the change; an admin's grant made since is kept by that pass."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import requests

from fort_hub.services.base import HubApiError
from fort_hub.services.groups.app import RECONCILE_ROLE
from fort_hub.store.leaders import Leaders
from fort_hub.store.memberships import Memberships
from tests import test_groups_service as groups
from tests.fortsvc import StuckPass, auth, rewrite_policy

pytestmark = groups.pytestmark
env = groups.env  # the same hub and fort-groups set-up, one for this module


def _has_bob(policy) -> bool:
    return "bob" in {m.username for m in policy.groups["ads-study"].members}


def _drop_bob(env) -> str:
    """Drop bob from ads-study in the policy file, let the pass that follows mirror it, then put
    back the copy it removed: the store as it is until a pass runs (the pass failed, the hub
    was down, or it has not come yet). Returns the file's text before."""
    app, policy = env["app"], env["policy"]
    members = Memberships(app.fort_store)
    text = policy.read_text()
    rewrite_policy(policy, app, text.replace("members: [bob, carol]", "members: [carol]"),
                   lambda p: not _has_bob(p))  # fmt: skip
    deadline = time.monotonic() + 30
    while members.get("ads-study", "bob") is not None:
        assert time.monotonic() < deadline, "fort-groups did not mirror the policy"
        time.sleep(0.1)
    # the pass that mirrored it goes on to the hub group: wait for it (and any pass queued with
    # it) to end, so that none records anything after this returns
    groups.reconcile(env)
    members.upsert("ads-study", "bob", source="policy", updated_by="fort-groups")
    return text


def _still_stale(env) -> None:
    """The copy is there as the request starts (no later pass removed it): else the test would
    not test what it says."""
    row = Memberships(env["app"].fort_store).get("ads-study", "bob")
    assert row is not None and row.source == "policy", row


def test_an_admin_adds_a_member_the_policy_file_just_dropped(env):
    app, policy = env["app"], env["policy"]
    members = Memberships(app.fort_store)
    tok = groups.admin_token(env)  # runs a pass: bob's static membership is mirrored
    assert members.get("ads-study", "bob").source == "policy"
    text = _drop_bob(env)
    try:
        url = groups.api(env, "groups/ads-study/members/bob")
        _still_stale(env)
        r = requests.put(url, headers=auth(tok), timeout=30)  # no expiry: a new membership
        assert r.status_code == 200, r.text
        assert (r.json()["change"], r.json()["source"]) == ("added", "api")
        [rec] = app.fort_store.audit.query(
            user="admin", action="groups.add", resource="groups/ads-study/members/bob", limit=1
        )
        assert rec.details["change"] == "added" and rec.details["previous_expires"] is None
        groups.reconcile(env)  # the pass mirrors the drop: the admin's grant stays
        assert members.get("ads-study", "bob").source == "api"
        assert "bob" in groups.members(env, "ads-study")
    finally:
        members.remove("ads-study", "bob")
        rewrite_policy(policy, app, text, _has_bob)
        groups.reconcile(env)
    assert members.get("ads-study", "bob").source == "policy"
    r = requests.delete(groups.api(env, "groups/ads-study/members/bob"), headers=auth(tok),
                        timeout=30)  # fmt: skip
    assert r.status_code == 409, r.text  # static again: the file decides


def test_removing_a_member_the_file_dropped_says_not_a_member(env):
    """The stale copy is not an admin's membership to remove (nothing recorded, nothing done)."""
    app, policy = env["app"], env["policy"]
    tok = groups.admin_token(env)
    text = _drop_bob(env)
    try:
        before = app.fort_store.audit.query(action="groups.remove", limit=1)
        _still_stale(env)
        r = requests.delete(groups.api(env, "groups/ads-study/members/bob"), headers=auth(tok),
                            timeout=30)  # fmt: skip
        assert r.status_code == 404 and "'bob' is not a member of 'ads-study'" in r.text
        assert app.fort_store.audit.query(action="groups.remove", limit=1) == before
        _still_stale(env)  # not deleted either
    finally:
        rewrite_policy(policy, app, text, _has_bob)
        groups.reconcile(env)


def _grant_dave_for_a_day(env) -> str:
    """dave in ads-study through the admin API until tomorrow; returns the admin's token."""
    tok = groups.admin_token(env)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    r = requests.put(groups.api(env, "groups/ads-study/members/dave"), headers=auth(tok),
                     json={"expires": until.isoformat()}, timeout=30)  # fmt: skip
    assert r.status_code == 200 and "dave" in groups.members(env, "ads-study"), r.text
    return tok


def _pass_two_days_later(env) -> list:
    """A pass that sees dave's grant as expired."""
    app = env["app"]
    app.clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    try:
        return groups.reconcile(env)
    finally:
        app.clock = lambda: dt.datetime.now(dt.UTC)


def _dave_kept(env, changes, until) -> None:
    members = Memberships(env["app"].fort_store)
    try:
        assert ("ads-study", "dave") not in [(c.group, c.user) for c in changes]
        assert "dave" in groups.members(env, "ads-study")
        assert members.get("ads-study", "dave").expires == until
    finally:
        members.remove("ads-study", "dave")
        groups.reconcile(env)
    assert "dave" not in groups.members(env, "ads-study")


def test_a_pass_keeps_a_grant_extended_after_it_read_the_rows(env, monkeypatch):
    """Another writer (e.g. another replica's admin API) extends dave's grant just after a pass
    read it as expired: the pass leaves dave in the hub group, and the grant in the store."""
    _grant_dave_for_a_day(env)
    store = env["app"].fort_store
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    listed = Memberships.list

    def list_then_extend(self, *args, **kwargs):
        rows = listed(self, *args, **kwargs)
        if not args and not kwargs:  # the pass reads all rows
            monkeypatch.setattr(Memberships, "list", listed)
            Memberships(store).upsert("ads-study", "dave", until, "api", "admin")
        return rows

    monkeypatch.setattr(Memberships, "list", list_then_extend)
    changes = _pass_two_days_later(env)
    monkeypatch.undo()
    _dave_kept(env, changes, until)


def test_an_admin_extension_during_a_pass_waits_for_it(env, monkeypatch):
    """The admin API extends dave's grant while a pass that read it as expired runs: the
    extension waits for the pass, so the pass cannot undo its hub change."""
    tok = _grant_dave_for_a_day(env)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    answers = []

    def extend():
        answers.append(requests.put(groups.api(env, "groups/ads-study/members/dave"),
                                    headers=auth(tok), json={"expires": until.isoformat()},
                                    timeout=30))  # fmt: skip

    hub_users = env["app"].reconciler.hub_users
    listed = hub_users.current
    admin = threading.Thread(target=extend)

    async def current():  # the pass has read the rows: the admin's request comes in now
        admin.start()
        await asyncio.sleep(1.0)
        return await listed()

    monkeypatch.setattr(hub_users, "current", current)
    try:
        changes = _pass_two_days_later(env)
    finally:
        monkeypatch.undo()
        admin.join(30)
    assert answers and answers[0].status_code == 200, answers
    _dave_kept(env, [c for c in changes if c.action != "groups.expire"], until)


def test_a_failed_pass_leaves_an_expired_grant_for_the_next_to_expire(env, monkeypatch):
    """The hub fails a pass that read dave's grant as expired: the grant stays in the store
    until a pass has taken dave out of the hub group, which the next one does as an expiry
    (``groups.expire``), not as a member added outside fort-groups."""
    app = env["app"]
    _grant_dave_for_a_day(env)
    hub_users = app.reconciler.hub_users
    listed = hub_users.current

    async def fail_once():
        monkeypatch.setattr(hub_users, "current", listed)
        raise HubApiError(599, "hub unreachable (test)")

    monkeypatch.setattr(hub_users, "current", fail_once)
    app.clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    try:
        assert groups.reconcile(env) == []  # failed: logged, nothing changed
        assert app.last_reconcile["error"] == "hub unreachable (test)"
        changes = groups.reconcile(env)
    finally:
        app.clock = lambda: dt.datetime.now(dt.UTC)
        monkeypatch.undo()
    dave = [(c.action, c.reason) for c in changes if (c.group, c.user) == ("ads-study", "dave")]
    assert dave == [("groups.expire", "membership expired")]
    assert "dave" not in groups.members(env, "ads-study")
    assert Memberships(app.fort_store).get("ads-study", "dave") is None


def test_an_admin_change_behind_a_stuck_pass_is_refused_and_writes_nothing(env, monkeypatch):
    """An admin's change waited for a running pass with no limit: behind a pass stuck on the
    hub it hung until the hub's request timed out. Now it waits `admin_wait_seconds`, then gets
    a 503 with Retry-After, and nothing is written; after the pass the same change goes through."""
    app = env["app"]
    tok = groups.admin_token(env)
    stuck = StuckPass(app, monkeypatch)
    monkeypatch.setattr(app, "admin_wait_seconds", 0.5, raising=False)
    url = groups.api(env, "groups/ads-study/members/dave")
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    running = stuck.start()
    try:
        r = requests.put(url, headers=auth(tok), json={"expires": until}, timeout=10)
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "1"
        assert "still changing the hub groups after 0.5 s" in groups.error_of(r)
        assert Memberships(app.fort_store).get("ads-study", "dave") is None
    finally:
        stuck.release()
        running.result(30)
        monkeypatch.undo()
    r = requests.put(url, headers=auth(tok), json={"expires": until}, timeout=30)
    try:
        assert r.status_code == 200, r.text
        assert "dave" in groups.members(env, "ads-study")
    finally:
        Memberships(app.fort_store).remove("ads-study", "dave")
        groups.reconcile(env)


def _schedule(env, *reasons) -> list:
    """Ask fort-groups for a pass for each of *reasons*, as its timers do; their tasks."""
    app = env["app"]

    async def schedule():
        return [app.schedule_reconcile(r) for r in reasons]

    return env["svc"].call(schedule)


def _wait(env, task) -> list:
    async def wait():
        return await task

    return env["svc"].call(wait)


def test_passes_scheduled_behind_a_slow_pass_do_not_pile_up(env, monkeypatch):
    """Each periodic tick (and policy reload, expiry) queued a pass of its own behind a slow
    one, without bound. Now requests made while one pass waits join it: one more pass runs,
    for all their reasons; with an expiry among them it runs in this replica although another
    replica leads the reconciliation."""
    app = env["app"]
    leaders, other = Leaders(app.fort_store), "fort-groups-1:10101"
    stuck = StuckPass(app, monkeypatch)
    running = stuck.start()
    leaders.release(RECONCILE_ROLE, app.replica_name)
    assert leaders.claim(RECONCILE_ROLE, other, dt.datetime.now(dt.UTC), 600)
    try:
        tasks = _schedule(env, "periodic", "policy reload")  # the queued pass waits on the lock
        tasks += _schedule(env, "periodic", "expiry", "periodic")
        assert len({id(t) for t in tasks}) == 1, "each request queued a pass of its own"
        stuck.release()
        running.result(30)
        _wait(env, tasks[0])
        assert stuck.passes == 2
        assert app.last_reconcile["reason"] == "periodic, policy reload, expiry"
        assert "error" not in app.last_reconcile and "skipped" not in app.last_reconcile
        assert _wait(env, _schedule(env, "periodic")[0]) == []  # alone: the other one leads
        assert app.last_reconcile["skipped"].startswith("another replica")
        # once free, the lease is claimed by a joined pass with an expiry among its requests
        leaders.release(RECONCILE_ROLE, other)
        _wait(env, _schedule(env, "periodic", "expiry")[0])
        assert leaders.holder(RECONCILE_ROLE, dt.datetime.now(dt.UTC)) == app.replica_name
    finally:
        leaders.release(RECONCILE_ROLE, other)
        monkeypatch.undo()


def test_a_pass_asked_for_while_the_queued_one_runs_gets_its_own(env, monkeypatch):
    """The queued pass stops taking requests when it starts: what changed after it read the
    store needs a pass of its own, not a join to one already past its reads."""
    app = env["app"]
    stuck = StuckPass(app, monkeypatch)
    running = stuck.start()
    try:
        (first,) = _schedule(env, "periodic")
        stuck.release(through=1)  # the stuck pass ends; the queued one starts, and sticks
        stuck.wait_stuck(2)
        (second,) = _schedule(env, "policy reload")
        assert second is not first
        stuck.release()
        running.result(30)
        _wait(env, first)
        _wait(env, second)
    finally:
        stuck.release()
        monkeypatch.undo()
    assert stuck.passes == 3
    assert app.last_reconcile["reason"] == "policy reload"


def test_a_cancelled_queued_pass_does_not_take_later_requests(env, monkeypatch):
    """A queued pass cancelled before it ran (a caller's wait on its shared task timed out)
    took every later request with it: no scheduled pass ran in this replica again."""
    app = env["app"]
    stuck = StuckPass(app, monkeypatch)
    running = stuck.start()
    try:
        (queued,) = _schedule(env, "periodic")

        async def cancel():
            queued.cancel()
            await asyncio.sleep(0)

        env["svc"].call(cancel)
        (later,) = _schedule(env, "policy reload")
        assert later is not queued
        stuck.release()
        running.result(30)
        _wait(env, later)
    finally:
        stuck.release()
        monkeypatch.undo()
    assert stuck.passes == 2 and app.last_reconcile["reason"] == "policy reload"
