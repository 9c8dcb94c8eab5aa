"""The handler contract (fort_hub/services/handler.py), one suite over all three services behind a
real hub: unknown parameter, malformed body, oversized body, store down, audit down, wrong scope,
expired membership, missing XSRF, security headers. Each service is described by a few probes;
every test runs against each of them (the shape of traefik-proxy's suite over its backends)."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass

import pytest
import requests

from fort_hub import scopes
from fort_hub.services.hubauth import answer_keys, answer_mac
from fort_hub.store import Store
from fort_hub.store.core import isoformat
from fort_hub.store.hubanswers import HubAnswers, StoredAnswer
from tests.fortstack import call, error_of, services_behind_hub, store_of, url
from tests.fortsvc import SHARED_SECRET, auth, user_token

pytestmark = pytest.mark.hub
UTC = dt.UTC
HOUR = dt.timedelta(hours=1)
SQL = {"sql": "SELECT country FROM url_shares LIMIT 1", "dataset": "url_shares"}


@dataclass(frozen=True)
class Probe:
    """How one service is exercised: a read (GET), a data-touching request, a body request."""

    service: str
    read: str  # GET path for a researcher
    scope: str  # the scope the read needs
    data: tuple[str, str, dict | None, str]  # method, path, JSON body, user
    body: tuple[str, str, str] | None  # method, path, user of an endpoint taking a JSON body
    expired: tuple[str, str, dict | None, str]  # a request of a user whose membership ended


PROBES = [
    Probe(
        scopes.GROUPS_SERVICE, "api/v1/me", scopes.GROUPS_READ,
        ("PUT", "api/v1/groups/ads-study/members/dave", {"expires": None}, "admin"),
        ("PUT", "api/v1/groups/ads-study/members/dave", "admin"),
        ("PUT", "api/v1/groups/ads-study/members/dave", {}, "exadmin"),
    ),
    Probe(
        scopes.CREDENTIALS_SERVICE, "api/v1/aws/credentials?role=fort-urls-study",
        scopes.CREDENTIALS_AWS,
        ("GET", "api/v1/aws/credentials?role=fort-urls-study", None, "alice"),
        None,
        ("GET", "api/v1/aws/credentials?role=fort-urls-study", None, "erin"),
    ),
    Probe(
        scopes.QUERY_SERVICE, "api/v1/usage", scopes.QUERY_USE,
        ("POST", "api/v1/queries", SQL, "alice"),
        ("POST", "api/v1/queries", "alice"),
        ("POST", "api/v1/queries", SQL, "erin"),
    ),
]  # fmt: skip
IDS = [p.service for p in PROBES]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from services_behind_hub(tmp_path_factory.mktemp("contract"))


# ----- parameters and bodies -------------------------------------------------------------------


@pytest.mark.parametrize("probe", PROBES, ids=IDS)
def test_unknown_and_repeated_parameters_are_400_naming_them(env, probe):
    sep = "&" if "?" in probe.read else "?"
    r = call(env, probe, "GET", probe.read + sep + "bogus=1")
    assert r.status_code == 400 and "'bogus'" in error_of(r)
    r = call(env, probe, "GET", probe.read + sep + "x=1&x=2")
    assert r.status_code == 400 and "x" in error_of(r)


@pytest.mark.parametrize("probe", PROBES, ids=IDS)
@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "nested"),
        (b'{"sql": "SELECT \\ud800", "dataset": "url_shares"}', "Unicode"),
    ],
    ids=["invalid", "not-object", "deep", "lone-surrogate"],
)
def test_malformed_body_is_400_naming_the_problem(env, probe, raw, says):
    if probe.body is None:  # no endpoint takes a body: a body sent anyway is a 405 with Allow
        r = call(env, probe, "POST", probe.read.split("?")[0], data=raw)
        assert r.status_code == 405 and r.headers["Allow"] == "GET"
        return
    method, path, user = probe.body
    r = call(env, probe, method, path, user=user, data=raw,
             headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 400, r.text[:300]
    assert says in error_of(r)


def test_lone_surrogate_in_sql_is_refused_and_audited(env):
    """Issue 10, finding 13: a lone surrogate in `sql` crashed on insert and was not audited."""
    raw = b'{"sql": "SELECT \\ud800 FROM url_shares", "dataset": "url_shares"}'
    r = call(env, scopes.QUERY_SERVICE, "POST", "api/v1/queries", data=raw,
             headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and "sql" in error_of(r)
    rec = store_of(env).audit.query(user="alice", action="query.submit", limit=1)[0]
    assert rec.decision == "deny" and rec.request_id == r.headers["X-Request-Id"]
    assert "\\ud800" in rec.details["sql"]


@pytest.mark.parametrize("probe", PROBES, ids=IDS)
def test_oversized_body_is_refused_and_the_service_survives(env, probe):
    """Straight to the service (a proxy in between answers its own 502/503 when the service
    closes the connection): over max_body_size is refused before the handler runs."""
    method, path = (probe.body or ("POST", probe.read.split("?")[0], ""))[:2]
    big = b'{"sql": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    app = env["apps"][probe.service]
    direct = f"{app.bind_url}{app.service_prefix}{path}"
    try:
        r = requests.request(method, direct, data=big, timeout=30, headers={
            **auth(env["tokens"]["admin"]), "Content-Type": "application/json"})  # fmt: skip
        assert r.status_code in (400, 413), r.status_code
    except requests.RequestException:
        pass  # the server closed the connection: also a refusal
    assert call(env, probe, "GET", probe.read).status_code == 200


# ----- store and audit failures ----------------------------------------------------------------


@pytest.mark.parametrize("probe", PROBES, ids=IDS)
def test_store_down_is_a_generic_503(env, probe, monkeypatch):
    store = store_of(env)
    broken = Store("sqlite:////nonexistent-dir/x.sqlite", create=False)
    monkeypatch.setattr(store, "engine", broken.engine)
    monkeypatch.setattr(store, "audit", broken.audit)
    method, path, body, user = probe.data
    r = call(env, probe, method, path, body, user=user)
    assert r.status_code == 503, r.text
    assert "unavailable" in error_of(r) and "nonexistent" not in r.text
    assert "unable to open" not in r.text and r.headers["Retry-After"]


@pytest.mark.parametrize("probe", PROBES, ids=IDS)
def test_audit_down_refuses_the_data_request(env, probe, monkeypatch):
    store = store_of(env)
    broken = Store("sqlite:////nonexistent-dir/x.sqlite", create=False)
    monkeypatch.setattr(store, "audit", broken.audit)
    method, path, body, user = probe.data
    r = call(env, probe, method, path, body, user=user)
    assert r.status_code == 503, r.text
    assert "audit log is unavailable" in error_of(r) and "nonexistent" not in r.text


# ----- who may call -----------------------------------------------------------------------------


@pytest.mark.parametrize("probe", PROBES, ids=IDS)
def test_wrong_scope_is_403_and_no_credentials_401(env, probe):
    hub = env["hub"]
    only_access = user_token(hub, "alice", [scopes.access(probe.service)])
    r = call(env, probe, "GET", probe.read, token=only_access)
    assert r.status_code == 403 and probe.scope in error_of(r)
    r = requests.get(url(env, probe, probe.read), timeout=30)
    assert r.status_code == 401 and error_of(r)
    r = requests.get(url(env, probe, probe.read), headers=auth("not-a-token"), timeout=30)
    assert r.status_code == 401


@pytest.fixture
def answers_for(env):
    """Sets how long the services keep the hub's answers (0: not at all); restores after."""
    kept = {name: (app.hub_auth.answers, app.hub_auth.cache_max_age)
            for name, app in env["apps"].items()}  # fmt: skip

    def set_max_age(seconds: float, *services: str):
        for name, app in env["apps"].items():
            if services and name not in services:
                continue
            if seconds:
                app.hub_auth.answers.max_age = dt.timedelta(seconds=seconds)
            else:
                app.hub_auth.answers, app.hub_auth.cache_max_age = None, 0

    yield set_max_age
    for name, app in env["apps"].items():
        answers, age = kept[name]
        app.hub_auth.answers, app.hub_auth.cache_max_age = answers, age
        if answers is not None:
            answers.max_age = dt.timedelta(seconds=age)


