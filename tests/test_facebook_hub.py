"""Facebook login through a REAL JupyterHub against the local Facebook stand-in (over HTTP).

One hub and one stand-in serve the whole module; each test uses its own identities and resets
the stand-in's faults afterwards.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
import yaml
from cryptography.fernet import Fernet

from fort_hub.authenticators.identities import Identities
from fort_hub.authenticators.meta import b64url_encode, make_signed_request
from fort_hub.dev.facebook import DEFAULT_IDENTITIES, Standin, StandinServer, load_identities
from fort_hub.store import Store
from fort_hub.store.memberships import Memberships
from tests.fbflow import choose, login, start_login
from tests.hubproc import RunningHub

pytestmark = pytest.mark.hub
ROOT = Path(__file__).resolve().parent.parent
APP_ID, SECRET = "1234567890123456", "dev-facebook-app-secret"
CONTACT = "fort-support@example.org"


def _identities(tmp: Path) -> Path:
    data = yaml.safe_load(DEFAULT_IDENTITIES.read_text())
    data["identities"]["impostor"] = {
        "id": "10000000000000666", "name": "Not Alice", "email": "Alice@example.org"
    }  # fmt: skip
    data["identities"]["noemail"] = {"id": "10000000000000777", "name": "No Email",
                                     "email": "ne@example.org", "declined": ["email"]}  # fmt: skip
    # an IAM wildcard in the email's local part: the username would be "a*" (#10 finding 2)
    data["identities"]["wildcard"] = {"id": "10000000000000888", "name": "Star",
                                      "email": "a*@example.org"}  # fmt: skip
    data["identities"]["replay"] = {"id": "10000000000000999", "name": "Replay Victim",
                                    "email": "replay@example.org"}  # fmt: skip
    data["identities"]["joiner"] = {"id": "10000000000000555", "name": "New Researcher",
                                    "email": "joiner@example.org"}  # fmt: skip
    data["identities"]["hubname"] = {"id": "10000000000000333", "name": "Hub Name",
                                     "email": "jupyterhub@example.org"}  # fmt: skip
    data["identities"]["servicename"] = {"id": "10000000000000332", "name": "Service Name",
                                         "email": "fort-data@example.org"}  # fmt: skip
    data["identities"]["lapsed"] = {"id": "10000000000000444", "name": "Lapsed Researcher",
                                    "email": "lapsed@example.org"}  # fmt: skip
    path = tmp / "identities.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fbhub")
    policy = (ROOT / "fort_hub/dev/data/example-policy.yaml").read_text()
    lapsed = "      - user: lapsed\n        expires: 2020-01-01\n"  # a static entry, expired
    lapsed += "      - fort-data\n"  # a member whose name is a hub service's (refused at sign-in)
    (tmp / "policy.yaml").write_text(policy.replace("      - alice\n", "      - alice\n" + lapsed))
    idents = load_identities(_identities(tmp))["identities"]
    standin = Standin(idents, APP_ID, SECRET)
    server = StandinServer(standin).start()
    store_url = f"sqlite:///{tmp / 'fort.sqlite'}"
    config = f"""
    c.JupyterHub.authenticator_class = "facebook"
    c.FacebookOAuthenticator.client_id = {APP_ID!r}
    c.FacebookOAuthenticator.client_secret = {SECRET!r}
    c.FacebookOAuthenticator.dialog_url = {server.url!r}
    c.FacebookOAuthenticator.graph_url = {server.url!r}
    c.FacebookOAuthenticator.strip_email_domains = {{"example.org"}}
    c.FacebookOAuthenticator.admin_users = {{"admin"}}
    c.FacebookOAuthenticator.access_contact = {CONTACT!r}
    c.FacebookOAuthenticator.enable_auth_state = True
    c.FacebookOAuthenticator.auth_refresh_age = 2
    c.FortSettings.policy_file = {str(tmp / "policy.yaml")!r}
    c.FortSettings.store_url = {store_url!r}
    c.FortSettings.hub_groups = True  # the hub copy, which the join at sign-in fills
    c.JupyterHub.services.append({{"name": "fort-data", "api_token": "fort-data-token-0123456789"}})
    """
    hub = RunningHub(
        tmp / "hub", config, env={"JUPYTERHUB_CRYPT_KEY": Fernet.generate_key().decode()}
    )
    hub.start()
    store = Store(store_url)
    try:
        yield {"hub": hub, "standin": standin, "url": server.url, "store": store}
    finally:
        hub.stop()
        server.stop()
        store.dispose()


@pytest.fixture(autouse=True)
def _reset(env):
    env["standin"].faults.clear()
    yield
    env["standin"].faults.clear()


def user(env, name):
    r = requests.get(env["hub"].api(f"users/{name}"), headers=env["hub"].admin_headers, timeout=10)
    return r.json() if r.status_code == 200 else None


def audit(env, action, actor=None):
    return env["store"].audit.query(user=actor, action=action, limit=20)


def test_login_page_offers_facebook(env):
    r = requests.get(env["hub"].url + "/hub/login", timeout=10)
    assert r.status_code == 200
    assert "Sign in with Facebook" in r.text and "oauth_login" in r.text


def test_full_login_refresh_and_logout(env):
    hub, standin = env["hub"], env["standin"]
    s, cb = login(hub.url, "alice")
    assert cb.status_code == 302, hub.log()[-3000:]
    model = user(env, "alice")
    assert model["name"] == "alice" and model["admin"] is False
    state = model["auth_state"]
    assert state["facebook_id"] == "10000000000000001"
    assert state["facebook_user"]["email"] == "alice@example.org"
    assert state["scope"] == ["public_profile", "email"]  # filled from debug_token
    assert state["access_token"] in standin.tokens and state["expires_at"] > time.time()
    rec = audit(env, "auth.login", "alice")[0]
    assert rec.resource == "facebook:10000000000000001" and rec.decision == "allow"
    me = s.get(hub.url + "/hub/api/user", timeout=10)
    assert me.status_code == 200 and me.json()["name"] == "alice"

    # refresh: after auth_refresh_age the hub re-validates with debug_token
    old_validated = state["validated_at"]
    time.sleep(2.2)
    assert s.get(hub.url + "/hub/home", allow_redirects=False, timeout=30).status_code == 200
    assert user(env, "alice")["auth_state"]["validated_at"] > old_validated

    # a token revoked at Facebook: the next refresh fails, the user must sign in again
    requests.post(env["url"] + "/_standin/revoke", json={"identity": "alice"}, timeout=10)
    time.sleep(2.2)
    r = s.get(hub.url + "/hub/home", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "/hub/login" in r.headers["Location"]
    fail = audit(env, "auth.refresh", "alice")[0]
    assert (
        fail.decision == "deny" and "token is not valid (The user has not authorized" in fail.reason
    )

    s, cb = login(hub.url, "alice")
    assert cb.status_code == 302
    r = s.get(hub.url + "/hub/logout", allow_redirects=False, timeout=30)
    assert r.status_code in (200, 302)
    r = s.get(hub.url + "/hub/home", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "/hub/login" in r.headers["Location"]


def test_a_new_user_is_in_their_study_hub_group_at_first_sign_in(env):
    """#13: the hub adds a new user to the fort-managed hub groups of their memberships as it
    creates them (recorded first), instead of fort-groups at its next pass; a hub group
    without fort-groups' mark is not touched."""
    hub, h = env["hub"], env["hub"].admin_headers
    for group, props in [("urls-study", {"fort-groups": {"managed": True}}), ("ads-study", {})]:
        requests.post(hub.api(f"groups/{group}"), headers=h, timeout=10)
        r = requests.put(hub.api(f"groups/{group}/properties"), json=props, headers=h, timeout=10)
        assert r.status_code == 200, r.text
    for group in ("urls-study", "ads-study"):
        Memberships(env["store"]).upsert(group, "joiner", updated_by="test")
    assert user(env, "joiner") is None
    assert login(hub.url, "joiner")[1].status_code == 302, hub.log()[-3000:]
    assert user(env, "joiner")["groups"] == ["urls-study"]
    [rec] = audit(env, "groups.add", "jupyterhub")
    assert (rec.resource, rec.details["by"]) == ("groups/urls-study/members/joiner", "new hub user")
    login_rec = audit(env, "auth.login", "joiner")[0]
    assert login_rec.seq < rec.seq  # signed in (bound and recorded) before the hub made the user


