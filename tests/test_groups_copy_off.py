"""fort-groups against a real hub with ``FortSettings.hub_groups = False``: memberships live in
the fort store only. A pass creates no study group and empties the study groups fort-groups
made before (recorded), keeps copying the admin group (the ``fort-admin`` role reaches the
admins through it), and still takes expired grants out of the store; the API changes the store
and says there is no hub copy."""

from __future__ import annotations

import datetime as dt

import pytest
import requests

from fort_hub import scopes
from fort_hub.services.groups import OWNER_KEY
from fort_hub.services.groups.reconcile import COPY_OFF_REASON
from fort_hub.store.memberships import Memberships
from tests.fortsvc import auth, groups_service_on_hub, user_token

pytestmark = pytest.mark.hub
UTC = dt.UTC


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with groups_service_on_hub(tmp_path_factory.mktemp("copyoff"), hub_groups=False) as e:
        # urls-study as fort-groups left it while the copy was on
        h = e.hub.admin_headers
        r = requests.post(e.hub.api("groups/urls-study"), json={"users": ["alice", "carol"]},
                          headers=h, timeout=30)  # fmt: skip
        assert r.status_code == 201, r.text
        r = requests.put(e.hub.api("groups/urls-study/properties"),
                         json={OWNER_KEY: {"managed": True}}, headers=h, timeout=30)  # fmt: skip
        assert r.status_code == 200, r.text
        # an empty group nobody marked: with a copy it would be adopted; without, left alone
        r = requests.post(e.hub.api("groups/ads-study"), headers=h, timeout=30)
        assert r.status_code == 201, r.text
        yield {"hub": e.hub, "app": e.app, "svc": e.svc}


def hub_groups(env) -> dict[str, list[str]]:
    r = requests.get(env["hub"].api("groups"), headers=env["hub"].admin_headers, timeout=30)
    assert r.status_code == 200, r.text
    return {g["name"]: sorted(g["users"]) for g in r.json()}


def reconcile(env):
    return env["svc"].call(env["app"].reconcile, "test")


def api(env, path):
    return f"{env['hub'].url}/services/fort-groups/api/v1/{path}"


def test_a_pass_empties_study_groups_creates_none_and_keeps_the_admin_group(env):
    changes = reconcile(env)
    groups = hub_groups(env)
    assert groups["urls-study"] == []  # emptied, recorded; not deleted
    assert groups["ads-study"] == []  # not fort's: left alone, not adopted
    r = requests.get(env["hub"].api("groups/ads-study"), headers=env["hub"].admin_headers)
    assert OWNER_KEY not in r.json().get("properties", {})
    assert groups["admins"] == ["admin"]  # the fort-admin role's group is still copied
    assert {(c.action, c.group, c.user, c.reason) for c in changes if c.group != "admins"} == {
        ("groups.remove", "urls-study", "alice", COPY_OFF_REASON),
        ("groups.remove", "urls-study", "carol", COPY_OFF_REASON),
    }
    rec = env["app"].fort_store.audit.query(resource="groups/urls-study/members/alice", limit=1)
    assert rec[0].action == "groups.remove" and rec[0].reason == COPY_OFF_REASON
    assert reconcile(env) == []  # converged
    # the memberships themselves are untouched: the store still has the policy's members
    rows = Memberships(env["app"].fort_store).list(group="urls-study")
    assert {m.username for m in rows} == {"alice", "carol"}


def admin_token(env) -> str:
    reconcile(env)
    return user_token(env["hub"], "admin", [scopes.access(scopes.GROUPS_SERVICE),
                                            scopes.GROUPS_ADMIN, scopes.GROUPS_READ])  # fmt: skip


def test_api_changes_the_store_and_says_there_is_no_hub_copy(env):
    tok, store = admin_token(env), env["app"].fort_store
    r = requests.put(api(env, "groups/ads-study/members/dave"), json={"expires": "2031-01-01"},
                     headers=auth(tok), timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["in_hub_group"] is None and r.json()["change"] == "added"
    assert Memberships(store).get("ads-study", "dave") is not None
    assert hub_groups(env)["ads-study"] == []
    assert store.audit.query(action="groups.add", resource="groups/ads-study/members/dave")
    r = requests.delete(api(env, "groups/ads-study/members/dave"), headers=auth(tok), timeout=30)
    assert r.status_code == 204, r.text
    assert Memberships(store).get("ads-study", "dave") is None
    assert hub_groups(env)["ads-study"] == []


def test_the_admin_group_is_still_changed_in_the_same_request(env):
    tok = admin_token(env)
    r = requests.put(api(env, "groups/admins/members/bob"), json={"expires": "2031-01-01"},
                     headers=auth(tok), timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["in_hub_group"] is True and "bob" in hub_groups(env)["admins"]
    r = requests.delete(api(env, "groups/admins/members/bob"), headers=auth(tok), timeout=30)
    assert r.status_code == 204 and "bob" not in hub_groups(env)["admins"]


def test_a_pass_still_takes_expired_grants_out_of_the_store(env):
    app, tok = env["app"], admin_token(env)
    exp = (dt.datetime.now(UTC) + dt.timedelta(days=1)).isoformat()
    r = requests.put(api(env, "groups/ads-study/members/dave"), json={"expires": exp},
                     headers=auth(tok), timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    app.clock = lambda: dt.datetime.now(UTC) + dt.timedelta(days=2)
    try:
        assert [c for c in reconcile(env) if c.group == "ads-study"] == []
    finally:
        app.clock = lambda: dt.datetime.now(UTC)
    assert Memberships(app.fort_store).get("ads-study", "dave") is None
