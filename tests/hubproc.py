"""Run a real JupyterHub (with the Python configurable-http-proxy) as a subprocess for tests.

    with RunningHub(tmp_path, extra_config="c.JupyterHub.authenticator_class = 'dummy'") as hub:
        r = requests.get(hub.api("users"), headers=hub.admin_headers)

The hub listens on free loopback ports; ``hub.url`` is the public (proxy) URL and
``hub.admin_token`` a service token with admin scopes. On failure its log is attached to the
exception so a failing test shows why.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import requests

from fort_hub.dev.ports import free_port
from tests import children


def wait_http(
    url: str,
    timeout: float = 60,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
    ok=lambda r: r.status_code < 404,
):
    """Poll *url* until a response satisfies *ok* (default: not a 404/5xx)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-5000:] if log and log.exists() else ""
            raise RuntimeError(
                f"process exited with {proc.returncode} before {url} answered:\n{tail}"
            )
        try:
            r = requests.get(url, timeout=2, allow_redirects=False)
            if ok(r):
                return r
            last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = e
        time.sleep(0.2)
    tail = log.read_text()[-5000:] if log and log.exists() else ""
    raise TimeoutError(f"{url} did not answer within {timeout}s ({last}):\n{tail}")


class RunningHub:
    """A JupyterHub process configured by a generated ``jupyterhub_config.py``."""

    def __init__(
        self, workdir: Path, extra_config: str = "", env: dict | None = None, timeout: float = 90
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.hub_port = free_port()
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hub_api_url = f"http://127.0.0.1:{self.hub_port}/hub/api"
        self.admin_token = secrets.token_hex(32)
        self.extra_config = extra_config
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("CONFIGPROXY_AUTH_TOKEN", secrets.token_hex(16))
        self.timeout = timeout
        self.log_path = self.workdir / "jupyterhub.log"
        self.proc: subprocess.Popen | None = None

    @property
    def admin_headers(self) -> dict:
        return {"Authorization": f"token {self.admin_token}"}

    def api(self, path: str) -> str:
        return f"{self.url}/hub/api/{path.lstrip('/')}"

    def config_text(self) -> str:
        bindir = Path(sys.executable).parent
        chp = shutil.which("configurable-http-proxy", path=str(bindir)) or "configurable-http-proxy"
        base = f"""
        c = get_config()  # noqa
        c.JupyterHub.bind_url = {self.url + "/"!r}
        c.JupyterHub.hub_bind_url = "http://127.0.0.1:{self.hub_port}"
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.api_port}"
        c.ConfigurableHTTPProxy.command = [{chp!r}]
        c.ConfigurableHTTPProxy.should_start = True
        c.JupyterHub.db_url = "sqlite:///{self.workdir / "jupyterhub.sqlite"}"
        c.JupyterHub.cookie_secret_file = "{self.workdir / "jupyterhub_cookie_secret"}"
        c.JupyterHub.pid_file = "{self.workdir / "jupyterhub.pid"}"
        c.JupyterHub.cleanup_servers = True
        c.JupyterHub.log_level = "DEBUG"
        c.JupyterHub.services = [{{"name": "test-admin", "api_token": {self.admin_token!r}}}]
        c.JupyterHub.load_roles = [
            {{"name": "test-admin", "scopes": ["admin:users", "admin:groups", "admin:servers",
              "tokens", "admin-ui", "list:services", "read:services"], "services": ["test-admin"]}},
        ]
        """
        return textwrap.dedent(base) + "\n" + textwrap.dedent(self.extra_config)

    def start(self) -> RunningHub:
        cfg = self.workdir / "jupyterhub_config.py"
        cfg.write_text(self.config_text())
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = children.spawn(  # killed with the test session, however it ends
            [sys.executable, "-m", "jupyterhub", "-f", str(cfg)],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_http(self.api(""), timeout=self.timeout, proc=self.proc, log=self.log_path)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> RunningHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