def test_a_stale_store_copy_of_an_expired_policy_entry_does_not_sign_in(env):
    """The store's ``source=policy`` copy of lapsed's static entry still says "no expiry" (the
    policy's ``expires`` was set since and fort-groups has not mirrored it yet): the policy
    decides at the moment of the sign-in, and no hub account is made."""
    Memberships(env["store"]).upsert("urls-study", "lapsed", source="policy", updated_by="test")
    _, r = login(env["hub"].url, "lapsed")
    assert r.status_code == 403, r.text[:2000]
    assert "no study membership on this hub" in r.text and "Traceback" not in r.text
    assert user(env, "lapsed") is None
    denial = audit(env, "auth.deny")[0]
    assert (denial.actor, denial.decision) == ("lapsed", "deny")


def test_admin_flag_from_admin_users(env):
    _, cb = login(env["hub"].url, "admin")
    assert cb.status_code == 302
    assert user(env, "admin")["admin"] is True
    _, cb = login(env["hub"].url, "bob")
    assert cb.status_code == 302 and user(env, "bob")["admin"] is False


def test_require_proof_mode_login_works(env):
    env["standin"].faults["require_proof"] = True
    _, cb = login(env["hub"].url, "carol")
    assert cb.status_code == 302


def _with_query(url, **changes):
    parts = urlsplit(url)
    q = dict(parse_qsl(parts.query))
    for k, v in changes.items():
        if v is None:
            q.pop(k, None)
        else:
            q[k] = v
    return urlunsplit(parts._replace(query=urlencode(q)))


