"""What tests/chart_pod.py does with a running hub pod, inside its namespace: each scenario
records observations in ``result`` (JSON) for tests/test_chart_hub.py to assert on."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import requests

from tests import fbflow

PUBLIC = "http://127.0.0.1:8000"  # the proxy's HTTP port (behind autohttps in production)
HUB_API = "http://127.0.0.1:8081/hub/api"


def service_tokens(spec: dict) -> dict[str, str]:
    from tests.chart_pod import find, object_files

    files = object_files(find(spec["docs"], "Secret", "hub"))
    prefix, suffix = "hub.services.", ".apiToken"
    return {
        k[len(prefix) : -len(suffix)]: v.decode()
        for k, v in files.items()
        if k.startswith(prefix) and k.endswith(suffix)
    }


def observe_services(spec: dict, result: dict) -> None:
    """Each fort service's own token (the chart's generated one): who the hub says it is."""
    result["service_models"] = {}
    for name, token in service_tokens(spec).items():
        r = requests.get(f"{HUB_API}/user", headers={"Authorization": f"token {token}"}, timeout=30)
        result["service_models"][name] = {"status": r.status_code, "model": r.json()}


def login(identity: str, result: dict) -> requests.Session:
    """Sign in through the Facebook stand-in; the callback goes to the hub's configured
    oauth_callback_url, whose https host the test reaches on the proxy's port (as autohttps
    would forward it)."""
    s, dialog_url, forms = fbflow.start_login(PUBLIC)
    callback = urlsplit(fbflow.choose(s, dialog_url, forms, identity))
    result["callback_url"] = f"{callback.scheme}://{callback.netloc}{callback.path}"
    local = urlunsplit(("http", "127.0.0.1:8000", callback.path, callback.query, ""))
    r = s.get(local, allow_redirects=False, timeout=60)
    result["login"] = {"status": r.status_code, "location": r.headers.get("Location", "")}
    return s


def api(s: requests.Session, method: str, path: str, **kw) -> requests.Response:
    headers = {"X-XSRFToken": s.cookies.get("_xsrf", path="/hub/") or s.cookies.get("_xsrf", "")}
    return s.request(method, f"{PUBLIC}/hub/api/{path}", headers=headers, timeout=60, **kw)


def wait_pod(k8s, timeout: float = 60) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = k8s.list("pods", "fort")
        if pods:
            return pods[0]
        time.sleep(0.2)
    return None


def prod(spec: dict, env: dict, k8s, result: dict) -> None:
    observe_services(spec, result)
    s = login(spec["identity"], result)
    r = api(s, "GET", "user")
    result["user"] = r.json() if r.ok else {"status": r.status_code, "text": r.text[:500]}
    name = result["user"].get("name", spec["identity"])
    r = api(s, "POST", f"users/{name}/tokens", json={"note": "chart test"})
    token = r.json().get("token", "") if r.ok else ""
    result["services_answer"] = {}
    for svc, path in (("fort-groups", "api/v1/me"), ("fort-query", "api/v1/queries")):
        r = requests.get(f"{PUBLIC}/services/{svc}/{path}", timeout=30,
                         headers={"Authorization": f"token {token}"})  # fmt: skip
        result["services_answer"][svc] = {"status": r.status_code, "body": r.text[:2000]}
    r = api(s, "POST", f"users/{name}/server", json={"profile": spec["profile"]})
    result["spawn"] = {"status": r.status_code, "text": r.text[:500]}
    result["pod"] = wait_pod(k8s)
    result["k8s_authorizations"] = sorted(k8s.authorizations)


def wait_ready(s: requests.Session, name: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    model: dict = {}
    while time.monotonic() < deadline:
        model = api(s, "GET", f"users/{name}").json()
        server = (model.get("servers") or {}).get("", {})
        if server.get("ready"):
            return model
        time.sleep(0.3)
    return model


NOTEBOOK_QUERY = """
import json
from fort_hub.client import FortClient
table = FortClient().query("SELECT count(*) AS n FROM url_shares", "url_shares", progress=False)
print(json.dumps(table.to_pylist()))
"""


def in_notebook(env: dict, cmd: list[str]) -> dict:
    import subprocess

    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                       cwd="/home/jovyan")  # fmt: skip
    return {"rc": p.returncode, "stdout": p.stdout[-4000:], "stderr": p.stderr[-4000:]}


def dev(spec: dict, env: dict, k8s, result: dict) -> None:
    """The dev values end to end: login, spawn, a notebook, a query and AWS credentials."""
    from tests.chart_pod import run_notebook

    observe_services(spec, result)
    s = login(spec["identity"], result)
    name = api(s, "GET", "user").json()["name"]
    result["user"] = {"name": name}
    r = api(s, "POST", f"users/{name}/server", json={"profile": spec["profile"]})
    result["spawn"] = {"status": r.status_code, "text": r.text[:500]}
    pod = result["pod"] = wait_pod(k8s)
    if pod is None:
        return
    nb_env = run_notebook(pod, spec["procs"])
    result["ready"] = wait_ready(s, name)
    result["query"] = in_notebook(nb_env, ["python3", "-c", NOTEBOOK_QUERY])
    result["credentials"] = in_notebook(
        nb_env, ["fort-aws-credentials", "--role", "fort-urls-study"]
    )


SCENARIOS = {"prod": prod, "dev": dev}
