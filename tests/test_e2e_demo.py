"""End to end through a running ``fort-hub demo`` without a browser: alice signs in through the
Facebook stand-in, starts a server, and with her notebook's own token queries a dataset she is
granted (allowed) and one she is not (refused with the reason), writes to her S3 prefix through
boto3's credential_process, and runs the shipped getting-started notebook. The session policy
fort-credentials used names only her prefix and her datasets; the audit chain verifies."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
import requests
import yaml

from fort_hub.dev.demo import READY_LINE
from fort_hub.store import Store
from fort_hub.store.auditsearch import is_subject
from tests.clientstack import require_r
from tests.fbflow import login
from tests.hubproc import free_port

pytestmark = [pytest.mark.hub, pytest.mark.slow]

CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, boto3
    from fort_hub.client import FortClient, FortQueryError
    out = {}
    fort = FortClient()
    out["datasets"] = sorted(d["name"] for d in fort.datasets())
    t = fort.query("SELECT country, count(*) AS n FROM url_shares GROUP BY country", dataset="url_shares")
    out["countries"] = t.num_rows
    out["rows"] = sum(t.column("n").to_pylist())
    try:
        fort.query("SELECT count(*) FROM ads_targeting", dataset="ads_targeting")
        out["refused"] = None
    except FortQueryError as e:
        out["refused"] = [e.status, str(e)]
    s3 = boto3.client("s3")
    s3.put_object(Bucket="fort-user-data", Key="users/alice/e2e/hello.txt", Body=b"hello")
    out["arn"] = boto3.client("sts").get_caller_identity()["Arn"]
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def alice(fort_demo):
    s = fort_demo.login("alice")
    fort_demo.spawn(s, "alice", "python")
    env = fort_demo.server_env("alice")
    yield {"session": s, "env": env}
    fort_demo.stop_server(s, "alice")


def moto_s3(fort_demo, env):
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_demo_prints_url_and_identities(fort_demo):
    out = fort_demo.output
    assert f"{READY_LINE} {fort_demo.url}/" in out
    assert "dave    no study group" in out
    assert "alice   groups urls-study" in out and "query url_shares;" in out
    assert "carol   groups urls-study,ads-study; membership urls-study through 2031-12-31" in out
    state = fort_demo.state
    assert (state / "policy.yaml").exists() and (state / "data" / "url_shares.parquet").exists()
    assert requests.get(fort_demo.url + "/hub/login", timeout=30).status_code == 200


def test_notebook_environment_is_alices(alice):
    env = alice["env"]
    assert env["FORT_USER"] == "alice" and env["FORT_GROUPS"] == "urls-study"
    assert env["FORT_USER_PREFIX"] == "s3://fort-user-data/users/alice/"
    assert env["FORT_QUERY_URL"].endswith("/services/fort-query/")
    with open(env["AWS_CONFIG_FILE"]) as f:
        config = f.read()
    assert "credential_process" in config and "--role fort-urls-study" in config
    assert "fort-ads-study" not in config
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env


def test_client_with_alices_server_token(fort_demo, alice):
    r = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT],
        env=alice["env"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["datasets"] == ["url_shares"]
    assert out["rows"] == fort_demo.rows and out["countries"] > 5
    status, message = out["refused"]
    assert status == 403
    assert "ads_targeting" in message and "no grant gives 'query'" in message
    assert out["arn"].endswith(":assumed-role/fort-urls-study/fort-alice")
    body = moto_s3(fort_demo, alice["env"]).get_object(
        Bucket="fort-user-data", Key="users/alice/e2e/hello.txt"
    )["Body"]
    assert body.read() == b"hello"


def test_getting_started_notebook_runs(fort_demo, alice, tmp_path):
    notebook = fort_demo.state / "users" / "alice" / "examples" / "getting-started.ipynb"
    assert notebook.exists()  # copied by the demo's pre-spawn hook
    out = tmp_path / "executed.ipynb"
    r = subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute", str(notebook)]
        + ["--output", str(out), "--ExecutePreprocessor.timeout=120"],
        env=alice["env"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    cells = json.loads(out.read_text())["cells"]
    text = "\n".join(
        "".join(o.get("text", "")) + json.dumps(o.get("data", {}))
        for c in cells
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    )
    assert "refused:" in text and "ads_targeting" in text
    assert "wrote s3://fort-user-data/users/alice/results/shares_by_month.csv" in text
    assert "image/png" in text  # the plot
    # the noise-corrected fit ran inside the warehouse: its table, next to the naive one
    assert "corrected" in text and "naive OLS" in text and "P>|z|" in text
    keys = moto_s3(fort_demo, alice["env"]).list_objects_v2(
        Bucket="fort-user-data", Prefix="users/alice/results/"
    )["Contents"]
    assert [k["Key"] for k in keys] == ["users/alice/results/shares_by_month.csv"]


def test_getting_started_r_notebook_runs_on_the_r_kernel(fort_demo, alice, tmp_path):
    require_r(("IRkernel", "httr2", "jsonlite"))
    env = alice["env"]
    # her notebook server offers the R kernel the demo registered
    specs = requests.get(
        f"{fort_demo.url}{env['JUPYTERHUB_SERVICE_PREFIX']}api/kernelspecs",
        headers={"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"},
        timeout=30,
    ).json()["kernelspecs"]
    assert specs["ir"]["spec"]["language"] == "R"
    notebook = fort_demo.state / "users" / "alice" / "examples" / "getting-started-r.ipynb"
    assert notebook.exists()  # copied by the demo's pre-spawn hook, R being installed
    out = tmp_path / "executed-r.ipynb"
    r = subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute", str(notebook)]
        + ["--output", str(out), "--ExecutePreprocessor.timeout=120"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    executed = json.loads(out.read_text())
    assert executed["metadata"]["kernelspec"]["name"] == "ir"
    text = "\n".join(
        "".join(o.get("text", "")) + json.dumps(o.get("data", {}))
        for c in executed["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    )
    assert "urls-study" in text and "url_shares" in text
    assert "refused: you may not query dataset 'ads_targeting'" in text
    assert "role fort-urls-study until" in text
    assert "image/png" in text  # the plot
    assert "queries_per_day" in text  # fort_usage()


def test_session_policy_names_only_her_prefix_and_datasets(fort_demo, alice):
    # the credentials were fetched by the tests above; fort-credentials audits the session
    # policy it sent to STS (moto does not enforce session policies: we check the document)
    store = Store(f"sqlite:///{fort_demo.state / 'fort.sqlite'}", create=False)
    try:
        issued = store.audit.query(user="alice", action="credentials.issue", limit=10)
    finally:
        store.dispose()
    sessions = [r for r in issued if r.decision == "allow" and "session_policy" in r.details]
    assert sessions  # (hand-overs of a cached session are audited with `cached`, no document)
    details = sessions[0].details
    document = json.loads(details["session_policy"])
    resources, prefixes = set(), set()
    for st in document["Statement"]:
        assert st["Effect"] == "Allow"
        res = st["Resource"]
        resources.update([res] if isinstance(res, str) else res)
        prefixes.update(st.get("Condition", {}).get("StringLike", {}).get("s3:prefix", []))
    assert resources == {
        "arn:aws:s3:::fort-user-data/users/alice/*",
        "arn:aws:s3:::fort-user-data",
        "arn:aws:s3:::fort-datasets/url_shares/*",
        "arn:aws:s3:::fort-datasets",
    }
    assert all(p.startswith(("users/alice/", "url_shares/")) for p in prefixes), prefixes
    assert "ads_targeting" not in json.dumps(document)


def test_dave_has_no_access_and_bob_cannot_pick_alices_profile(fort_demo):
    _, cb = login(fort_demo.url, "dave")
    assert cb.status_code == 403
    assert "admin@example.org" in cb.text  # whom to contact
    bob = fort_demo.login("bob")
    r = bob.post(
        f"{fort_demo.url}/hub/api/users/bob/server",
        json={"profile": "urls-large"},
        headers=fort_demo.xsrf(bob),
        timeout=60,
    )
    assert r.status_code >= 400 and "urls-large" in r.text, (r.status_code, r.text)


def test_audit_chain_verifies(fort_demo, alice):
    db = f"sqlite:///{fort_demo.state / 'fort.sqlite'}"
    r = subprocess.run(
        [sys.executable, "-m", "fort_hub.cli", "audit", "verify", "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    store = Store(db, create=False)
    try:
        actions = {rec.action for rec in store.audit.query(user="alice", limit=200)}
    finally:
        store.dispose()
    assert {"auth.login", "spawn.start", "credentials.issue", "query.submit"} <= actions


def test_policy_in_state_dir_is_the_demo_policy(fort_demo):
    data = yaml.safe_load((fort_demo.state / "policy.yaml").read_text())
    assert {g["name"] for g in data["groups"]} == {"urls-study", "ads-study", "admins"}


def readme_audit_commands() -> list[str]:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    lines = [ln.split("  #")[0].strip() for ln in readme.splitlines()]
    found = [ln for ln in lines if ln.startswith(".venv/bin/fort-hub audit ")]
    assert len(found) == 3, found
    return found


def test_readme_audit_commands_work_on_the_demos_store(fort_demo, alice):
    """README's commands, as written, from the folder holding the demo's .fort-demo."""
    assert fort_demo.state.name == ".fort-demo"
    fort_hub_bin = str(Path(sys.executable).with_name("fort-hub"))
    out = {}
    for line in readme_audit_commands():
        argv = shlex.split(line)
        assert argv[0] == ".venv/bin/fort-hub"
        r = subprocess.run([fort_hub_bin, *argv[1:]], cwd=fort_demo.state.parent,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, (line, r.stdout, r.stderr)
        out[argv[2]] = r.stdout
    assert out["verify"].startswith("OK")
    assert re.fullmatch(r"\d+:[0-9a-f]{64}\n", out["head"])
    records = [json.loads(ln) for ln in out["export"].splitlines()]
    # --user: what alice did, and what was done to her (records of fort-groups about her, if
    # any fall inside this module)
    assert records and all(
        r["actor"] == "alice" or is_subject(SimpleNamespace(**r), "alice") for r in records
    ), [(r["actor"], r["action"], r["resource"]) for r in records]
    assert "query.submit" in {r["action"] for r in records if r["actor"] == "alice"}


def test_a_second_demo_on_the_same_state_is_refused_naming_folder_and_pid(fort_demo):
    port = free_port()
    r = subprocess.run(
        [sys.executable, "-m", "fort_hub.cli", "demo", "--dir", str(fort_demo.state),
         "--port", str(port), "--reset"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"fort-hub demo: the demo state folder {fort_demo.state} is in use by another fort-hub "
        f"demo (pid {fort_demo.proc.pid}); stop that one (Ctrl-C, or kill {fort_demo.proc.pid}) "
        "or pass another --dir"
    )
    assert (fort_demo.state / "policy.yaml").exists()  # --reset deleted nothing
    assert requests.get(fort_demo.url + "/hub/api/", timeout=30).status_code == 200


def test_no_log_prints_an_oauth_code_or_state(fort_demo):
    s, cb = login(fort_demo.url, "bob")
    assert cb.status_code == 302
    query = dict(parse_qsl(urlsplit(cb.request.url).query))
    secrets = [query["code"], query["state"]]
    # a reload of the callback: signed in, it continues to the hub; from another browser (no
    # cookies) it is the "sign-in link has expired" page; both lines reach the hub's log
    again = s.get(cb.request.url, allow_redirects=False, timeout=30)
    assert again.status_code == 302
    elsewhere = requests.get(cb.request.url, allow_redirects=False, timeout=30)
    assert elsewhere.status_code >= 400
    for service in ("fort-groups", "fort-query"):
        r = requests.get(f"{fort_demo.url}/services/{service}/oauth_callback",
                         params={"code": "svc-c0de-secret", "state": "svc-5tate-secret"},
                         allow_redirects=False, timeout=30)  # fmt: skip
        assert r.status_code >= 400
    standin = re.search(r"Facebook stand-in: (http://\S+)", fort_demo.output).group(1)
    r = requests.get(f"{standin}/v19.0/me", params={"access_token": "EAABst4ndinSecret"},
                     timeout=30)  # fmt: skip
    assert r.status_code >= 400
    secrets += ["svc-c0de-secret", "svc-5tate-secret", "EAABst4ndinSecret"]
    time.sleep(1)  # the services' log lines reach their files
    logs = {p.name: p.read_text(errors="replace") for p in (fort_demo.state / "logs").glob("*.log")}
    assert "oauth_callback" in logs["jupyterhub.log"]
    leaks = {(name, s) for name, text in logs.items() for s in secrets if s in text}
    assert not leaks


def test_jupyterlab_asks_no_news_question(fort_demo, alice):
    env = alice["env"]
    r = requests.get(
        f"{fort_demo.url}/user/alice/lab/api/settings/@jupyterlab/apputils-extension:notification",
        headers={"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text[:500]
    assert r.json()["settings"]["fetchNews"] == "false"
