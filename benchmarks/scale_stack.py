"""The processes of the scale harness (benchmarks/bench_scale.py): everything on 127.0.0.1.

- the Facebook stand-in (``fort-hub facebook-standin``, its own process) with N identities;
- the Kubernetes API double (tests/k8s_double.py) in its own process;
- one notebook stand-in process (benchmarks/scale_notebook.py) for every pod (each has podIP
  127.0.0.1), one port per hub: the proxy routes ``/user/<name>/`` there; it answers the hub's
  readiness check and, like jupyterhub-singleuser, checks every API request's token with its
  hub (HubAuth's ``GET /hub/api/user``, cached per token for 300 s) unless ``notebook_auth`` is
  off;
- moto's STS (``ThreadedMotoServer``), a PostgreSQL database of its own for the fort store;
- two hubs: fort (FacebookOAuthenticator, FortKubeSpawner, the three fort services
  hub-managed, configured by the same ``jupyterhub_config.d`` snippets an admin deploys; with
  ``--replicas N`` N processes each behind a round-robin front, benchmarks/scale_replicas.py) and
  stock (oauthenticator's GenericOAuthenticator, plain KubeSpawner, no fort services), each
  with configurable-http-proxy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import requests
import yaml
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fort_hub.dev.demo_hub import snippet_paths  # noqa: E402
from tests.hubproc import RunningHub, free_port, wait_http  # noqa: E402
from tests.query_support import make_datasets  # noqa: E402

APP_ID, APP_SECRET = "1234567890123456", "scale-facebook-app-secret"
DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
             "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
PG_ADMIN = os.environ.get("FORT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IMAGE = "quay.io/jupyter/scipy-notebook:2025-06-02"


def usernames(n: int) -> list[str]:
    return [f"r{i:05d}" for i in range(1, n + 1)]


def find_chp(prefix: str | None) -> tuple[list[str], str]:
    """The node configurable-http-proxy (npm) when found, else the venv's Python one."""
    for d in filter(None, [prefix, str(ROOT / ".chp")]):
        exe = Path(d).resolve() / "node_modules" / ".bin" / "configurable-http-proxy"
        if exe.exists():
            version = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
            return [str(exe)], f"node configurable-http-proxy {version.stdout.strip()} (npm)"
    exe = shutil.which("configurable-http-proxy", path=str(Path(sys.executable).parent))
    return [exe or "configurable-http-proxy"], "configurable-http-proxy from the venv (Python)"


# ----- small servers in their own processes ------------------------------------------------


def _serve_k8s(conn, delay: float) -> None:
    from tests.k8s_double import KubeDouble

    with KubeDouble(pod_start_delay=delay) as k8s:
        # a client closing a watch mid-read is normal here: no traceback per connection
        k8s.server.handle_error = lambda request, address: None
        conn.send(k8s.url)
        conn.recv()  # until the parent says stop (or goes away)


class Child:
    """A function run in a forked process that sends back one value (its address)."""

    def __init__(self, target, *args):
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args), daemon=True)

    def start(self):
        self.proc.start()
        if not self.conn.poll(30):
            raise RuntimeError(f"{self.proc} did not start")
        return self.conn.recv()

    def stop(self):
        with contextlib.suppress(OSError):
            self.conn.send("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


# ----- the store ---------------------------------------------------------------------------


class PgDatabase:
    """A PostgreSQL database of its own, so pg_stat_database counts only this run."""

    def __init__(self):
        self.name = "fort_scale_" + secrets.token_hex(4)
        base = PG_ADMIN.replace("postgresql+psycopg", "postgresql")
        self.admin = base
        self.url = base.rsplit("/", 1)[0] + "/" + self.name

    def __enter__(self):
        with psycopg.connect(self.admin, autocommit=True, connect_timeout=5) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc):
        with psycopg.connect(self.admin, autocommit=True, connect_timeout=5) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def stats(self) -> dict:
        with psycopg.connect(self.admin, autocommit=True, connect_timeout=5) as c:
            commits = c.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (self.name,)
            ).fetchone()[0]
            conns = c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.name,)
            ).fetchone()[0]
        return {"xact_commit": int(commits), "connections": int(conns)}