def _callback_case(env, mutate):
    s, dialog_url, forms = start_login(env["hub"].url)
    callback = choose(s, dialog_url, forms, "alice")
    return mutate(env, s, callback)


def _replayed(env, s, callback):
    assert s.get(callback, allow_redirects=False, timeout=30).status_code == 302
    s2, dialog_url, forms = start_login(env["hub"].url)  # a fresh, valid state cookie
    fresh = choose(s2, dialog_url, forms, "alice")
    state = dict(parse_qsl(urlsplit(fresh).query))["state"]
    return s2.get(_with_query(callback, state=state), allow_redirects=False, timeout=30)


CALLBACK_CASES = {
    "state mismatch": (
        lambda env, s, cb: s.get(_with_query(cb, state="eyJzdGF0ZV9pZCI6ICJ4In0="), timeout=30),
        400, "OAuth state mismatch"),
    "missing state cookie": (
        lambda env, s, cb: requests.get(cb, timeout=30), 400, "This sign-in link was already used"),
    "missing code": (
        lambda env, s, cb: s.get(_with_query(cb, code=None), timeout=30),
        400, "OAuth callback made without a code"),
    "replayed code": (_replayed, 403, "This authorization code has been used"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CALLBACK_CASES))
def test_bad_callback(env, case):
    mutate, status, message = CALLBACK_CASES[case]
    before = audit(env, "auth.deny")
    r = _callback_case(env, mutate)
    assert r.status_code == status, r.text[:2000]
    assert message in r.text
    assert "Traceback" not in r.text
    last = before[0].seq if before else 0
    new = [d for d in audit(env, "auth.deny") if d.seq > last]  # each refusal is audited once
    assert len(new) == 1 and new[0].decision == "deny" and message in new[0].reason, new


