"""fort-groups and the store's copy of the policy file (``source=policy`` rows, mirrored at each
pass): the file decides. A member the file has just dropped is no member for the admin API, even
before the next pass mirrors the change; an admin's grant made since is kept by that pass."""

from __future__ import annotations

import time

import requests

from fort_hub.store.memberships import Memberships
from tests import test_groups_service as groups
from tests.fortsvc import auth, rewrite_policy

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