# ----- files ---------------------------------------------------------------------------------


def write_identities(path: Path, names: list[str]) -> None:
    ids = {n: {"id": str(20000000000000000 + i), "name": f"Researcher {n}",
               "email": f"{n}@example.org"} for i, n in enumerate(names)}  # fmt: skip
    ids["admin"] = {"id": "19999999999999999", "name": "Admin", "email": "admin@example.org"}
    path.write_text(yaml.safe_dump({"app": {"id": APP_ID, "secret": APP_SECRET},
                                    "identities": ids}))  # fmt: skip


def write_policy(work: Path, names: list[str]) -> Path:
    """The example policy with every researcher in urls-study, and its sample data."""
    src = ROOT / "fort_hub" / "dev" / "data" / "example-policy.yaml"
    policy = yaml.safe_load(src.read_text())
    for g in policy["groups"]:
        if g["name"] == "urls-study":
            g["members"] = list(g["members"]) + names
    path = work / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    make_datasets(work)
    return path


def kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
    )
    return path


def free_ports(n: int) -> int:
    """The first of *n* consecutive free loopback ports."""
    for _ in range(200):
        first = free_port()
        ok = True
        for p in range(first, first + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return first
    raise RuntimeError(f"no {n} consecutive free ports")


# ----- the two hubs ----------------------------------------------------------------------------

COMMON = """
c.JupyterHub.log_level = "INFO"
c.ConfigurableHTTPProxy.command = {chp!r}
c.JupyterHub.concurrent_spawn_limit = 64  # Z2JH's default
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 120
c.KubeSpawner.namespace = {ns!r}
c.KubeSpawner.port = {nb_port}
c.KubeSpawner.image = {image!r}
# the Kubernetes double is one Python process on a shared machine, not an API server: give its
# answers time (the default 3 s turns a slow answer into a failed spawn)
c.KubeSpawner.k8s_api_request_timeout = 30
c.Authenticator.enable_auth_state = True
"""


def fort_config(chp, nb_port, standin, public, external: list[dict] | None = None) -> str:
    """The fort hub's config; *external*: service entries (url, token, no command) that the
    fort snippets complete instead of adding hub-managed ones (``--replicas``)."""
    snippets = [str(p) for p in snippet_paths()]
    return (
        COMMON.format(chp=chp, ns="fort", nb_port=nb_port, image=IMAGE)
        + f"""
c.JupyterHub.authenticator_class = "facebook"
c.JupyterHub.spawner_class = "fort-kubernetes"
fb = c.FacebookOAuthenticator
fb.client_id = {APP_ID!r}
fb.client_secret = {APP_SECRET!r}
fb.dialog_url = fb.graph_url = {standin!r}
fb.oauth_callback_url = {public + "/hub/oauth_callback"!r}
fb.strip_email_domains = {{"example.org"}}
fb.graph_timeout = 30  # the stand-in shares the machine too (as for the double, in COMMON)
fb.admin_users = {{"admin"}}
c.FortKubeSpawner.services_url = {public + "/services/"!r}
c.JupyterHub.services = list(c.JupyterHub.services) + {external or []!r}
for _path in {snippets!r}:
    exec(compile(open(_path).read(), _path, "exec"))
"""
    )


# the stock hub's researchers in one hub group, as fort-groups puts them in urls-study with
# FORT_HUB_GROUPS=true (bench_scale.py --hub-groups): the way a
# stock hub gets its users into groups from an OAuth provider (oauthenticator's manage_groups)
STOCK_GROUPS = """
g.manage_groups = True
g.auth_state_groups_key = lambda auth_state: ["urls-study"]
"""


def stock_config(chp, nb_port, standin, groups: bool = False) -> str:
    """The stock hub's config; *groups*: every researcher in one hub group (STOCK_GROUPS)."""
    return (
        COMMON.format(chp=chp, ns="stock", nb_port=nb_port, image=IMAGE)
        + f"""
c.JupyterHub.authenticator_class = "generic-oauth"
g = c.GenericOAuthenticator
g.client_id = {APP_ID!r}
g.client_secret = {APP_SECRET!r}
g.authorize_url = "{standin}/v23.0/dialog/oauth"
g.token_url = "{standin}/v23.0/oauth/access_token"
g.userdata_url = "{standin}/v23.0/me"
g.userdata_params = {{"fields": "id,name,email"}}
g.scope = ["public_profile", "email"]
g.http_request_kwargs = {{"request_timeout": 30}}  # as the fort hub's graph_timeout
g.username_claim = lambda info: info["email"].split("@")[0]
g.allow_all = True
g.admin_users = {{"admin"}}
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
"""
        + (STOCK_GROUPS if groups else "")
    )


class Stack:
    """Starts and stops everything; ``stack.fort`` / ``stack.stock`` are the RunningHubs."""

    def __init__(
        self, work: Path, n: int, pod_delay: float, chp_prefix: str | None = None,
        replicas: int = 1, notebook_auth: bool = True, stock_groups: bool = False,
        fort_hub_groups: bool = False,
    ):  # fmt: skip
        self.work, self.n, self.pod_delay, self.replicas = work, n, pod_delay, replicas
        self.notebook_auth, self.stock_groups = notebook_auth, stock_groups
        self.fort_hub_groups = fort_hub_groups
        self.service_replicas = None  # ServiceReplicas with replicas >= 2
        self.names = usernames(n)
        self.chp, self.chp_name = find_chp(chp_prefix)
        self.stoppers: list = []

    def start(self) -> Stack:
        from moto.server import ThreadedMotoServer

        w = self.work
        ident = w / "identities.yaml"
        write_identities(ident, self.names)
        policy = write_policy(w, self.names)
        port = free_port()
        self.standin_url = f"http://127.0.0.1:{port}"
        log = open(w / "standin.log", "wb")  # noqa: SIM115
        standin = subprocess.Popen(
            [sys.executable, "-m", "fort_hub.cli", "facebook-standin", "--port", str(port),
             "--identities", str(ident)], stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.standin_pid = standin.pid
        self.stoppers.append(lambda: (standin.terminate(), standin.wait(10)))
        k8s = Child(_serve_k8s, self.pod_delay)
        self.k8s_url = k8s.start()
        self.k8s_pid = k8s.proc.pid
        self.stoppers.append(k8s.stop)
        nb = self._start_notebook()
        moto_port = free_port()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
        moto.start()
        self.stoppers.append(moto.stop)
        self.moto_url = f"http://127.0.0.1:{moto_port}"
        self._roles()
        self.pg = PgDatabase().__enter__()
        self.stoppers.append(lambda: self.pg.__exit__(None, None, None))
        wait_http(self.standin_url + "/v23.0/me", ok=lambda r: r.status_code == 400)
        kube = kubeconfig(w / "kubeconfig", self.k8s_url)
        crypt = Fernet.generate_key().decode()
        env = {"KUBECONFIG": str(kube), "JUPYTERHUB_CRYPT_KEY": crypt}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        fort_env = {**DUMMY_AWS, "AWS_ENDPOINT_URL": self.moto_url,
                    "FORT_POLICY_FILE": str(policy), "FORT_STORE_URL": self.pg.url,
                    "FORT_COOKIE_SECRET": secrets.token_hex(32),
                    "FORT_HUB_GROUPS": "true" if self.fort_hub_groups else "false"}  # fmt: skip
        self.fort = RunningHub(w / "fort", env={
            **env, **fort_env, "FORT_SERVICES_PORT": str(free_ports(3)),
        }, timeout=180)  # fmt: skip
        self.stock = RunningHub(w / "stock", env=env, timeout=180)
        nb.conn.send({"fort": self.fort.hub_api_url, "stock": self.stock.hub_api_url})
        external = self._start_replicas(fort_env) if self.replicas >= 2 else None
        self.fort.extra_config = fort_config(self.chp, self.nb_ports["fort"], self.standin_url,
                                             self.fort.url, external)  # fmt: skip
        self.stock.extra_config = stock_config(
            self.chp, self.nb_ports["stock"], self.standin_url, self.stock_groups
        )
        for hub in (self.fort, self.stock):
            hub.start()
            self.stoppers.append(hub.stop)
        for svc in ("fort-query", "fort-credentials", "fort-groups"):
            wait_http(f"{self.fort.url}/services/{svc}/api/v1/", timeout=120,
                      ok=lambda r: r.status_code in (401, 403, 404))  # fmt: skip
        return self

    def _start_notebook(self) -> Child:
        """The notebook stand-in: one port per hub; it is sent each hub's API URL (to check
        tokens with) once the hubs have their ports."""
        from scale_notebook import serve

        nb = Child(serve, ["fort", "stock"], self.notebook_auth)
        self.nb_ports = nb.start()
        self.nb_pid = nb.proc.pid
        self.stoppers.append(nb.stop)
        return nb

    def _start_replicas(self, env: dict) -> list[dict]:
        """``--replicas N``: N processes of each fort service behind a front, started before
        the fort hub; returns the hub's service entries for them."""
        from scale_replicas import ServiceReplicas

        self.service_replicas = ServiceReplicas(self.work, self.replicas, self.fort.hub_api_url,
                                                self.moto_url, env)  # fmt: skip
        self.stoppers.append(self.service_replicas.stop)
        self.service_replicas.start()
        return self.service_replicas.hub_entries()

    def _roles(self) -> None:
        import boto3

        iam = boto3.client("iam", endpoint_url=self.moto_url, **_boto_keys())
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                 "Action": "sts:AssumeRole", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}]}  # fmt: skip
        for role in ("fort-urls-study", "fort-ads-study", "fort-admins"):
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))

    def stop(self) -> None:
        for fn in reversed(self.stoppers):
            try:
                fn()
            except Exception as e:
                print(f"(stopping: {type(e).__name__}: {e})", file=sys.stderr)

    def processes(self) -> dict[str, list[int]]:
        """pids by role: each hub, its proxy, the fort services, and the stand-ins."""
        out = {"fort_hub": [self.fort.proc.pid], "stock_hub": [self.stock.proc.pid],
               "fort_services": [], "fort_proxy": [], "stock_proxy": [],
               "facebook_standin": [self.standin_pid], "k8s_double": [self.k8s_pid],
               "notebook_standin": [self.nb_pid], "service_fronts": []}  # fmt: skip
        for pid, ppid, cmd in _children():
            if ppid == self.fort.proc.pid:
                out["fort_services" if "fort_hub.services" in cmd else "fort_proxy"].append(pid)
                if m := re.search(r"fort_hub\.services\.(\w+)", cmd):  # each one alone too
                    out[f"fort-{m.group(1)}-0"] = [pid]
            elif ppid == self.stock.proc.pid:
                out["stock_proxy"].append(pid)
        if self.service_replicas:
            for role, pids in self.service_replicas.pids().items():
                out[role] = out.get(role, []) + pids
        return out

    def admin_get(self, hub: RunningHub, path: str):
        return requests.get(hub.api(path), headers=hub.admin_headers, timeout=30)


