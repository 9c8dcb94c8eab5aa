"""The services' store-touching paths on SQLite and PostgreSQL (no hub needed: the decisions and
store writes are called directly; the hub group update fails softly and is left to
reconciliation)."""

from __future__ import annotations

import datetime as dt

import pytest
from tornado import web
from traitlets.config import Config

from fort_hub.services.credentials import CredentialsService, StubStsBackend
from fort_hub.services.groups import GroupsService
from fort_hub.services.groups.reconcile import desired_members, policy_rows
from fort_hub.store import Store
from fort_hub.store.memberships import Memberships
from tests.hubproc import free_port

UTC = dt.UTC


def make(cls, policy_path, store_url, **extra):
    c = Config()
    c.FortSettings.policy_file = str(policy_path)
    c.FortSettings.store_url = store_url
    c.FortServiceApp.bind_url = f"http://127.0.0.1:{free_port()}"
    c.HubOAuth.api_token = "unused"
    c.HubOAuth.api_url = f"http://127.0.0.1:{free_port()}/hub/api"  # nothing listens
    for k, v in extra.items():
        setattr(c[cls.__name__], k, v)
    app = cls(config=c)
    app.initialize([])
    return app


async def test_credentials_audit_first_and_cache(example_policy_path, store_url):
    app = make(CredentialsService, example_policy_path, store_url,
               sts_backend_class=StubStsBackend)  # fmt: skip
    creds = await app.credentials_for("alice", "fort-urls-study", request_id="r1")
    again = await app.credentials_for("alice", "fort-urls-study", request_id="r2")
    assert again == creds and app.backend.calls == 1
    rec = app.fort_store.audit.query(user="alice", action="credentials.issue")
    # every hand-over is audited, the cached one too (finding 8 of issue 10)
    assert [r.request_id for r in rec] == ["r2", "r1"]
    assert rec[0].details["cached"] is True and "session_policy" in rec[1].details
    with pytest.raises(web.HTTPError) as e:
        await app.credentials_for("alice", "fort-ads-study", request_id="r3")
    assert e.value.status_code == 403
    assert (
        app.fort_store.audit.query(user="alice", action="credentials.issue")[0].decision == "deny"
    )
    assert app.fort_store.audit.verify().ok


async def test_credentials_api_membership_counts(example_policy_path, store_url):
    """A membership added through fort-groups (the store) gives the role at once."""
    app = make(CredentialsService, example_policy_path, store_url,
               sts_backend_class=StubStsBackend)  # fmt: skip
    with pytest.raises(web.HTTPError):
        await app.credentials_for("dave", "fort-ads-study")
    Memberships(app.fort_store).upsert("ads-study", "dave",
                                       dt.datetime.now(UTC) + dt.timedelta(hours=1))  # fmt: skip
    creds = await app.credentials_for("dave", "fort-ads-study")
    assert creds.access_key_id
    assert app.backend.requests[-1].tags == {"fort-user": "dave", "fort-group": "ads-study"}


async def test_groups_add_remove_and_describe(example_policy_path, store_url):
    app = make(GroupsService, example_policy_path, store_url)
    exp = dt.datetime.now(UTC) + dt.timedelta(days=3)
    m = await app.add_member("admin", "ads-study", "dave", exp, "rid", "127.0.0.1")
    assert m["source"] == "api" and m["in_hub_group"] is None  # the default: no hub copy
    copying = make(GroupsService, example_policy_path, store_url, hub_groups=True)
    m = await copying.add_member("root", "ads-study", "erin", exp, "rid1", "127.0.0.1")
    assert m["in_hub_group"] is False  # no hub to copy to: reconciliation will
    await copying.remove_member("root", "ads-study", "erin", "rid1b", "")
    me = await app.describe_user("dave")
    assert [(g["name"], g["source"]) for g in me["groups"]] == [("ads-study", "api")]
    assert me["roles"] == {"fort-ads-study": "arn:aws:iam::123456789012:role/fort-ads-study"}
    await app.remove_member("admin", "ads-study", "dave", "rid2", "")
    assert Memberships(app.fort_store).get("ads-study", "dave") is None
    with pytest.raises(web.HTTPError) as e:
        await app.remove_member("admin", "ads-study", "dave", "rid3", "")
    assert e.value.status_code == 404
    actions = [r.action for r in app.fort_store.audit.query(user="admin")]
    assert actions == ["groups.remove", "groups.add"]


async def test_groups_audit_down_changes_nothing(example_policy_path, store_url, monkeypatch):
    from fort_hub.store.audit import AuditError

    app = make(GroupsService, example_policy_path, store_url)
    broken = Store("sqlite:////nonexistent-dir/x.sqlite", create=False)
    real = app.fort_store
    monkeypatch.setattr(real, "audit", broken.audit)
    with pytest.raises(AuditError):
        await app.add_member("admin", "ads-study", "dave", None, "rid", "")
    assert Memberships(real).get("ads-study", "dave") is None


def test_reconcile_plans_are_data(example_policy):
    now = dt.datetime(2026, 1, 1, tzinfo=UTC)
    want = desired_members(example_policy, [], now)
    assert want["urls-study"] == {"alice": None,
                                  "carol": dt.datetime(2030, 7, 1, tzinfo=UTC)}  # fmt: skip
    later = desired_members(example_policy, [], dt.datetime(2031, 1, 1, tzinfo=UTC))
    assert set(later["urls-study"]) == {"alice"}
    upserts, removals = policy_rows(example_policy, [])
    assert ("admins", "admin", None) in upserts and removals == []


async def test_oversized_session_policy_is_refused_audited_and_never_sent(
    example_policy_path, store_url, monkeypatch
):
    from fort_hub.services.credentials import issuer as app_module
    from fort_hub.services.credentials.sessionpolicy import SessionPolicyTooLarge

    app = make(CredentialsService, example_policy_path, store_url,
               sts_backend_class=StubStsBackend)  # fmt: skip

    def too_large(doc):
        raise SessionPolicyTooLarge("the session policy has 2,300 characters (limit of 2048)")

    monkeypatch.setattr(app_module, "packed", too_large)
    with pytest.raises(web.HTTPError) as e:
        await app.credentials_for("alice", "fort-urls-study", request_id="big")
    assert e.value.status_code == 500
    assert "limit of 2048" in e.value.message and "administrators" in e.value.message
    assert app.backend.calls == 0
    (rec,) = app.fort_store.audit.query(user="alice", action="credentials.issue")
    assert rec.decision == "deny" and "limit of 2048" in rec.reason
