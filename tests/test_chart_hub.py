"""The chart's own hub config, run: helm renders the real Z2JH chart with our values, and
tests/chart_pod.py runs the hub pod from the rendered Secret and ConfigMap (the chart's
jupyterhub_config.py and z2jh.py unmodified, the Deployment's environment, fort-hub from this
venv, PostgreSQL, the Kubernetes API double as the cluster) in a private mount and network
namespace. Needs root and ``unshare`` (CI has both): skipped elsewhere, failed under CI.

The production values are used as they are, plus what an admin replaces and CI cannot have:
the database URLs (PostgreSQL on this machine instead of RDS) and the Meta app (the Facebook
stand-in's app id and URLs); see ``ci_overlay``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys

import pytest
import yaml

from fort_hub import scopes
from tests.chart import VALUES, VALUES_DEV, render
from tests.conftest import IN_CI, PG_URL, require_postgres

pytestmark = [pytest.mark.slow, pytest.mark.hub, pytest.mark.postgres]

STANDIN = "http://127.0.0.1:9010"
APP_ID, APP_SECRET = "1234567890123456", "dev-facebook-app-secret"  # the stand-in's test app
RESEARCHER = "alice@example.org"  # production values: the username is the Facebook email
POLICY = {
    "version": 1,
    "groups": [
        {"name": "urls-study", "members": [RESEARCHER]},
        {"name": "admins", "members": ["admin@example.org"]},
    ],
    "datasets": [
        {
            "name": "url_shares",
            "engine": "duckdb",
            "tables": ["url_shares"],
            "location": {"paths": {"url_shares": "/srv/data/url_shares.parquet"}},
        },
    ],
    "grants": [{"group": "urls-study", "datasets": ["url_shares"], "actions": ["query"]}],
    "profiles": [
        {
            "slug": "python",
            "display_name": "Python",
            "default": True,
            "image": "ghcr.io/fort-hub/fort-hub-user:0.1.0",
        },
    ],
    "aws": {
        "region": "us-east-1",
        "bucket": "fort-user-data",
        "roles": {"urls-study": "arn:aws:iam::123456789012:role/fort-urls-study"},
    },
}


def require_namespaces() -> None:
    problem = ""
    if os.geteuid() != 0:
        problem = "needs root (a private mount and network namespace)"
    elif not shutil.which("unshare") or not shutil.which("openssl"):
        problem = "needs unshare (util-linux) and openssl"
    if problem:
        if IN_CI:
            pytest.fail(f"the chart hub test {problem}; CI runs as root")
        pytest.skip(f"the chart hub test {problem}")


@pytest.fixture
def schemas():
    """Two fresh PostgreSQL schemas (the hub database, the fort store), dropped afterwards."""
    require_postgres()
    import psycopg

    names = ["chart_hub_" + secrets.token_hex(4), "chart_fort_" + secrets.token_hex(4)]
    raw = PG_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(raw, autocommit=True) as conn:
        for n in names:
            conn.execute(f'CREATE SCHEMA "{n}"')
    yield names
    with psycopg.connect(raw, autocommit=True) as conn:
        for n in names:
            conn.execute(f'DROP SCHEMA "{n}" CASCADE')


def ci_overlay(tmp_path, hub_schema: str, fort_schema: str):
    """What an admin replaces in values.yaml, with what CI has instead."""
    sock = "host=/run/postgresql"
    overlay = {
        "hub": {
            "db": {
                "url": f"postgresql+psycopg://postgres@/test?{sock}"
                f"&options=-csearch_path%3D{hub_schema}"
            },
            "extraEnv": {
                "FORT_STORE_URL": {
                    "value": (
                        f"postgresql+psycopg://postgres:$(FORT_DB_PASSWORD)@/test?{sock}"
                        f"&options=-csearch_path%3D{fort_schema}"
                    )
                }
            },
            "config": {
                "FacebookOAuthenticator": {
                    "client_id": APP_ID,
                    "dialog_url": STANDIN,
                    "graph_url": STANDIN,
                }
            },
        }
    }
    path = tmp_path / "ci-values.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


def admin_objects() -> list[dict]:
    """What docs/deploy-eks.md has the admin create before installing: the Secret and the
    policy ConfigMap."""
    return [
        {
            "kind": "Secret",
            "metadata": {"name": "fort-secrets"},
            "stringData": {
                "facebook-app-secret": APP_SECRET,
                "fort-db-password": "ci-fort-db-password",
                "services-cookie-secret": secrets.token_hex(32),
            },
        },
        {
            "kind": "ConfigMap",
            "metadata": {"name": "fort-policy"},
            "data": {"policy.yaml": yaml.safe_dump(POLICY)},
        },
    ]


def run_pod(tmp_path, docs, scenario: str, **extra) -> dict:
    spec = {
        "docs": docs,
        "objects": admin_objects(),
        "workdir": str(tmp_path),
        "scenario": scenario,
        **extra,
    }
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [
        "unshare",
        "--mount",
        "--net",
        "--pid",
        "--fork",
        "--kill-child",
        sys.executable,
        "-m",
        "tests.chart_pod",
        str(spec_path),
    ]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads((tmp_path / "result.json").read_text())
    if "error" in result:
        logs = "\n".join(f"== {k}\n{v[-6000:]}" for k, v in result["logs"].items())
        pytest.fail(f"{result['error']}\n{logs}")
    return result


def expected_service_scopes() -> dict[str, set[str]]:
    """Each service's role in scopes.load_roles(), expanded as JupyterHub expands a token's
    scopes (custom scopes have no subscopes)."""
    from jupyterhub.scopes import expand_scopes

    roles = {r["name"]: r for r in scopes.load_roles()}
    out = {}
    for name in scopes.SERVICES:
        raw = set(roles[f"{name}-service"]["scopes"])
        custom = {s for s in raw if s.startswith("custom:")}
        out[name] = set(expand_scopes(frozenset(raw - custom))) | custom
    return out


def test_production_values_run_the_hub_with_fort(tmp_path, schemas):
    require_namespaces()
    overlay = ci_overlay(tmp_path, *schemas)
    docs = render([VALUES, overlay], sets=("hub.db.password=ci-hub-db-password",))
    result = run_pod(tmp_path, docs, "prod", identity="alice", profile="python", standin=True)
    hub_log = result["logs"]["hub"]
    assert "Using Authenticator: fort_hub.authenticators.facebook.FacebookOAuthenticator" in hub_log
    assert "Using Spawner: fort_hub.spawners.kubernetes.FortKubeSpawner" in hub_log
    assert "No allow config found" not in hub_log
    # fort-hub is turned on by the values alone (hub.extraConfig), no snippet files in the image
    assert "Loading extra config: fort-hub" in hub_log
    assert "jupyterhub_config.d config" not in hub_log
    for name, want in expected_service_scopes().items():
        got = result["service_models"][name]
        assert got["status"] == 200 and got["model"]["kind"] == "service"
        assert set(got["model"]["scopes"]) == want, name
    assert result["callback_url"] == "https://fort.example.org/hub/oauth_callback"
    assert result["login"]["status"] == 302, result["login"]
    assert result["user"]["name"] == RESEARCHER
    assert result["services_answer"]["fort-groups"]["status"] == 200
    me = json.loads(result["services_answer"]["fort-groups"]["body"])
    assert "urls-study" in json.dumps(me)
    assert result["services_answer"]["fort-query"]["status"] == 200
    assert result["spawn"]["status"] in (201, 202), result["spawn"]
    assert_pod_as_documented(result["pod"])
    assert "Bearer hub-service-account-token" in result["k8s_authorizations"]


def assert_pod_as_documented(pod: dict) -> None:
    """What docs/deploy-eks.md promises of a notebook pod with values.yaml (vending mode)."""
    assert pod is not None, "no pod reached the Kubernetes API"
    spec, meta = pod["spec"], pod["metadata"]
    (nb,) = [c for c in spec["containers"] if c["name"] == "notebook"]
    env = {e["name"]: e.get("value") for e in nb.get("env", [])}
    assert meta["namespace"] == "fort"
    assert nb["image"] == "ghcr.io/fort-hub/fort-hub-user:0.1.0"  # the policy's profile
    # the node's instance role is out of reach: iptables drops the metadata service
    (block,) = [c for c in spec["initContainers"] if c["name"] == "block-cloud-metadata"]
    assert "169.254.169.254" in block["command"] and "DROP" in block["command"]
    labels = meta["labels"]
    assert labels["hub.jupyter.org/network-access-hub"] == "true"
    assert labels["hub.jupyter.org/network-access-proxy-http"] == "true"
    # vending: no cloud identity in the pod, sessions come from fort-credentials
    assert "AWS_ROLE_ARN" not in env and "AWS_ACCESS_KEY_ID" not in env
    assert env["FORT_USER"] == RESEARCHER
    assert env["FORT_USER_PREFIX"] == f"s3://fort-user-data/users/{RESEARCHER}/"
    assert env["AWS_CONFIG_FILE"] == "/etc/fort/aws/config"
    assert env["FORT_GROUPS_URL"].startswith("http://proxy-http:8000/services/fort-groups")
    # singleuser.memory.limit: 4G (KubeSpawner counts G as 2**30 bytes)
    assert int(nb["resources"]["limits"]["memory"]) == 4 * 2**30


def test_the_chart_default_authenticator_with_fort_services_refuses_to_start(tmp_path, schemas):
    """Findings 7 and 6 through the chart: hub.config without fort's classes (the chart's
    defaults: DummyAuthenticator and plain KubeSpawner) and no policy file, with the fort
    services -> the hub exits 1 naming each problem, before any service starts."""
    require_namespaces()
    overlay = ci_overlay(tmp_path, *schemas)
    docs = render(
        [VALUES, overlay],
        sets=(
            "hub.db.password=ci-hub-db-password",
            "hub.config.JupyterHub.authenticator_class=dummy",
            "hub.config.JupyterHub.spawner_class=kubespawner.KubeSpawner",
            # finding 6: no policy file anywhere -> said at start, not by a dying service
            "hub.config.FortSettings.policy_file=null",
            "custom.fort.policyFile=null",
        ),
    )
    result = run_pod(tmp_path, docs, "refused")
    assert result["hub_exit"] == 1
    log = result["logs"]["hub"]
    assert "FATAL: fort-hub: this hub runs fort services" in log
    assert "c.JupyterHub.authenticator_class is 'dummy'" in log
    assert "c.JupyterHub.spawner_class is 'kubespawner.KubeSpawner'" in log
    assert "fort-query would start without a policy file" in log
    assert "Starting managed service fort-" not in log  # refused before anything served


def test_dev_values_end_to_end(tmp_path):
    """values.yaml + values-dev.yaml: SQLite, the stand-in sidecar, the inline policy. Login
    as the policy's `alice`, spawn, and from the notebook a query and AWS credentials. CI's
    one substitution: moto plays the sandbox AWS account the dev values point at."""
    require_namespaces()
    overlay = tmp_path / "ci-aws.yaml"
    overlay.write_text(yaml.safe_dump({"hub": {"extraEnv": {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5555",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}}}))  # fmt: skip
    docs = render([VALUES, VALUES_DEV, overlay])
    result = run_pod(tmp_path, docs, "dev", identity="alice", profile="python", moto=True,
                     datasets="/srv/jupyterhub/data")  # fmt: skip
    assert result["callback_url"] == "http://127.0.0.1:8000/hub/oauth_callback"
    assert result["login"]["status"] == 302, result["login"]
    assert result["user"]["name"] == "alice"  # strip_email_domains: the policy's name
    assert result["spawn"]["status"] in (201, 202), result["spawn"]
    assert result["ready"]["servers"][""]["ready"] is True
    env = {e["name"]: e.get("value") for e in result["pod"]["spec"]["containers"][0]["env"]}
    assert env["FORT_QUERY_URL"].startswith("http://proxy-public/services/fort-query")
    query = result["query"]
    assert query["rc"] == 0, query
    assert json.loads(query["stdout"].strip().splitlines()[-1]) == [{"n": 1000}]
    creds = result["credentials"]
    assert creds["rc"] == 0, creds
    session = json.loads(creds["stdout"])
    assert session["Version"] == 1 and session["AccessKeyId"] and session["SessionToken"]