def _boto_keys() -> dict:
    return {"region_name": "us-east-1", "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing"}  # fmt: skip


def _children():
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        yield int(entry.name), ppid, cmd


def cpu_by_role(procs: dict[str, list[int]]) -> dict[str, float]:
    """CPU-seconds of each role's processes, plus ``fort_query_workers``: what the fort services'
    descendants (fort-query's DuckDB worker processes) used, reaped ones included."""
    out = {k: cpu_seconds(v) for k, v in procs.items()}
    out["fort_query_workers"] = tree_cpu_seconds(procs["fort_services"]) - out["fort_services"]
    return out


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU-seconds of *pids* and all their descendants, alive or reaped (cutime, cstime)."""
    kids: dict[int, list[int]] = {}
    for pid, ppid, _ in _children():
        kids.setdefault(ppid, []).append(pid)
    todo, total = list(pids), 0
    while todo:
        pid = todo.pop()
        total += cpu_seconds([pid], children=True)
        todo += kids.get(pid, [])
    return total


def cpu_seconds(pids: list[int], children: bool = False) -> float:
    """utime + stime of *pids* from /proc/<pid>/stat (0 for a process that is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        if children:  # cutime, cstime: its reaped children's
            total += int(fields[13]) + int(fields[14])
    return total / tick