def new_token(hub, user="alice", token_scopes=None) -> tuple[str, str]:
    body = {"note": "answers"} | ({"scopes": token_scopes} if token_scopes else {})
    r = requests.post(hub.api(f"users/{user}/tokens"), json=body, headers=hub.admin_headers,
                      timeout=30)  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()["token"], r.json()["id"]


def revoke(hub, token_id: str, user="alice") -> None:
    r = requests.delete(hub.api(f"users/{user}/tokens/{token_id}"), headers=hub.admin_headers,
                        timeout=30)  # fmt: skip
    assert r.status_code == 204, r.text


def stored_answer(env, token: str):
    key = answer_keys(token, "", SHARED_SECRET)[0]
    return HubAnswers(store_of(env)).get(key, dt.datetime.now(UTC) - HOUR)


def test_a_token_checked_by_one_service_is_not_asked_about_again_by_the_others(env, answers_for):
    """The hub's answer is shared through the store: after fort-query asked, the hub revokes the
    token; the other services still accept it (they did not ask), for at most the cache period
    counted from fort-query's question, then every service refuses it."""
    hub, ttl = env["hub"], 6
    answers_for(ttl)
    token, token_id = new_token(hub)
    query, others = PROBES[2], PROBES[:2]
    asked = time.monotonic()
    assert call(env, query, "GET", query.read, token=token).status_code == 200
    revoke(hub, token_id)
    for probe in others:
        r = call(env, probe, "GET", probe.read, token=token)
        assert r.status_code == 200, (probe.service, r.text)
    assert time.monotonic() - asked < ttl, "too slow to show the sharing: raise ttl"
    time.sleep(asked + ttl + 0.5 - time.monotonic())
    for probe in PROBES:
        r = call(env, probe, "GET", probe.read, token=token)
        assert r.status_code == 401 and "authentication required" in error_of(r), probe.service


