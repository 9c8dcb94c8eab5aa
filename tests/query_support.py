"""Test support for fort-query: a stand-in for the hub's ``GET /hub/api/user`` (token -> user
model) so service tests need no hub process, sample datasets, and a running service."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import requests
from tornado import web
from tornado.httpserver import HTTPServer
from traitlets.config import Config

from fort_hub import scopes
from fort_hub.config import shared_store
from fort_hub.services.query import QueryService
from tests.conftest import EXAMPLE_POLICY
from tests.fortsvc import ServiceThread
from tests.hubproc import free_port

USE = [scopes.access(scopes.QUERY_SERVICE), scopes.QUERY_USE]
ADMIN = [*USE, scopes.QUERY_ADMIN]


class _UserHandler(web.RequestHandler):
    def get(self):
        token = self.request.headers.get("Authorization", "").partition(" ")[2]
        model = self.settings["tokens"].get(token)
        if model is None:
            self.set_status(403)
            self.finish({"status": 403, "message": "no such token"})
            return
        self.finish(json.dumps(model))


class FakeHubApi:
    """``/hub/api/user`` answering for a fixed token table, on its own thread and loop, until
    ``stop()``."""

    def __init__(self, tokens: dict[str, tuple[str, list[str]]]):
        self.tokens = {
            t: {"kind": "user", "name": n, "scopes": s, "groups": [], "admin": False}
            for t, (n, s) in tokens.items()
        }
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/hub/api"
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the fake hub API did not start")

    def _run(self):
        async def main():
            app = web.Application([("/hub/api/user", _UserHandler)], tokens=self.tokens)
            server = HTTPServer(app)
            server.listen(self.port, "127.0.0.1")
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await self._stopping.wait()
            server.stop()
            await server.close_all_connections()

        asyncio.run(main())

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(15)
        if self._thread.is_alive():
            raise RuntimeError("the fake hub API did not stop")


def make_datasets(folder: Path, rows: int = 200) -> None:
    """Small url_shares / ads_targeting Parquet files where the example policy expects them."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    n = rows
    pq.write_table(
        pa.table({
            "url": [f"https://example.org/{i % 37}" for i in range(n)],
            "country": [["US", "DE", "BR", "IN"][i % 4] for i in range(n)],
            "shares": [(i * 7919) % 1000 - 20 for i in range(n)],
            "views": [float(i) * 1.5 for i in range(n)],
        }),
        data / "url_shares.parquet",
    )  # fmt: skip
    pq.write_table(
        pa.table({"ad_id": list(range(n)), "spend": [f"{i}-{i + 99}" for i in range(n)]}),
        data / "ads_targeting.parquet",
    )


def hub_config_with_fort_query(tmp: Path, store_url: str) -> str:
    """jupyterhub_config.py text for a real hub running fort-query as a managed service, with
    the example policy (copied to *tmp*) and the results under *tmp*."""
    import sys

    policy = tmp / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, policy)
    service = {
        "name": "fort-query",
        "url": f"http://127.0.0.1:{free_port()}",
        "command": [
            sys.executable, "-m", "fort_hub.services.query",
            f"--QueryService.results_dir={tmp / 'results'}",
        ],
        "environment": {"FORT_POLICY_FILE": str(policy), "FORT_STORE_URL": store_url},
        "oauth_no_confirm": True,
    }  # fmt: skip
    return f"""
from fort_hub import scopes
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.custom_scopes = scopes.CUSTOM_SCOPES
c.JupyterHub.load_roles = c.JupyterHub.load_roles + scopes.load_roles(services=("fort-query",))
c.JupyterHub.services = c.JupyterHub.services + [{service!r}]
"""


TOKENS = {
    "alice-token": ("alice", USE),  # urls-study
    "bob-token": ("bob", USE),  # ads-study
    "admin-token": ("admin", ADMIN),  # admins
    "mallory-token": ("mallory", USE),  # in no group
    "noscope-token": ("alice", [scopes.access(scopes.QUERY_SERVICE)]),
}


