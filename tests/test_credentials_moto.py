"""The whole path against moto's STS and S3: a user's hub token -> a REAL hub -> the hub-managed
fort-credentials service (``python -m fort_hub.services.credentials``, boto3 StsBackend, moto via
``AWS_ENDPOINT_URL``) -> STS; then boto3 in a subprocess with the generated AWS config
(``credential_process = fort-aws-credentials --role NAME``) writes to the user's own prefix.

moto does not enforce session policies, so the session policy document itself is asserted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import pytest
import requests

from fort_hub import scopes
from fort_hub.spawners.identity import aws_config_text
from fort_hub.store import Store
from tests.conftest import EXAMPLE_POLICY
from tests.fortsvc import auth, make_users, user_token
from tests.hubproc import RunningHub, free_port, wait_http

pytestmark = pytest.mark.hub
BIN = Path(sys.executable).parent
DUMMY_KEYS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def moto():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    yield url
    server.stop()


def aws(moto, service):
    return boto3.client(
        service, endpoint_url=moto, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory, moto):
    work = tmp_path_factory.mktemp("motohub")
    policy = work / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, policy)
    store_url = f"sqlite:///{work / 'fort.sqlite'}"
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}]}  # fmt: skip
    for role in ("fort-urls-study", "fort-ads-study"):
        aws(moto, "iam").create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
    aws(moto, "s3").create_bucket(Bucket="fort-user-data")
    port = free_port()
    service = {
        "name": scopes.CREDENTIALS_SERVICE,
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-m", "fort_hub.services.credentials"],
        "environment": {
            "FORT_POLICY_FILE": str(policy), "FORT_STORE_URL": store_url,
            "AWS_ENDPOINT_URL": moto, **DUMMY_KEYS,
        },
    }  # fmt: skip
    groups = {
        "name": scopes.GROUPS_SERVICE,
        "url": f"http://127.0.0.1:{free_port()}",
        "command": [sys.executable, "-m", "fort_hub.services.groups",
                    "--GroupsService.reconcile_interval=0.5"],
        "environment": {"FORT_POLICY_FILE": str(policy), "FORT_STORE_URL": store_url,
                        "FORT_HUB_GROUPS": "true"},  # the hub copy, which the test reads
    }  # fmt: skip
    hub = RunningHub(work / "hub")
    hub.extra_config = f"""
