"""One contract suite for every STS backend (boto3 StsBackend against moto, and the stub), plus
the pure session-policy builders compared as data."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from botocore.stub import Stubber

from fort_hub.policy import parse_policy
from fort_hub.services.credentials import (
    MAX_SESSION_POLICY_CHARS,
    AssumeRoleRequest,
    SessionPolicyTooLarge,
    StsBackend,
    StsError,
    StubStsBackend,
    packed,
    session_policy,
    sts_name,
)
from fort_hub.services.credentials.sessionpolicy import session_tags
from tests.hubproc import free_port

ARN = "arn:aws:iam::123456789012:role/fort-urls-study"


@pytest.fixture
def aws_env(monkeypatch, moto_url):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return moto_url


def _break_sts(backend, monkeypatch):
    if isinstance(backend, StubStsBackend):
        backend.down = True
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        backend._clients.clear()


@pytest.fixture(params=["boto3-moto", "stub"])
def backend(request, aws_env):
    if request.param == "stub":
        return StubStsBackend()
    return StsBackend(connect_timeout=2, read_timeout=5)


def request_for(duration=3600):
    return AssumeRoleRequest(
        role_arn=ARN, session_name="fort-alice", source_identity="alice",
        policy=json.dumps({"Version": "2012-10-17", "Statement": []}),
        duration_seconds=duration, tags={"fort-user": "alice", "fort-group": "urls-study"},
    )  # fmt: skip


async def test_contract_assume_role(backend):
    before = backend.calls
    now = dt.datetime.now(dt.UTC)
    creds = await backend.assume_role(request_for(1800))
    assert backend.calls == before + 1
    assert creds.access_key_id and creds.secret_access_key and creds.session_token
    assert creds.expiration.tzinfo is not None
    assert abs((creds.expiration - now).total_seconds() - 1800) < 120
    out = creds.process_json()
    assert out["Version"] == 1 and out["Expiration"].endswith("Z")
    other = await backend.assume_role(request_for())
    assert other.access_key_id != creds.access_key_id


async def test_contract_unreachable_is_retryable(backend, monkeypatch):
    _break_sts(backend, monkeypatch)
    with pytest.raises(StsError) as e:
        await backend.assume_role(request_for())
    assert e.value.retryable is True


@pytest.mark.parametrize(
    ("code", "retryable"),
    [("Throttling", True), ("RequestLimitExceeded", True), ("AccessDenied", False),
     ("MalformedPolicyDocument", False)],
)  # fmt: skip
def test_boto3_error_codes_map_to_contract(aws_env, code, retryable):
    backend = StsBackend()
    client = backend.client("us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("assume_role", service_error_code=code, service_message="nope")
        with pytest.raises(StsError) as e:
            backend.assume_role_blocking(request_for())
    assert e.value.retryable is retryable and e.value.code == code


# ----- pure builders -------------------------------------------------------------------------

POLICY = """
version: 1
groups:
  - {name: study, members: [alice]}
  - {name: writers, members: [alice]}
datasets:
  - {name: a, engine: duckdb, location: {database: x.db}, s3_prefixes: [s3://data-a/a/, s3://data-b/a2/]}
  - {name: b, engine: duckdb, location: {database: y.db}, s3_prefixes: [s3://data-a/b/]}
grants:
  - {group: study, datasets: [a, b], actions: [s3:read]}
  - {group: writers, datasets: [b], actions: [s3:read, s3:write]}
aws:
  bucket: users-bucket
  user_prefix: home/{username}/
  roles: {study: "arn:aws:iam::123456789012:role/study"}
"""


def test_session_policy_read_grants_and_own_prefix():
    p = parse_policy(POLICY)
    doc = session_policy(p, "alice", ["study"])
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert by_sid["OwnPrefix"]["Resource"] == ["arn:aws:s3:::users-bucket/home/alice/*"]
    assert by_sid["DatasetRead"]["Resource"] == [
        "arn:aws:s3:::data-a/a/*", "arn:aws:s3:::data-a/b/*", "arn:aws:s3:::data-b/a2/*",
    ]  # fmt: skip
    assert by_sid["DatasetReadList0"]["Condition"]["StringLike"]["s3:prefix"] == [
        "a/", "a/*", "b/", "b/*",
    ]  # fmt: skip
    assert by_sid["DatasetReadList1"]["Resource"] == "arn:aws:s3:::data-b"
    assert "DatasetWrite" not in by_sid
    doc2 = session_policy(p, "alice", ["writers"])
    assert {s["Sid"] for s in doc2["Statement"]} >= {"DatasetWrite", "DatasetRead"}
    assert {s["Sid"]: s for s in doc2["Statement"]}["DatasetWrite"]["Action"] == ["s3:PutObject"]


def test_session_policy_without_anything_denies_everything():
    p = parse_policy(POLICY.replace("  bucket: users-bucket\n", ""))
    doc = session_policy(p, "alice", [])
    assert doc["Statement"] == [
        {"Sid": "Nothing", "Effect": "Deny", "Action": "*", "Resource": "*"}
    ]


def test_session_policy_size_limit_has_a_clear_error():
    many = "\n".join(
        f"  - {{name: d{i}, engine: duckdb, location: {{database: x.db}}, "
        f"s3_prefixes: [s3://bucket-with-a-long-name-{i}/some/deep/prefix/for/dataset/{i}/]}}"
        for i in range(30)
    )
    text = POLICY.replace(
        "  - {name: a,", many + "\n  - {name: a,"
    ).replace("datasets: [a, b], actions: [s3:read]", "datasets: [a, b, " + ", ".join(f"d{i}" for i in range(30)) + "], actions: [s3:read]")  # fmt: skip
    p = parse_policy(text)
    doc = session_policy(p, "alice", ["study"])
    with pytest.raises(SessionPolicyTooLarge) as e:
        packed(doc)
    assert f"limit of {MAX_SESSION_POLICY_CHARS}" in str(e.value)
    small = packed(session_policy(parse_policy(POLICY), "alice", ["study"]))
    assert len(small) <= MAX_SESSION_POLICY_CHARS and " " not in small


@pytest.mark.parametrize(
    ("user", "prefix", "expect"),
    [
        ("alice", "fort-", "fort-alice"),
        ("a.b@example.org", "fort-", "fort-a.b@example.org"),
        ("x", "", "x-"),
    ],
)
def test_sts_name_keeps_valid_names(user, prefix, expect):
    name = sts_name(user, prefix)
    assert name.startswith(expect[:2]) and 2 <= len(name) <= 64
    if len(user + prefix) >= 2:
        assert name == expect


def test_sts_name_sanitizes_and_keeps_names_distinct():
    a, b = sts_name("jo hn/x", "fort-"), sts_name("jo?hn/x", "fort-")
    c, d = sts_name("josé", "fort-"), sts_name("张伟")  # STS takes ASCII only
    for n in (a, b, c, d):
        assert re.fullmatch(r"[A-Za-z0-9_+=,.@-]{2,64}", n), n
    assert a != b and c.startswith("fort-jos-") and c != sts_name("josè", "fort-")
    long = sts_name("u" * 200, "fort-")
    assert len(long) == 64 and long != sts_name("u" * 199, "fort-")


def test_session_tags_sanitized():
    assert session_tags("alice", "urls-study") == {"fort-user": "alice", "fort-group": "urls-study"}
    assert session_tags("a<b>", "g")["fort-user"] == "a-b-"
