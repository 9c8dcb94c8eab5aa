"""Run ``fort-hub demo`` as a subprocess for the end-to-end tests, and drive it as a user would.

with RunningDemo(tmp_path) as demo:
    s = demo.login("alice")             # requests.Session signed in through the stand-in
    demo.spawn(s, "alice", "python")    # through the hub's REST API, as alice
    env = demo.server_env("alice")      # the notebook's environment, token included
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from fort_hub.dev.demo import READY_LINE
from tests import children
from tests.fbflow import login
from tests.hubproc import free_port


def page_message(html: str) -> str:
    """The message of a JupyterHub error page (its ``<div class="error">``), else the start."""
    m = re.search(r'<div class="error">(.*?)</div>', html, re.S)
    text = re.sub(r"<[^>]+>", " ", m.group(1)) if m else html[:1000]
    return " ".join(text.split())


class RunningDemo:
    def __init__(self, state_dir: Path, rows: int = 50_000, timeout: float = 240):
        self.state = Path(state_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rows = rows
        self.timeout = timeout
        self.log_path = self.state.parent / f"{self.state.name}-demo.log"
        self.proc: subprocess.Popen | None = None
        self.ready_seconds: float | None = None
        self.output = ""

    def start(self) -> RunningDemo:
        cmd = [sys.executable, "-m", "fort_hub.cli", "demo", "--dir", str(self.state)]
        cmd += ["--port", str(self.port), "--rows", str(self.rows), "--timeout", str(self.timeout)]
        self.state.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = children.spawn(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        log.close()
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.timeout + 30:
            self.output = self.log_path.read_text(errors="replace")
            if READY_LINE in self.output:
                self.ready_seconds = time.monotonic() - t0
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"fort-hub demo exited {self.proc.returncode}:\n{self.output}")
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"fort-hub demo not ready in time:\n{self.output[-5000:]}")

    def stop(self) -> int | None:
        """SIGTERM the demo's parent (as Ctrl-C would) and wait; returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.output = self.log_path.read_text(errors="replace")
        return self.proc.returncode

    def leftover_processes(self) -> list[str]:
        """Processes still running whose command line or environment names the state
        directory (the hub, its proxy and services, notebook servers, the stand-in)."""
        needle = str(self.state).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes()
                if needle in cmd or needle in (entry / "environ").read_bytes():
                    args = cmd.replace(b"\0", b" ").decode(errors="replace")[:200]
                    found.append(f"{entry.name}: {args}")
            except OSError:
                continue
        return found

    def logs(self, name: str = "jupyterhub") -> str:
        path = self.state / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> RunningDemo:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----- acting as a user ---------------------------------------------------------------------

    def login(self, identity: str) -> requests.Session:
        s, cb = login(self.url, identity)
        assert cb.status_code == 302, (cb.status_code, page_message(cb.text))
        s.get(self.url + "/hub/home", timeout=30)  # sets the _xsrf cookie
        return s

    @staticmethod
    def xsrf(s: requests.Session) -> dict:
        return {"X-XSRFToken": s.cookies.get("_xsrf", path="/hub/") or s.cookies.get("_xsrf")}

    def spawn(self, s: requests.Session, user: str, profile: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a stop still in progress (e.g. from the browser)
            server = s.get(f"{self.url}/hub/api/users/{user}", timeout=30).json()
            if not server.get("servers", {}).get("", {}).get("pending"):
                break
            time.sleep(0.5)
        r = s.post(
            f"{self.url}/hub/api/users/{user}/server",
            json={"profile": profile},
            headers=self.xsrf(s),
            timeout=60,
        )
        assert r.status_code in (201, 202), (r.status_code, r.text)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = s.get(f"{self.url}/hub/api/users/{user}", timeout=30).json()
            server = model.get("servers", {}).get("", {})
            if server.get("ready"):
                return model
            if not server.get("pending") and not server.get("ready"):
                raise AssertionError(f"{user}'s server failed to start:\n{self.logs()[-4000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"{user}'s server not ready:\n{self.logs()[-4000:]}")

    def stop_server(self, s: requests.Session, user: str) -> None:
        r = s.delete(f"{self.url}/hub/api/users/{user}/server", headers=self.xsrf(s), timeout=60)
        assert r.status_code in (202, 204), (r.status_code, r.text)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until it is gone, so a next test starts clean
            if not s.get(f"{self.url}/hub/api/users/{user}", timeout=30).json().get("servers"):
                return
            time.sleep(0.5)
        raise TimeoutError(f"{user}'s server did not stop:\n{self.logs()[-3000:]}")

    def server_env(self, user: str) -> dict[str, str]:
        """The environment of *user*'s running notebook server (its own token included), read
        from /proc like any process of this machine's user could."""
        marker = f"AWS_CONFIG_FILE={self.state / 'aws'}"
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "environ").read_bytes()
            except OSError:
                continue
            items = dict(
                kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv
            )
            if items.get(
                "JUPYTERHUB_USER"
            ) == user and f"AWS_CONFIG_FILE={items.get('AWS_CONFIG_FILE')}".startswith(marker):
                return items
        raise AssertionError(f"no running notebook server of {user} under {self.state}")