from fort_hub import scopes
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.custom_scopes = scopes.CUSTOM_SCOPES
c.JupyterHub.load_roles = c.JupyterHub.load_roles + scopes.load_roles(services=("fort-credentials", "fort-groups"))
c.JupyterHub.services = c.JupyterHub.services + [{service!r}, {groups!r}]
"""
    with hub:
        make_users(hub, "alice", "bob")
        base = f"{hub.url}/services/fort-credentials/"
        wait_http(base + "api/v1/aws/credentials", timeout=60, ok=lambda r: r.status_code == 401)
        tok = user_token(hub, "alice", [scopes.access("fort-credentials"), scopes.CREDENTIALS_AWS])
        yield {"hub": hub, "base": base, "token": tok, "store_url": store_url, "work": work}


def test_token_to_sts_to_s3_via_credential_process(env, moto):
    work = env["work"]
    cfg = work / "aws_config"
    cfg.write_text(aws_config_text({"fort-urls-study": "arn:aws:iam::123456789012:role/fort-urls-study"},
                                   region="us-east-1"))  # fmt: skip
    script = textwrap.dedent(
        """
        import boto3
        s3 = boto3.client("s3")
        s3.put_object(Bucket="fort-user-data", Key="users/alice/hello.txt", Body=b"hi")
        print(boto3.client("sts").get_caller_identity()["Arn"])
        """
    )
    env_vars = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env_vars.update(
        AWS_CONFIG_FILE=str(cfg),
        AWS_SHARED_CREDENTIALS_FILE=str(work / "no-credentials"),
        AWS_ENDPOINT_URL=moto,
        JUPYTERHUB_API_TOKEN=env["token"],
        FORT_SERVICES_URL=f"{env['hub'].url}/services/",
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
    )
    p = subprocess.run([sys.executable, "-c", script], env=env_vars, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr
    arn = p.stdout.strip()
    assert arn.endswith(":assumed-role/fort-urls-study/fort-alice"), arn
    body = aws(moto, "s3").get_object(Bucket="fort-user-data", Key="users/alice/hello.txt")["Body"]
    assert body.read() == b"hi"
    # what STS was asked for, as audited before the call
    store = Store(env["store_url"])
    rec = store.audit.query(user="alice", action="credentials.issue", limit=1)[0]
    store.dispose()
    assert rec.decision == "allow" and rec.resource.endswith(":role/fort-urls-study")
    doc = json.loads(rec.details["session_policy"])
    assert doc == {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "OwnPrefix", "Effect": "Allow",
             "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
             "Resource": ["arn:aws:s3:::fort-user-data/users/alice/*"]},
            {"Sid": "OwnPrefixList0", "Effect": "Allow", "Action": "s3:ListBucket",
             "Resource": "arn:aws:s3:::fort-user-data",
             "Condition": {"StringLike": {"s3:prefix": ["users/alice/", "users/alice/*"]}}},
            {"Sid": "DatasetRead", "Effect": "Allow", "Action": ["s3:GetObject"],
             "Resource": ["arn:aws:s3:::fort-datasets/url_shares/*"]},
            {"Sid": "DatasetReadList0", "Effect": "Allow", "Action": "s3:ListBucket",
             "Resource": "arn:aws:s3:::fort-datasets",
             "Condition": {"StringLike": {"s3:prefix": ["url_shares/", "url_shares/*"]}}},
        ],
    }  # fmt: skip
    assert rec.details["session_name"] == "fort-alice"


def test_credential_process_errors_are_one_line(env):
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JUPYTERHUB_", "FORT_"))
    }
    cmd = [str(BIN / "fort-aws-credentials"), "--role", "fort-ads-study"]
    cases = [
        ({"JUPYTERHUB_API_TOKEN": env["token"], "FORT_CREDENTIALS_URL": env["base"]}, "403"),
        ({"JUPYTERHUB_API_TOKEN": "bogus", "FORT_CREDENTIALS_URL": env["base"]}, "401"),
        ({"FORT_CREDENTIALS_URL": env["base"]}, "JUPYTERHUB_API_TOKEN"),
        ({"JUPYTERHUB_API_TOKEN": env["token"]}, "FORT_CREDENTIALS_URL"),
        ({"JUPYTERHUB_API_TOKEN": env["token"], "FORT_CREDENTIALS_URL": f"http://127.0.0.1:{free_port()}/"},
         "cannot reach"),
    ]  # fmt: skip
    for extra, expect in cases:
        p = subprocess.run(cmd, env={**base, **extra}, capture_output=True, text=True, timeout=60)
        assert p.returncode == 1, (extra, p.stdout)
        assert p.stdout == ""
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fort-aws-credentials: "), p.stderr
        assert expect in lines[0], lines[0]
    # usage errors (no --role, an unknown flag) are one line and exit 1 too
    for args in ([], ["--role"], ["--role", "x", "--bogus"]):
        p = subprocess.run([cmd[0], *args], env=base, capture_output=True, text=True, timeout=60)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and p.stdout == "", (args, p.stderr)
        assert len(lines) == 1 and lines[0].startswith("fort-aws-credentials: "), p.stderr
        assert "--role NAME" in lines[0]


def test_direct_calls_are_cached(env):
    url = env["base"] + "api/v1/aws/credentials?role=fort-urls-study"
    first = requests.get(url, headers=auth(env["token"]), timeout=60)
    second = requests.get(url, headers=auth(env["token"]), timeout=60)
    assert first.status_code == second.status_code == 200, first.text
    assert first.json() == second.json()
    assert first.json()["AccessKeyId"].startswith("ASIA")
    store = Store(env["store_url"])
    issued = store.audit.query(user="alice", action="credentials.issue")
    store.dispose()
    sessions = [r for r in issued if r.decision == "allow" and not r.details.get("cached")]
    assert len(sessions) == 1  # one STS session for all of alice's requests so far
    handed = [r for r in issued if r.decision == "allow" and r.details.get("cached")]
    assert handed  # the cached hand-over is audited too
    assert [r.resource for r in issued if r.decision == "deny"] == ["fort-ads-study"]


def test_hub_managed_groups_service_reconciles(env):
    """``python -m fort_hub.services.groups`` started by the hub fills the policy's groups (with
    the hub copy on)."""
    hub = env["hub"]
    deadline = time.monotonic() + 60
    while True:
        r = requests.get(hub.api("groups/urls-study"), headers=hub.admin_headers, timeout=30)
        if r.status_code == 200 and r.json()["users"] == ["alice"]:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.3)
    assert r.json()["properties"]["fort-groups"] == {"managed": True}
