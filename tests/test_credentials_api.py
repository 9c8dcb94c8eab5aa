"""fort-credentials through a real hub (the service in-process with the stub STS backend, so the
tests can count STS calls): authorization, bad input, audit-first, caching, single-flight,
retries, STS outages and the rate limit."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import shutil
import time

import pytest
import requests

from fort_hub import scopes
from fort_hub.services.credentials import CredentialsService, StsError, StubStsBackend
from fort_hub.store import Store
from fort_hub.store.memberships import Memberships
from tests.conftest import EXAMPLE_POLICY
from tests.fortsvc import (
    ServiceSlot,
    ServiceThread,
    auth,
    hub_config,
    make_users,
    rewrite_policy,
    user_token,
)
from tests.hubproc import RunningHub

pytestmark = pytest.mark.hub
USER_SCOPES = [scopes.access(scopes.CREDENTIALS_SERVICE), scopes.CREDENTIALS_AWS]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("credhub")
    policy = work / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, policy)
    store_url = f"sqlite:///{work / 'fort.sqlite'}"
    slot = ServiceSlot(scopes.CREDENTIALS_SERVICE)
    hub = RunningHub(work / "hub")
    hub.extra_config = hub_config([slot], hub.url)
    cfg = slot.config(hub, policy, store_url)
    cfg.CredentialsService.sts_backend_class = StubStsBackend
    cfg.CredentialsService.backoff_base = 0.01
    app = CredentialsService(config=cfg)
    app.initialize([])
    svc = ServiceThread(app).start()  # before the hub, which waits for its services
    try:
        hub.start()
        make_users(hub, "alice", "bob", "carol", "erin", "mallory", "rate", "a*")
        expired = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        Memberships(app.fort_store).upsert("urls-study", "erin", expires=expired, source="api")
        # a hub user with an IAM wildcard in its name, member of a study (#10 finding 2)
        Memberships(app.fort_store).upsert("urls-study", "a*", expires=None, source="api")
        users = ("alice", "bob", "erin", "mallory", "a*")
        tokens = {u: user_token(hub, u, USER_SCOPES) for u in users}
        yield {"hub": hub, "app": app, "svc": svc, "tokens": tokens, "policy": policy}
    finally:
        svc.stop()
        hub.stop()


def creds_url(env, query="role=fort-urls-study"):
    return f"{env['hub'].url}/services/fort-credentials/api/v1/aws/credentials?{query}"


def get(env, user="alice", query="role=fort-urls-study", headers=None, token=None):
    h = auth(token or env["tokens"][user])
    h.update(headers or {})
    return requests.get(creds_url(env, query), headers=h, timeout=30)


def error_of(r) -> str:
    body = r.json()
    assert set(body) == {"error"}, body
    assert "Traceback" not in r.text
    return body["error"]["message"]


@pytest.fixture
def backend(env):
    b = env["app"].backend
    env["app"].issuer.cache.clear()
    env["app"].issuer.reset_rate_limit()
    b.failures.clear()
    b.down = False
    return b


def test_issue_returns_credential_process_json_and_session_policy(env, backend):
    before = backend.calls
    r = get(env)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"Version", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}
    assert body["Version"] == 1 and body["Expiration"].endswith("Z")
    assert backend.calls == before + 1
    req = backend.requests[-1]
    assert req.role_arn == "arn:aws:iam::123456789012:role/fort-urls-study"
    assert req.session_name == "fort-alice" and req.source_identity == "alice"
    assert req.tags == {"fort-user": "alice", "fort-group": "urls-study"}
    assert req.duration_seconds == 3600
    doc = json.loads(req.policy)
    resources = sorted(r for s in doc["Statement"] for r in _list(s["Resource"]))
    assert resources == [
        "arn:aws:s3:::fort-datasets",
        "arn:aws:s3:::fort-datasets/url_shares/*",
        "arn:aws:s3:::fort-user-data",
        "arn:aws:s3:::fort-user-data/users/alice/*",
    ]
    # audited before issuing, with the same session policy
    rec = env["app"].fort_store.audit.query(user="alice", action="credentials.issue", limit=1)[0]
    assert rec.decision == "allow" and rec.details["session_policy"] == req.policy
    assert rec.request_id == r.headers["X-Request-Id"]


def _list(v):
    return v if isinstance(v, list) else [v]


def test_wildcard_username_gets_no_credentials(env, backend):
    """#10 finding 2: the hub user ``a*`` (from ``a*@example.org``) was given a session policy on
    ``users/a*/*`` and ``ListBucket`` on ``users/a*/``: every user's prefix. Refused, audited,
    and STS is never called."""
    before = backend.calls
    r = get(env, "a*")
    assert r.status_code == 403, r.text
    message = error_of(r)
    assert "'a*' (not allowed: '*') is not an allowed username" in message
    assert "ask a fort admin" in message
    assert backend.calls == before
    rec = env["app"].fort_store.audit.query(user="a*", action="credentials.issue", limit=1)[0]
    assert rec.decision == "deny" and "'a*' (not allowed: '*')" in rec.reason
    assert rec.resource == "fort-urls-study"


def test_cached_until_margin_then_reissued(env, backend):
    first = get(env).json()
    calls = backend.calls
    assert get(env).json() == first
    assert backend.calls == calls
    app = env["app"]
    real_clock = app.clock
    app.clock = lambda: real_clock() + dt.timedelta(seconds=3600 - 299)
    try:
        again = get(env).json()
    finally:
        app.clock = real_clock
    assert again["AccessKeyId"] != first["AccessKeyId"]
    assert backend.calls == calls + 1


def test_single_flight(env, backend, monkeypatch):
    # the policy allows 60 requests a minute (tested below); this test is about single flight
    async def unlimited(*_):
        return None

    monkeypatch.setattr(env["app"].issuer, "rate_limit", unlimited)
    backend.latency = 0.5
    try:
        calls = backend.calls
        with concurrent.futures.ThreadPoolExecutor(100) as pool:  # a hundred at once
            results = list(pool.map(lambda _: get(env), range(100)))
    finally:
        backend.latency = 0.0
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert len({r.json()["AccessKeyId"] for r in results}) == 1
    assert backend.calls == calls + 1
    # one STS session, but every one of the 100 hand-overs has its own audit record
    audited = {
        rec.request_id
        for rec in env["app"].fort_store.audit.query(
            user="alice", action="credentials.issue", limit=1000
        )
        if rec.decision == "allow"
    }
    assert {r.headers["X-Request-Id"] for r in results} <= audited


def test_token_without_scope_is_refused(env, backend):
    hub = env["hub"]
    calls = backend.calls
    only_access = user_token(hub, "alice", [scopes.access(scopes.CREDENTIALS_SERVICE)])
    r = get(env, token=only_access)
    assert r.status_code == 403 and scopes.CREDENTIALS_AWS in error_of(r)
    no_access = user_token(hub, "alice", [scopes.CREDENTIALS_AWS])
    r = get(env, token=no_access)
    assert r.status_code == 403, r.text
    r = requests.get(creds_url(env), timeout=30)
    assert r.status_code == 401
    r = requests.get(creds_url(env), headers=auth("not-a-token"), timeout=30)
    assert r.status_code == 401
    assert backend.calls == calls  # none of the refused requests reached STS


def test_only_own_user(env, backend):
    r = get(env, query="role=fort-ads-study&user=bob")
    assert r.status_code == 400 and "own user" in error_of(r)
    r = get(env, query="role=fort-ads-study")  # alice is not in ads-study
    assert r.status_code == 403 and "not given to your groups" in error_of(r)


def test_unknown_role_non_member_and_expired(env, backend):
    calls = backend.calls
    r = get(env, query="role=fort-nope")
    assert r.status_code == 404 and "unknown role" in error_of(r)
    r = get(env, user="mallory")
    assert r.status_code == 403 and "[]" in error_of(r)
    r = get(env, user="erin")  # membership expired yesterday
    assert r.status_code == 403
    assert backend.calls == calls
    denies = env["app"].fort_store.audit.query(user="erin", action="credentials.issue")
    assert denies and denies[0].decision == "deny"


@pytest.mark.parametrize(
    "query",
    ["", "role=", "role=a&role=b", "role=%ff%fe", "role=../../etc", "role=" + "x" * 5000, "a=b"],
)
def test_malformed_query(env, backend, query):
    r = get(env, query=query)
    assert r.status_code == 400, r.text
    assert error_of(r)


def test_huge_header_is_refused_and_service_survives(env, backend):
    try:
        r = get(env, headers={"X-Big": "x" * 200_000})
        assert r.status_code in (400, 413, 431, 502, 503)
    except requests.ConnectionError:
        pass  # connection closed: also a refusal
    assert get(env).status_code == 200


def test_audit_down_means_503_and_no_sts_call(env, backend, monkeypatch):
    # only the audit log is down: the groups are read, the request is allowed, and then the
    # audit record cannot be committed, so STS must not be called
    app = env["app"]
    broken = Store("sqlite:////nonexistent-dir/x.sqlite", create=False)
    monkeypatch.setattr(app.fort_store, "audit", broken.audit)
    calls = backend.calls
    r = get(env)
    assert r.status_code == 503, r.text
    assert "the audit log is unavailable" in error_of(r)
    assert "unable to open" not in r.text  # the store's own error stays in the log
    assert backend.calls == calls


def test_cached_credentials_are_not_handed_over_unaudited(env, backend, monkeypatch):
    """Issue 10, finding 8: with the audit log down, cached credentials were still answered
    (200, unaudited). Every hand-over is audited first, or refused."""
    assert get(env).status_code == 200  # now cached
    audit = env["app"].fort_store.audit
    assert get(env).status_code == 200
    handed = audit.query(user="alice", action="credentials.issue", limit=1)[0]
    assert handed.details["cached"] is True and handed.decision == "allow"
    broken = Store("sqlite:////nonexistent-dir/x.sqlite", create=False)
    monkeypatch.setattr(env["app"].fort_store, "audit", broken.audit)
    calls = backend.calls
    r = get(env)
    assert r.status_code == 503, r.text
    assert "AccessKeyId" not in r.text and "SessionToken" not in r.text
    assert backend.calls == calls


def test_store_down_means_503_and_no_sts_call(env, backend, monkeypatch):
    app = env["app"]
    broken = Store("sqlite:////nonexistent-dir/x.sqlite", create=False)
    monkeypatch.setattr(app.fort_store, "engine", broken.engine)
    monkeypatch.setattr(app.fort_store, "audit", broken.audit)
    calls = backend.calls
    r = get(env)
    assert r.status_code == 503, r.text
    assert "store" in error_of(r)
    assert backend.calls == calls


def test_throttling_is_retried(env, backend):
    backend.failures = [StsError("Rate exceeded", True, "Throttling")] * 2
    calls = backend.calls
    r = get(env)
    assert r.status_code == 200
    assert backend.calls == calls + 3


def test_sts_down_without_cache_is_503(env, backend):
    backend.down = True
    calls = backend.calls
    r = get(env)
    assert r.status_code == 503 and "STS could not issue credentials" in error_of(r)
    assert backend.calls == calls + env["app"].sts_attempts


def test_sts_down_with_cache_serves_cached(env, backend):
    first = get(env).json()
    backend.down = True
    app = env["app"]
    real_clock = app.clock
    app.clock = lambda: real_clock() + dt.timedelta(seconds=3600 - 200)  # past the margin
    try:
        r = get(env)
    finally:
        app.clock = real_clock
    assert r.status_code == 200 and r.json()["AccessKeyId"] == first["AccessKeyId"]


def test_non_retryable_sts_error_is_503_at_once(env, backend):
    backend.failures = [StsError("STS AccessDenied: no", False, "AccessDenied")]
    calls = backend.calls
    r = get(env)
    assert r.status_code == 503 and "AccessDenied" in error_of(r)
    assert backend.calls == calls + 1


def test_rate_limit(env, backend):
    policy, app = env["policy"], env["app"]
    text = policy.read_text()

    def per_minute(p):
        return p.default_quota.credential_requests_per_minute

    try:
        rewrite_policy(policy, app, text.replace("credential_requests_per_minute: 60",
                                                 "credential_requests_per_minute: 3"),
                       lambda p: per_minute(p) == 3)  # fmt: skip
        codes = [get(env).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] or 429 in codes
        r = get(env)
        assert r.status_code == 429
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert "limit" in error_of(r)
        # another user is not affected
        app.issuer.reset_rate_limit("bob")
        assert get(env, user="bob", query="role=fort-ads-study").status_code == 200
    finally:
        rewrite_policy(policy, app, text, lambda p: per_minute(p) == 60)


def test_a_member_removed_from_the_policy_file_loses_credentials_at_once(env, backend):
    """bob is a static member of ads-study; fort-groups mirrored that into the store
    (``source=policy``). The file drops him: the next request is refused, before any mirror."""
    policy, app = env["policy"], env["app"]
    Memberships(app.fort_store).upsert(
        "ads-study", "bob", source="policy", updated_by="fort-groups"
    )
    assert get(env, user="bob", query="role=fort-ads-study").status_code == 200
    text = policy.read_text()

    def has_bob(p):
        return "bob" in {m.username for m in p.groups["ads-study"].members}

    rewrite_policy(policy, app, text.replace("members: [bob, carol]", "members: [carol]"),
                   lambda p: not has_bob(p))  # fmt: skip
    try:
        calls = backend.calls
        r = get(env, user="bob", query="role=fort-ads-study")
        assert r.status_code == 403 and "not given to your groups" in error_of(r)
        assert backend.calls == calls  # no STS call
    finally:
        rewrite_policy(policy, app, text, has_bob)


def test_a_session_issued_while_a_grant_is_withdrawn_is_not_served_from_the_cache(env, backend):
    """The policy gives urls-study ads_targeting too; alice asks, and while STS is issuing her
    session (with ads_targeting in its session policy) the grant is withdrawn. That session
    finishes after the policy change cleared the cache: it must not be handed over later as
    the cached session of the narrower policy (found in review: it was, for up to 55 min)."""
    policy, app = env["policy"], env["app"]
    text = policy.read_text()
    wider = text.replace(
        "    datasets: [url_shares]\n", "    datasets: [url_shares, ads_targeting]\n"
    )
    assert wider != text

    def wide(p):
        return any("ads_targeting" in g.datasets for g in p.grants if g.group == "urls-study")

    rewrite_policy(policy, app, wider, wide)
    try:
        backend.latency = 1.5
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            during = pool.submit(get, env)
            time.sleep(0.5)  # the wider session is being issued
            rewrite_policy(policy, app, text, lambda p: not wide(p))
            assert during.result().status_code == 200
    finally:
        backend.latency = 0.0
        if wide(app.fort_policy):  # (a rewrite of the same text would clear the cache again)
            rewrite_policy(policy, app, text, lambda p: not wide(p))
    assert "ads_targeting" in backend.requests[-1].policy  # the session issued before
    calls = backend.calls
    r = get(env)
    assert r.status_code == 200, r.text
    assert backend.calls == calls + 1, "served the wider session from the cache"
    assert "ads_targeting" not in backend.requests[-1].policy
    assert "url_shares" in backend.requests[-1].policy


def test_service_tokens_get_no_credentials(env, backend):
    hub = env["hub"]
    r = requests.get(creds_url(env), headers=hub.admin_headers, timeout=30)
    assert r.status_code == 403


def test_unknown_path_is_json_404(env):
    r = requests.get(f"{env['hub'].url}/services/fort-credentials/nope", timeout=30)
    assert r.status_code == 404 and error_of(r)