LOGIN_CASES = {
    "access_denied": (None, {}, 403, "Facebook login was cancelled"),
    "token of another app": ("alice", {"token_app_id": "999"}, 403, "issued to a different app"),
    "invalid token": ("alice", {"invalid_tokens": True}, 403, "token is not valid"),
    "expired token": ("alice", {"token_ttl": -10}, 403, "token has expired"),
    "me id mismatch": ("alice", {"me_id": "10000000000000999"}, 403, "inconsistent user ids"),
    "bound to another facebook id": ("impostor", {}, 403,
                                     "linked to a different Facebook account"),
    "non-member": ("dave", {}, 403, "no study membership on this hub"),
    "no email": ("noemail", {}, 403, "did not share an email address"),
    "the hub's audit name": ("hubname", {}, 403, "'jupyterhub' is reserved: fort-hub records "
                             "its own actions in the audit log under it"),
    "a hub service's name": ("servicename", {}, 403, "'fort-data' is reserved: it is the name "
                             "of a service of this hub"),
    "wildcard username": ("wildcard", {}, 403, "'a*' (not allowed: '*') is not an allowed "
                          "username: a username must be 1-128 characters: ASCII letters"),
    "graph error 190": ("alice", {"error": {"code": 190, "paths": ["me"]}}, 403,
                        "Facebook did not accept the login token (error 190"),
    "graph rate limit": ("alice", {"error": {"code": 4, "paths": ["debug_token"]}}, 503,
                         "Facebook is limiting requests from this hub"),
    "graph rate limit 613": ("alice", {"error": {"code": 613, "paths": ["oauth/access_token"]}},
                             503, "error 613"),
    "graph unreachable": ("alice", {"hang_up": ["oauth/access_token"]}, 503,
                          "Facebook could not be reached"),
    "wrong appsecret_proof": ("alice", {"require_proof": True, "proof_secret": "rotated"}, 403,
                              "Facebook refused the request (error 100: Invalid appsecret_proof"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(LOGIN_CASES))
def test_refused_login(env, case):
    identity, faults, status, message = LOGIN_CASES[case]
    if case == "bound to another facebook id":
        assert login(env["hub"].url, "alice")[1].status_code == 302
    env["standin"].faults.update(faults)
    _, r = login(env["hub"].url, identity)
    assert r.status_code == status, r.text[:3000]
    assert message in r.text.replace("&#39;", "'").replace("&quot;", '"')
    assert "Traceback" not in r.text
    denial = audit(env, "auth.deny")[0]
    assert denial.decision == "deny" and message.split(".")[0][:30] in denial.reason
    if case == "wildcard username":  # refused before any account was made for it
        assert user(env, "a*") is None
    if case == "the hub's audit name":  # nor is its refusal recorded under the hub's name
        assert user(env, "jupyterhub") is None and denial.actor == "refused:jupyterhub"
    if case == "a hub service's name":  # e.g. fort-query renamed with its service_name
        assert user(env, "fort-data") is None and denial.actor == "refused:fort-data"


def _text(html: str) -> str:
    """The visible words of a page (tags dropped, entities of quotes undone)."""
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    body = re.sub(r"<[^>]+>", " ", body).replace("&#39;", "'").replace("&quot;", '"')
    return " ".join(body.split())


def test_no_access_page_says_it_once_with_the_ways_on(env):
    """#14: dave's refusal was shown twice (an h1 "403 : You signed in as ..." and again below)
    with no way on. Now: one message, who he is, whom to ask, "Try again" and "Sign out"."""
    _, r = login(env["hub"].url, "dave")
    assert r.status_code == 403
    text = _text(r.text)
    assert text.count("no study membership") == 1, text
    assert "403 :" not in text
    assert "No access yet" in text
    assert "You are signed in with Facebook as dave" in text
    assert "but you have no study membership on this hub" in text
    assert f"To request access, contact {CONTACT}." in text
    assert text.count(CONTACT) == 1 and text.count("signed in") == 1
    assert 'id="try-again"' in r.text and 'href="/hub/oauth_login"' in r.text
    assert 'id="sign-out"' in r.text and 'href="/hub/logout"' in r.text


def test_reloading_the_callback_after_a_refusal_offers_to_sign_in_again(env):
    """#14: reloading /hub/oauth_callback gave "400 : OAuth state missing from cookies" and no
    way back."""
    s, dialog_url, forms = start_login(env["hub"].url)
    callback = choose(s, dialog_url, forms, "dave")
    assert s.get(callback, allow_redirects=False, timeout=60).status_code == 403
    again = s.get(callback, allow_redirects=False, timeout=60)  # the reload
    assert again.status_code == 400
    text = _text(again.text)
    assert "This sign-in link has expired" in text
    assert "OAuth state missing" not in text
    assert "Sign in again" in text and 'href="/hub/oauth_login"' in again.text


def test_reloading_the_callback_when_signed_in_carries_on(env):
    """A reload after a successful sign-in goes on to the hub instead of an error."""
    s, dialog_url, forms = start_login(env["hub"].url)
    callback = choose(s, dialog_url, forms, "alice")
    assert s.get(callback, allow_redirects=False, timeout=60).status_code == 302
    again = s.get(callback, allow_redirects=False, timeout=60)
    assert again.status_code == 302, again.text[:1000]
    assert "/hub/" in again.headers["Location"]


def test_rest_api_refuses_to_create_an_unsafe_username(env):
    """#10 finding 2: the hub's own user API goes through the same validate_username."""
    hub = env["hub"]
    r = requests.post(hub.api("users"), json={"usernames": ["b*"]}, headers=hub.admin_headers,
                      timeout=10)  # fmt: skip
    assert r.status_code == 403, r.text
    assert "'b*' (not allowed: '*') is not an allowed username" in r.json()["message"]
    # the single-user endpoint reports only "Failed to create user" (JupyterHub's wording)
    r = requests.post(hub.api("users/b*"), headers=hub.admin_headers, timeout=10)
    assert r.status_code == 400, r.text
    assert user(env, "b*") is None


def test_standin_enforces_appsecret_proof(env):
    """The stand-in in require mode refuses Graph calls without / with a wrong proof."""
    env["standin"].faults["require_proof"] = True
    token, _ = env["standin"].mint("alice", ["public_profile"])
    me = env["url"] + "/v23.0/me"
    r = requests.get(me, params={"access_token": token}, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith(
        "API calls from the server require an appsecret_proof"
    )
    r = requests.get(me, params={"access_token": token, "appsecret_proof": "00" * 32}, timeout=10)
    assert r.json()["error"] == {**r.json()["error"], "code": 100,
                                 "message": "Invalid appsecret_proof provided in the API argument"}  # fmt: skip


def _post_signed(env, path, signed_request=None, body=None):
    data = body if body is not None else {"signed_request": signed_request}
    return requests.post(f"{env['hub'].url}/hub/facebook/{path}", data=data, timeout=30)


def _forge(payload: dict, secret=SECRET, **over):
    sr = make_signed_request(payload, secret)
    sig, body = sr.split(".")
    return over.get("fmt", "{sig}.{body}").format(sig=sig, body=body)


SIGNED_CASES = {
    "bad signature": ({"signed_request": _forge({"user_id": "1"}, secret="not-the-secret")}, 400,
                      "signature does not match"),
    "wrong algorithm": ({"signed_request": "c2ln." + b64url_encode(
        b'{"algorithm":"HMAC-MD5","user_id":"1"}')}, 400, "algorithm must be HMAC-SHA256"),
    "bad padding": ({"signed_request": "abcde." + b64url_encode(b'{"a":1}')}, 400,
                    "bad base64url padding"),
    "garbage": ({"signed_request": "<script>alert(1)</script>"}, 400,
                "two base64url segments"),
    "not base64": ({"signed_request": "a$b.c%d"}, 400, "not base64url"),
    "missing": ({}, 400, "signed_request is missing"),
    "oversized body": ({"signed_request": "x" * 20000}, 413, "larger than 8192 bytes"),
}  # fmt: skip


@pytest.mark.parametrize("path", ["deauthorize", "data-deletion"])
@pytest.mark.parametrize("case", list(SIGNED_CASES))
def test_forged_callbacks_refused(env, case, path):
    body, status, message = SIGNED_CASES[case]
    r = _post_signed(env, path, body=body)
    assert r.status_code == status
    assert message in r.json()["message"]
    assert "Traceback" not in r.text
    action = "auth.deauthorize" if path == "deauthorize" else "auth.delete"
    assert message in audit(env, action, "facebook")[0].reason


def test_deauthorize_revokes_hub_tokens_and_blocks_stored_token(env):
    hub = env["hub"]
    s, cb = login(hub.url, "bob")
    assert cb.status_code == 302
    tok = requests.post(hub.api("users/bob/tokens"), headers=hub.admin_headers,
                        json={"note": "t"}, timeout=10).json()["token"]  # fmt: skip
    auth = {"Authorization": f"token {tok}"}
    assert requests.get(hub.api("user"), headers=auth, timeout=10).status_code == 200
    r = _post_signed(
        env, "deauthorize", make_signed_request({"user_id": "10000000000000002"}, SECRET)
    )
    assert r.status_code == 200 and r.json() == {"status": "deauthorized", "known_user": True}
    assert requests.get(hub.api("user"), headers=auth, timeout=10).status_code == 403
    assert s.get(hub.url + "/hub/api/user", timeout=10).status_code == 403  # browser signed out
    rec = audit(env, "auth.deauthorize", "bob")[0]
    assert rec.decision == "allow" and rec.details["hub_tokens_revoked"] >= 1
    # the stored Facebook token is blocked (refresh_user refuses it: test_facebook_auth.py)
    assert Identities(env["store"]).by_subject("10000000000000002").revoked is not None
    # signing in again with a fresh Facebook authorization works and clears the block
    _, cb = login(hub.url, "bob")
    assert cb.status_code == 302
    assert Identities(env["store"]).by_subject("10000000000000002").revoked is None


def test_replayed_or_future_dated_callbacks_change_nothing(env):
    """#10 finding 12: a genuine deauthorize replayed after the user signed in again revoked
    the new session; one dated 10 years ahead never went stale."""
    hub, fb_id = env["hub"], "10000000000000999"
    Memberships(env["store"]).upsert("urls-study", "replay", updated_by="test")
    assert login(hub.url, "replay")[1].status_code == 302
    genuine = make_signed_request({"user_id": fb_id}, SECRET)
    deletion = make_signed_request({"user_id": fb_id}, SECRET)
    assert _post_signed(env, "deauthorize", genuine).status_code == 200
    time.sleep(1.1)  # issued_at has whole seconds
    s, cb = login(hub.url, "replay")  # the user signs in again
    assert cb.status_code == 302
    tok = requests.post(hub.api("users/replay/tokens"), headers=hub.admin_headers,
                        json={"note": "t"}, timeout=10).json()["token"]  # fmt: skip
    future = make_signed_request({"user_id": fb_id, "issued_at": time.time() + 10 * 365 * 86400},
                                 SECRET)  # fmt: skip
    cases = [
        ("deauthorize", genuine, "signed_request is stale: issued_at"),
        ("data-deletion", deletion, "signed_request is stale: issued_at"),
        ("deauthorize", future, "signed_request is dated in the future"),
    ]
    for path, sr, message in cases:
        r = _post_signed(env, path, sr)
        assert r.status_code == 400, r.text
        assert message in r.json()["message"] and "Traceback" not in r.text
    # nothing changed: the new session, its token, the binding and the auth_state stand
    assert s.get(hub.url + "/hub/api/user", timeout=10).status_code == 200
    auth = {"Authorization": f"token {tok}"}
    assert requests.get(hub.api("user"), headers=auth, timeout=10).status_code == 200
    assert Identities(env["store"]).by_subject(fb_id).revoked is None
    assert user(env, "replay")["auth_state"] is not None
    stale = audit(env, "auth.deauthorize", "replay")[0]
    assert stale.decision == "deny" and "before replay's latest login" in stale.reason
    assert audit(env, "auth.delete", "replay")[0].decision == "deny"
    assert "dated in the future" in audit(env, "auth.deauthorize", "facebook")[0].reason
    # a deauthorize issued after the latest login still works
    fresh = make_signed_request({"user_id": fb_id}, SECRET)
    assert _post_signed(env, "deauthorize", fresh).status_code == 200
    assert requests.get(hub.api("user"), headers=auth, timeout=10).status_code == 403


def test_data_deletion_and_status_page(env):
    hub = env["hub"]
    assert login(hub.url, "carol")[1].status_code == 302
    assert user(env, "carol")["auth_state"] is not None
    r = _post_signed(
        env, "data-deletion", make_signed_request({"user_id": "10000000000000003"}, SECRET)
    )
    assert r.status_code == 200
    body = r.json()
    code = body["confirmation_code"]
    assert body["url"] == f"{hub.url}/hub/facebook/deletion-status?code={code}"
    assert user(env, "carol")["auth_state"] is None
    page = requests.get(body["url"], timeout=10)
    assert page.status_code == 200 and code in page.text and "completed" in page.text
    assert "carol" not in page.text  # the status page names no user
    rec = audit(env, "auth.delete", "carol")[0]
    assert rec.details["confirmation_code"] == code
    unknown = requests.get(f"{hub.url}/hub/facebook/deletion-status?code=nosuchcode123", timeout=10)
    assert unknown.status_code == 404 and "No data deletion request" in unknown.text
    bad = requests.get(f"{hub.url}/hub/facebook/deletion-status?code=%27;drop", timeout=10)
    assert bad.status_code == 400 and "malformed" in bad.text


def test_callback_command_sends_signed_requests(env, capsys):
    from fort_hub.cli import main

    assert login(env["hub"].url, "admin")[1].status_code == 302
    args = ["facebook-callback", "--hub-url", env["hub"].url, "--identity", "admin",
            "--identities", str(DEFAULT_IDENTITIES), "--standin-url", env["url"]]  # fmt: skip
    assert main([*args, "--kind", "delete"]) == 0
    assert '"confirmation_code"' in capsys.readouterr().out
    assert main([*args, "--kind", "deauthorize"]) == 0
    assert '"deauthorized"' in capsys.readouterr().out
    assert all(t.revoked for t in env["standin"].tokens.values() if t.identity == "admin")