class QueryEnv:
    """A running fort-query with the example policy, sample data and the fake hub."""

    def __init__(
        self, tmp: Path, store_url: str, policy_text: str | None = None, sample_data: bool = True,
        **settings,
    ):  # fmt: skip
        self.tmp = tmp
        if sample_data:
            make_datasets(tmp)
        self.policy_path = tmp / "policy.yaml"
        if policy_text is None:
            shutil.copy(EXAMPLE_POLICY, self.policy_path)
        else:
            self.policy_path.write_text(policy_text)
        self.hub = FakeHubApi(TOKENS)
        self.store_url = store_url
        self.settings = settings
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/services/fort-query/api/v1/"
        self.thread: ServiceThread | None = None

    def config(self) -> Config:
        c = Config()
        c.FortSettings.policy_file = str(self.policy_path)
        c.FortSettings.store_url = self.store_url
        c.FortServiceApp.bind_url = f"http://127.0.0.1:{self.port}"
        c.FortServiceApp.service_name = "fort-query"
        c.HubOAuth.api_token = "service-token"
        c.HubOAuth.api_url = self.hub.api_url
        c.HubOAuth.access_scopes = {scopes.access("fort-query")}
        c.QueryService.results_dir = str(self.tmp / "results")
        for key, value in self.settings.items():
            cls, _, trait = key.partition("__")
            setattr(getattr(c, cls), trait, value)
        return c

    def start(self) -> QueryEnv:
        if not self.hub.running:  # started again after stop()
            self.hub = FakeHubApi(TOKENS)
        self.app = QueryService(config=self.config())
        self.app.initialize([])
        self.thread = ServiceThread(self.app).start()
        return self

    def _stop_service(self) -> None:
        if self.thread:
            self.thread.stop()
            self.thread = None

    def stop(self) -> None:
        """Stop the service and the fake hub, and close the store's connections: nothing of
        this environment (thread, listening port, descriptor) outlives it."""
        self._stop_service()
        self.hub.stop()
        shared_store(self.store_url).dispose()

    def restart(self) -> QueryEnv:
        """Stop and start the service (the fake hub and the store stay)."""
        self._stop_service()
        return self.start()

    # ----- HTTP helpers -------------------------------------------------------------------------

    def h(self, token: str = "alice-token", **extra) -> dict:
        return {"Authorization": f"token {token}", **extra}

    def post(self, sql: str, dataset: str = "url_shares", token: str = "alice-token"):
        return requests.post(
            self.base + "queries", json={"sql": sql, "dataset": dataset},
            headers=self.h(token), timeout=30,
        )  # fmt: skip

    def get(self, path: str, token: str = "alice-token", **kw):
        return requests.get(self.base + path, headers=self.h(token, **kw.pop("headers", {})),
                            timeout=30, **kw)  # fmt: skip

    def wait(self, qid: str, token: str = "alice-token", timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.get(f"queries/{qid}", token)
            assert r.status_code == 200, r.text
            if r.json()["state"] not in ("queued", "running"):
                return r.json()
            time.sleep(0.02)
        raise TimeoutError(f"query {qid} still running")

    def run(self, sql: str, dataset: str = "url_shares", token: str = "alice-token") -> dict:
        r = self.post(sql, dataset, token)
        assert r.status_code == 202, r.text
        return self.wait(r.json()["id"], token)


def service_process(tmp: Path, store_url: str) -> subprocess.Popen:
    """fort-query (:func:`serve_until_stdin_closes`) in a process of its own: its URL is the
    first line of its stdout; closing its stdin stops it."""
    code = "import sys; from tests.query_support import serve_until_stdin_closes as s; s(*sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(tmp), store_url], cwd=Path(__file__).parent.parent,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def serve_until_stdin_closes(tmp: str, store_url: str) -> None:
    """A fort-query service (QueryEnv) in this process, its URL on stdout, until stdin closes:
    for tests that need the service in a process of its own (e.g. to kill it)."""
    env = QueryEnv(Path(tmp), store_url).start()
    print(env.base, flush=True)
    sys.stdin.read()
    env.stop()