def test_a_shared_answer_does_not_widen_a_token_to_another_service(env):
    """A token for fort-query alone, whose answer is in the store after fort-query asked the
    hub, is still refused by the other services: each checks its own access scope in it."""
    query = PROBES[2]
    only_query, _ = new_token(env["hub"], token_scopes=[scopes.access(query.service), query.scope])
    assert call(env, query, "GET", query.read, token=only_query).status_code == 200
    assert stored_answer(env, only_query) is not None
    for probe in PROBES[:2]:
        r = call(env, probe, "GET", probe.read, token=only_query)
        assert r.status_code == 403 and probe.service in error_of(r), r.text


def test_a_forged_answer_in_the_store_does_not_change_who_calls(env):
    """Whoever can write the fort store and holds a token of their own, but not the services'
    secret, cannot make a service take that token for another user's: the row's MAC is keyed
    by the secret and the token."""
    token, _ = new_token(env["hub"])
    key, _ = answer_keys(token, "", SHARED_SECRET)
    _, mac_key = answer_keys(token, "", b"a guess at the secret")
    admin = {"kind": "user", "name": "admin", "admin": True,
             "scopes": [scopes.access(s) for s in IDS] + [p.scope for p in PROBES]}  # fmt: skip
    text, when = json.dumps(admin), isoformat(dt.datetime.now(UTC))
    HubAnswers(store_of(env)).put(key, StoredAnswer(text, when, answer_mac(mac_key, key, when,
                                                                          text)))  # fmt: skip
    r = call(env, PROBES[0], "GET", PROBES[0].read, token=token)
    assert r.status_code == 200 and r.json()["user"] == "alice", r.text
    assert json.loads(stored_answer(env, token).model)["name"] == "alice"  # the hub's, now


def test_with_no_cache_a_revoked_token_is_refused_at_once(env, answers_for):
    """hub_user_cache_seconds = 0 asks the hub on every request (HubAuth would cache for ever)."""
    answers_for(0, PROBES[1].service)
    token, token_id = new_token(env["hub"])
    probe = PROBES[1]
    assert call(env, probe, "GET", probe.read, token=token).status_code == 200
    revoke(env["hub"], token_id)
    r = call(env, probe, "GET", probe.read, token=token)
    assert r.status_code == 401 and "authentication required" in error_of(r)


@pytest.mark.parametrize("probe", PROBES, ids=IDS)
def test_expired_membership_is_refused(env, probe):
    method, path, body, user = probe.expired
    r = call(env, probe, method, path, body, user=user)
    assert r.status_code == 403, r.text
    assert error_of(r)


@pytest.fixture(scope="module")
def cookie_session(env):
    """A browser-like session signed in to the hub and, through OAuth, to each service."""
    hub = env["hub"]
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30)
    r = s.post(f"{hub.url}/hub/login?next=/hub/home", timeout=30,
               data={"username": "alice", "password": "x", "_xsrf": s.cookies.get("_xsrf")})  # fmt: skip
    assert r.status_code == 200, r.text[:300]
    for p in PROBES:
        r = s.get(url(env, p, "login"), timeout=30)
        assert r.url.startswith(url(env, p, "")), r.url
    return s


@pytest.mark.parametrize("probe", PROBES, ids=IDS)
def test_cookie_without_xsrf_is_403_and_no_credentials_is_401(env, probe, cookie_session):
    r = cookie_session.get(url(env, probe, probe.read), timeout=30)
    assert r.status_code == 200, r.text  # the cookie alone authenticates a read
    method, path = ("DELETE", probe.read.split("?")[0]) if probe.body is None else probe.body[:2]
    r = cookie_session.request(method, url(env, probe, path), json=SQL, timeout=30)
    assert r.status_code == 403 and "xsrf" in error_of(r).lower()
    r = requests.request(method, url(env, probe, path), json=SQL, timeout=30)
    assert r.status_code == 401, r.text  # no credentials: 401 first, not the XSRF 403


# ----- headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("probe", PROBES, ids=IDS)
def test_security_headers_on_success_error_and_404(env, probe):
    responses = [
        call(env, probe, "GET", probe.read),
        call(env, probe, "GET", probe.read, token="not-a-token"),
        call(env, probe, "GET", "api/v1/no-such-thing"),
    ]
    assert [r.status_code for r in responses] == [200, 401, 404]
    for r in responses:
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["X-Request-Id"]


@pytest.mark.parametrize("probe", PROBES, ids=IDS)
def test_forwarded_headers_from_a_client_are_not_believed(env, probe):
    """Issue 10, finding 10: `X-Real-Ip` sent by a client became the audit record's address.
    Through the hub's proxy (trusted), only the hop the proxy appended is believed."""
    method, path, body, user = probe.data
    forged = {"X-Real-Ip": "203.0.113.66", "X-Forwarded-For": "203.0.113.66"}
    r = call(env, probe, method, path, body, user=user, headers=forged)
    assert r.status_code in (200, 202), r.text
    rec = store_of(env).audit.query(user=user, limit=1)[0]
    assert rec.request_id == r.headers["X-Request-Id"]
    assert rec.client != "203.0.113.66" and rec.client
