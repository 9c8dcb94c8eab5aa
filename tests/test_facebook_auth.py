"""FacebookOAuthenticator in-process against the stand-in (real HTTP), on SQLite and PostgreSQL:
refresh pacing and revocation, long-lived exchange, unreachable Graph, fail-closed audit,
settings validation, and the identity repository."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fort_hub.authenticators.facebook import FacebookLoginError, FacebookOAuthenticator
from fort_hub.authenticators.identities import Identities
from fort_hub.authenticators.meta import GraphError
from fort_hub.dev.facebook import DEFAULT_IDENTITIES, Standin, StandinServer, load_identities
from fort_hub.store import AuditError
from tests.hubproc import free_port

APP_ID, SECRET = "1234567890123456", "dev-facebook-app-secret"


@pytest.fixture(scope="module")
def standin():
    s = Standin(load_identities(DEFAULT_IDENTITIES)["identities"], APP_ID, SECRET)
    with StandinServer(s) as server:
        s.url = server.url
        yield s


@pytest.fixture
def auth(standin, store_url, example_policy_path):
    standin.faults.clear()
    return FacebookOAuthenticator(
        client_id=APP_ID, client_secret=SECRET, dialog_url=standin.url, graph_url=standin.url,
        enable_auth_state=True, auth_refresh_age=300, strip_email_domains={"example.org"},
        policy_file=str(example_policy_path), store_url=store_url,
    )  # fmt: skip


class FakeUser:
    def __init__(self, name, auth_state):
        self.name, self.state = name, auth_state

    async def get_auth_state(self):
        return self.state


async def _model(auth, standin, identity="alice"):
    token, _ = standin.mint(identity, ["public_profile", "email"])
    return await auth._token_to_auth_model({"access_token": token, "token_type": "bearer"})


async def test_auth_model_from_token(auth, standin):
    model = await _model(auth, standin)
    assert model["name"] == "alice" and model["admin"] is None
    st = model["auth_state"]
    assert (st["facebook_id"], st["scope"]) == ("10000000000000001", ["public_profile", "email"])
    auth.username_claim = "id"
    assert (await _model(auth, standin))["name"] == "10000000000000001"


async def test_refresh_revalidates_at_most_once_per_refresh_age(auth, standin):
    state = (await _model(auth, standin))["auth_state"]
    before = standin.calls["debug_token"]
    assert await auth.refresh_user(FakeUser("alice", state)) is True
    assert standin.calls["debug_token"] == before  # validated just now: no Graph call
    state["validated_at"] = time.time() - 301
    refreshed = await auth.refresh_user(FakeUser("alice", state))
    assert (
        refreshed["name"] == "alice" and refreshed["auth_state"]["validated_at"] > time.time() - 5
    )
    assert standin.calls["debug_token"] == before + 1


async def test_refresh_refuses_revoked_expired_or_deleted(auth, standin):
    state = (await _model(auth, standin))["auth_state"]
    ids = Identities(auth.fort_store)
    ids.bind("10000000000000001", "alice")
    ids.revoke("10000000000000001")
    before = dict(standin.calls)
    assert await auth.refresh_user(FakeUser("alice", state)) is False  # even if validated now
    assert dict(standin.calls) == before
    rec = auth.fort_store.audit.query(user="alice", action="auth.refresh")[0]
    assert rec.decision == "deny" and "revoked by deauthorization" in rec.reason
    ids.bind("10000000000000001", "alice")  # a new login clears the block

    expiring, _ = standin.mint("alice", ["public_profile", "email"], ttl=-1)
    state.update(validated_at=0, token_response={"access_token": expiring, "token_type": "bearer"})
    assert await auth.refresh_user(FakeUser("alice", state)) is False
    assert "has expired" in auth.fort_store.audit.query(action="auth.refresh")[0].reason

    assert await auth.refresh_user(FakeUser("alice", None)) is False  # auth_state deleted
    assert (
        "no usable Facebook token" in auth.fort_store.audit.query(action="auth.refresh")[0].reason
    )


async def test_refresh_keeps_the_session_while_facebook_cannot_answer(auth, standin):
    state = (await _model(auth, standin))["auth_state"]
    state["validated_at"] = time.time() - 301
    for fault in ({"hang_up": ["debug_token"]}, {"error": {"code": 4, "paths": ["debug_token"]}}):
        standin.faults.clear()
        standin.faults.update(fault)
        assert await auth.refresh_user(FakeUser("alice", state)) is True, fault
        rec = auth.fort_store.audit.query(user="alice", action="auth.refresh")[0]
        assert rec.decision == "allow" and rec.details == {"deferred": True}
        assert rec.reason.startswith("session kept, to be checked again: ")
    # ... and checks again once Facebook answers: a token revoked meanwhile ends the session
    standin.faults.clear()
    for tok in standin.tokens.values():
        if tok.identity == "alice":
            tok.revoked = True
    assert await auth.refresh_user(FakeUser("alice", state)) is False
    assert auth.fort_store.audit.query(user="alice", action="auth.refresh")[0].decision == "deny"


async def test_long_lived_exchange(auth, standin):
    auth.long_lived_token = True
    code = "AQtest" + str(time.time_ns())
    standin.codes[code] = {"identity": "bob", "client_id": APP_ID, "scopes": ["public_profile", "email"],
                           "redirect_uri": "http://hub/cb", "challenge": "",
                           "expires": time.time() + 60, "used": False}  # fmt: skip
    params = {"code": code, "redirect_uri": "http://hub/cb", "client_id": APP_ID,
              "client_secret": SECRET, "grant_type": "authorization_code", "data": None}  # fmt: skip
    info = await auth.get_token_info(None, params)
    assert info["long_lived"] is True and info["expires_in"] >= 59 * 86400
    model = await auth._token_to_auth_model(info)
    assert model["auth_state"]["long_lived"] is True and model["name"] == "bob"


async def test_graph_unreachable_is_a_clear_error(auth):
    auth.graph_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(GraphError) as e:
        await auth.graph("me", {}, "token")
    assert e.value.status == 503 and "could not be reached" in e.value.message


async def test_wrong_secret_in_require_mode(auth, standin):
    standin.faults["require_proof"] = True
    token, _ = standin.mint("alice", ["public_profile"])
    auth.client_secret = "not-the-secret"
    with pytest.raises(GraphError, match="Invalid appsecret_proof"):
        await auth.graph("me", {}, token)


async def test_login_refused_when_audit_cannot_be_written(auth, standin, monkeypatch):
    model = await _model(auth, standin, "carol")

    def broken(*a, **k):
        raise AuditError("audit record not written, action refused: disk full")

    monkeypatch.setattr(auth.fort_store.audit, "record", broken)
    monkeypatch.setattr(auth.fort_store.audit, "_append_in", broken)  # the binding's transaction
    with pytest.raises(FacebookLoginError) as e:
        await auth.run_post_auth_hook(None, model)
    assert (
        e.value.status_code == 503 and "could not be recorded in the audit log" in e.value.message
    )
    # the binding and its record are one transaction: no binding without its record
    assert auth.identities.by_username("carol") is None


def test_settings_are_validated():
    with pytest.raises(ValueError, match=r"graph_api_version must look like 'v23\.0'"):
        FacebookOAuthenticator(graph_api_version="23")
    with pytest.raises(ValueError, match="username_claim must be 'email', 'id'"):
        FacebookOAuthenticator(username_claim="login")


def test_identity_binding(store):
    ids = Identities(store)
    ids.bind("1", "alice")
    assert ids.bind("1", "alice").username == "alice"  # idempotent
    with pytest.raises(ValueError, match="bound to 'alice'"):
        ids.bind("2", "alice")
    with pytest.raises(ValueError, match="bound to 'alice'"):
        ids.bind("1", "mallory")
    assert ids.revoke("1").revoked is not None
    assert ids.bind("1", "alice").revoked is None
    ids.record_deletion("code12345678", "1", "alice", "completed")
    d = ids.deletion("code12345678")
    assert (d.username, d.status, d.completed is not None) == ("alice", "completed", True)
    assert ids.deletion("nope") is None


def test_identity_bind_returns_what_is_stored_and_both_reads_either_side(store):
    ids = Identities(store)
    first = ids.bind("1", "alice")  # inserted
    assert first == ids.by_subject("1") and first.revoked is None
    ids.revoke("1")
    again = ids.bind("1", "alice")  # revocation cleared, the original binding kept
    assert again == ids.by_subject("1") and again.created == first.created
    ids.bind("2", "bob")
    assert ids.both("1", "alice") == (first, first)
    assert ids.both("2", "alice") == (first, ids.by_subject("2"))  # two rows, one each side
    assert ids.both("1", "carol") == (None, first)
    assert ids.both("3", "alice") == (first, None)
    assert ids.both("3", "carol") == (None, None)


async def test_allowed_scopes_use_granted_scopes_from_debug_token(auth, standin):
    auth.policy_file = ""  # no study membership: only allowed_scopes can let bob in
    auth.allowed_scopes = ["email"]
    model = await _model(auth, standin, "bob")
    assert await auth.check_allowed(model["name"], model) is True
    model["auth_state"]["scope"] = ["public_profile"]  # email not granted
    with pytest.raises(FacebookLoginError, match="no study membership"):
        await auth.check_allowed(model["name"], model)


async def test_unreadable_policy_refuses_login_clearly(auth, standin, tmp_path):
    bad = tmp_path / "broken-policy.yaml"
    bad.write_text("version: 1\ngroups: [{name: x, members: 7}]\n")
    auth.policy_file = str(bad)
    model = await _model(auth, standin, "dave")
    with pytest.raises(FacebookLoginError) as e:
        await auth.check_allowed("dave", model)
    assert e.value.status_code == 503 and "access policy or the fort store" in e.value.message


async def test_login_with_token_from_before_deauthorization_is_refused(auth, standin):
    old, tok = standin.mint("carol", ["public_profile", "email"])
    tok.issued_at -= 10  # issued before the deauthorize callback below
    ids = Identities(auth.fort_store)
    ids.bind("10000000000000003", "carol")
    ids.revoke("10000000000000003")
    with pytest.raises(FacebookLoginError, match="was revoked"):
        await auth._token_to_auth_model({"access_token": old, "token_type": "bearer"})
    fresh, _ = standin.mint("carol", ["public_profile", "email"])  # after re-authorizing
    model = await auth._token_to_auth_model({"access_token": fresh, "token_type": "bearer"})
    assert model["name"] == "carol"


def test_graph_calls_have_their_own_http_client(auth):
    from tornado.httpclient import AsyncHTTPClient

    auth.graph_max_clients = 250
    client = auth.http_client
    assert client is not AsyncHTTPClient()  # not the process-wide 10-slot default
    assert client.max_clients == 250
    assert auth.http_client is client  # one per authenticator


def test_graph_max_clients_must_be_positive(auth):
    from traitlets import TraitError

    with pytest.raises(TraitError, match="graph_max_clients must be at least 1"):
        auth.graph_max_clients = 0


async def test_membership_from_the_fort_store_admits_until_it_expires(auth, standin):
    import datetime as dt

    from fort_hub.store.memberships import Memberships

    model = await _model(auth, standin, "dave")  # in no policy group
    with pytest.raises(FacebookLoginError, match="no study membership"):
        await auth.check_allowed("dave", model)
    members = Memberships(auth.fort_store)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    members.upsert("ads-study", "dave", expires=soon, source="api")  # added by fort-groups
    assert await auth.check_allowed("dave", model) is True
    members.upsert("ads-study", "dave", expires=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
                   source="api")  # fmt: skip
    with pytest.raises(FacebookLoginError, match="no study membership"):
        await auth.check_allowed("dave", model)


async def test_expired_policy_membership_does_not_admit(auth, standin, tmp_path):
    policy = tmp_path / "policy.yaml"
    text = Path(auth.policy_file).read_text()
    # carol's only membership left: urls-study, expired
    text = text.replace("expires: 2030-06-30", "expires: 2020-06-30")
    text = text.replace("members: [bob, carol]", "members: [bob]")
    assert "2020-06-30" in text and "[bob]" in text, "the example policy changed shape"
    policy.write_text(text)
    auth.policy_file = str(policy)
    model = await _model(auth, standin, "carol")
    with pytest.raises(FacebookLoginError, match="no study membership"):
        await auth.check_allowed("carol", model)


@pytest.mark.parametrize("source", ["policy", "api"])
async def test_a_store_row_does_not_outlive_an_expired_policy_entry(
    auth, standin, tmp_path, source
):
    """fort-groups mirrors static policy entries into the store (``source=policy``); until its
    next pass the copy may still carry the entry's old expiry, and a run-time (``api``) row from
    before the entry existed may be there too. The policy's ``expires`` decides."""
    from fort_hub.store.memberships import Memberships

    policy = tmp_path / "policy.yaml"
    text = Path(auth.policy_file).read_text()
    text = text.replace("expires: 2030-06-30", "expires: 2020-06-30")  # carol's urls-study
    text = text.replace("members: [bob, carol]", "members: [bob]")
    policy.write_text(text)
    auth.policy_file = str(policy)
    Memberships(auth.fort_store).upsert("urls-study", "carol", source=source)
    model = await _model(auth, standin, "carol")
    with pytest.raises(FacebookLoginError, match="no study membership"):
        await auth.check_allowed("carol", model)
