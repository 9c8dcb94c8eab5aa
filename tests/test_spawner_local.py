"""FortLocalSpawner through a real JupyterHub: a real single-user server starts with the fort
environment; forbidden profiles are refused via the REST API and via the spawn form."""

import os
import re
import secrets
import shutil
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from fort_hub import scopes
from fort_hub.store import Store
from tests.conftest import EXAMPLE_POLICY, PG_URL, require_postgres
from tests.hubproc import RunningHub

pytestmark = pytest.mark.hub


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def hub_store_url(request, tmp_path_factory):
    """The fort store of the hub under test: SQLite, and PostgreSQL in a fresh schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store') / 'fort.sqlite'}"
        return
    require_postgres()
    import psycopg

    schema = "t_" + secrets.token_hex(6)
    raw = PG_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="module")
def hub(tmp_path_factory, hub_store_url):
    work = tmp_path_factory.mktemp("localhub")
    policy = work / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, policy)
    store_url = hub_store_url
    # the fort services are not under test here: one stand-in answers for all three
    standin = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=standin.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{standin.server_address[1]}"
    services = [{"name": n, "url": url} for n in scopes.SERVICES]
    config = f"""
    from fort_hub import scopes
    c.JupyterHub.authenticator_class = "dummy"
    c.Authenticator.allow_all = True
    c.JupyterHub.spawner_class = "fort-local"
    c.FortSettings.policy_file = {str(policy)!r}
    c.FortSettings.store_url = {store_url!r}
    c.JupyterHub.custom_scopes = scopes.CUSTOM_SCOPES
    c.JupyterHub.services.extend({services!r})
    c.JupyterHub.load_groups = {{"admins": {{"users": ["admin"]}}}}
    c.JupyterHub.load_roles.extend(scopes.load_roles())
    c.JupyterHub.load_roles.append(
        {{"name": "state-reader", "scopes": ["admin:server_state"], "services": ["test-admin"]}}
    )
    c.Spawner.args = {["--allow-root"] if os.geteuid() == 0 else []!r}
    c.Spawner.start_timeout = 90
    c.Spawner.http_timeout = 90
    c.FortLocalSpawner.aws_config_dir = {str(work / "aws")!r}
    """
    h = RunningHub(work)
    h.extra_config = textwrap.dedent(config) + (
        f"c.FortLocalSpawner.services_url = {h.url + '/services/'!r}\n"
    )
    with h:
        h.store_url = store_url
        h.work = work
        yield h
    standin.shutdown()
    standin.server_close()


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def wait_ready(hub, user, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = requests.get(hub.api(f"users/{user}"), headers=hub.admin_headers, timeout=10)
        server = r.json()["servers"].get("")
        if server and server["ready"]:
            return server
        time.sleep(0.5)
    raise TimeoutError(f"{user}'s server not ready:\n{hub.log()[-4000:]}")


def wait_stopped(hub, user, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = requests.get(hub.api(f"users/{user}"), headers=hub.admin_headers, timeout=10)
        if not r.json()["servers"]:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{user}'s server did not stop")


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_real_server_sees_fort_environment(hub):
    requests.post(hub.api("users"), json={"usernames": ["alice"]}, headers=hub.admin_headers)
    r = requests.post(
        hub.api("users/alice/server"), json={"profile": "urls-large"}, headers=hub.admin_headers
    )
    assert r.status_code in (201, 202), r.text
    server = wait_ready(hub, "alice")
    pid = server["state"]["pid"]
    env = environ(pid)
    assert env["FORT_USER"] == "alice"
    assert env["FORT_GROUPS"] == "urls-study"
    assert env["FORT_USER_PREFIX"] == "s3://fort-user-data/users/alice/"
    assert env["FORT_SERVICES_URL"] == hub.url + "/services/"
    assert env["FORT_CREDENTIALS_URL"] == hub.url + "/services/fort-credentials/"
    assert env["FORT_GROUPS_URL"] == hub.url + "/services/fort-groups/"
    assert env["FORT_QUERY_URL"] == hub.url + "/services/fort-query/"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    config = Path(env["AWS_CONFIG_FILE"])
    text = config.read_text()
    assert "[profile fort-urls-study]" in text
    assert re.search(r"credential_process = \S*fort-aws-credentials --role fort-urls-study", text)
    # the server's own token reaches the services with the fort scopes
    who = requests.get(
        hub.api("user"), headers={"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"}
    ).json()
    assert scopes.CREDENTIALS_AWS in who["scopes"]
    assert scopes.access(scopes.CREDENTIALS_SERVICE) in who["scopes"]
    # and the server answers through the proxy
    status = requests.get(
        f"{hub.url}/user/alice/api/status",
        headers={"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"},
        timeout=10,
    )
    assert status.status_code == 200

    r = requests.delete(hub.api("users/alice/server"), headers=hub.admin_headers)
    assert r.status_code in (202, 204)
    wait_stopped(hub, "alice")
    assert not config.exists()
    store = Store(hub.store_url)
    start = store.audit.query(user="alice", action="spawn.start")[0]
    assert start.details["profile"] == "urls-large" and start.details["outcome"] == "starting"
    stop = store.audit.query(user="alice", action="spawn.stop")[0]
    assert stop.details["identity_mode"] == "vending" and stop.details["outcome"] == "stopped"
    store.dispose()


def test_rest_api_forbidden_profile_and_image(hub):
    requests.post(hub.api("users"), json={"usernames": ["bob", "admin"]}, headers=hub.admin_headers)
    r = requests.post(
        hub.api("users/bob/server"), json={"profile": "urls-large"}, headers=hub.admin_headers
    )
    assert r.status_code == 403, r.text
    assert "profile 'urls-large' is not available to your groups" in r.json()["message"]
    assert "Traceback" not in r.text
    r = requests.post(
        hub.api("users/admin/server"),
        json={"profile": "custom", "image--unlisted-choice": "docker.io/library/evil:1"},
        headers=hub.admin_headers,
    )
    assert r.status_code == 403 and "must match" in r.json()["message"]
    # an option the profile does not offer (resources are the profile's, not the caller's)
    r = requests.post(
        hub.api("users/bob/server"),
        json={"profile": "python", "cpu_limit": 64, "image": "docker.io/library/evil:1"},
        headers=hub.admin_headers,
    )
    assert r.status_code == 403, r.text
    assert "profile 'python' has no option(s) cpu_limit, image" in r.json()["message"]
    for user in ("bob", "admin"):
        r = requests.get(hub.api(f"users/{user}"), headers=hub.admin_headers)
        assert r.json()["servers"] == {}
    store = Store(hub.store_url)
    option, profile = store.audit.query(user="bob", action="spawn.start")  # newest first
    assert profile.decision == "deny" and "urls-large" in profile.reason
    assert option.decision == "deny" and "no option(s) cpu_limit, image" in option.reason
    assert option.details["requested"]["cpu_limit"] == "64"
    store.dispose()


def test_user_in_no_study_group_gets_no_server(hub):
    """#10 finding 3: a user with no active group spawned the profile open to everyone."""
    requests.post(hub.api("users"), json={"usernames": ["nogroup"]}, headers=hub.admin_headers)
    for body in ({}, {"profile": "python"}):
        r = requests.post(hub.api("users/nogroup/server"), json=body, headers=hub.admin_headers)
        assert r.status_code == 403, r.text
        message = r.json()["message"]
        assert "you are not in any active study group, so no server can start" in message
        assert "to join one, ask a fort admin" in message  # the example policy names no contact
    r = requests.get(hub.api("users/nogroup"), headers=hub.admin_headers)
    assert r.json()["servers"] == {}
    store = Store(hub.store_url)
    try:
        records = store.audit.query(user="nogroup", action="spawn.start")
    finally:
        store.dispose()
    assert [r.decision for r in records] == ["deny", "deny"]
    assert "not in any active study group" in records[0].reason
    assert records[0].details["groups"] == []


def login(hub, username) -> requests.Session:
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=10)
    r = s.post(
        f"{hub.url}/hub/login",
        data={"username": username, "password": "x", "_xsrf": s.cookies.get("_xsrf")},
        timeout=30,
    )
    assert r.status_code == 200, r.text[:500]
    return s


def test_form_lists_only_allowed_profiles_and_refuses_forbidden(hub):
    s = login(hub, "bob")
    form = s.get(f"{hub.url}/hub/spawn", timeout=30)
    assert form.status_code == 200
    assert 'value="gpu"' in form.text and 'value="python"' in form.text
    assert 'value="urls-large"' not in form.text
    r = s.post(
        f"{hub.url}/hub/spawn",
        data={"profile": "urls-large", "_xsrf": s.cookies.get("_xsrf")},
        timeout=30,
    )
    assert r.status_code == 403
    assert "profile &#39;urls-large&#39; is not available to your groups" in r.text or (
        "profile 'urls-large' is not available to your groups" in r.text
    )
    assert 'value="gpu"' in r.text  # the form is shown again
    r = requests.get(hub.api("users/bob"), headers=hub.admin_headers)
    assert r.json()["servers"] == {}
