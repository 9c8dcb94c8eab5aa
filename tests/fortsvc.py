"""Test helpers for the fort services: run a service app in-process (in a thread with its own
event loop) next to a real hub that knows it as an external service, and mint user tokens."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import requests
from traitlets.config import Config

from fort_hub import scopes
from tests.hubproc import RunningHub, free_port

#: the services' FORT_COOKIE_SECRET (it also signs the hub's answers they share)
SHARED_SECRET = bytes.fromhex("5e" * 32)


class ServiceThread:
    """Runs ``app.start_serving()`` on a private event loop in a daemon thread.

    ``stop()`` returns once the service stopped listening and its thread ended (else it raises):
    a service left running could answer, or hold a port, for a later test."""

    def __init__(self, app):
        self.app = app
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        async def main():
            try:
                await self.app.start_serving()
            except BaseException as e:
                self.error = e
                if getattr(self.app, "http_server", None) is not None:
                    self.app.http_server.stop()
                raise
            finally:
                self.ready.set()
            if not self.stopped:  # else stop() came while it started: it stops at once
                await self.app._stopping.wait()
            await self.app.shutdown()

        asyncio.run(main())

    def call(self, coro_fn, *args, timeout=30):
        """Run ``coro_fn(*args)`` on the service's loop and return its result."""
        fut = asyncio.run_coroutine_threadsafe(coro_fn(*args), self.app.loop)
        return fut.result(timeout)

    def start(self):
        self.thread.start()
        if not self.ready.wait(30) or self.error:
            self.stopped = True  # a service that comes up late must not bind a port then
            raise RuntimeError(f"service did not start: {self.error}")
        return self

    def stop(self, timeout: float = 30):
        self.stopped = True
        self.app.stop()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"{self.app.service_name} did not stop within {timeout} s")


class ServiceSlot:
    """One external service known to the hub: name, port, token."""

    def __init__(self, name: str, oauth_scopes: list[str] | None = None, token_only=False):
        self.name = name
        self.oauth_scopes = oauth_scopes
        self.token_only = token_only  # a service that only holds a token (no URL)
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.url = f"http://127.0.0.1:{self.port}"

    def hub_entry(self, public_url: str) -> dict:
        if self.token_only:
            return {"name": self.name, "api_token": self.token}
        entry = {
            "name": self.name,
            "url": self.url,
            "api_token": self.token,
            "oauth_client_id": f"service-{self.name}",
            "oauth_redirect_uri": f"{public_url}/services/{self.name}/oauth_callback",
            "oauth_no_confirm": True,
        }
        if self.oauth_scopes:
            entry["oauth_client_allowed_scopes"] = self.oauth_scopes
        return entry

    def config(self, hub: RunningHub, policy_file: Path | str, store_url: str) -> Config:
        c = Config()
        c.FortSettings.policy_file = str(policy_file)
        c.FortSettings.store_url = store_url
        c.FortServiceApp.bind_url = self.url
        c.FortServiceApp.service_name = self.name
        c.FortServiceApp.policy_reload_interval = 0.2
        c.FortServiceApp.cookie_secret = SHARED_SECRET  # one for all, as a deployment sets
        c.HubOAuth.api_token = self.token
        c.HubOAuth.api_url = hub.hub_api_url
        c.HubOAuth.oauth_client_id = f"service-{self.name}"
        c.HubOAuth.oauth_redirect_uri = f"{hub.url}/services/{self.name}/oauth_callback"
        c.HubOAuth.base_url = f"/services/{self.name}/"
        c.HubOAuth.hub_prefix = "/hub/"
        c.HubOAuth.hub_host = ""
        c.HubOAuth.access_scopes = {scopes.access(self.name)}
        return c


def hub_config(slots: list[ServiceSlot], public_url: str, extra: str = "") -> str:
    """Hub config text: dummy auth, the fort custom scopes and roles, and *slots* as services."""
    entries = [s.hub_entry(public_url) for s in slots]
    names = tuple(s.name for s in slots)
    return f"""
from fort_hub import scopes
SERVICES = {names!r}
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.custom_scopes = scopes.CUSTOM_SCOPES
c.JupyterHub.load_roles = c.JupyterHub.load_roles + scopes.load_roles(services=SERVICES)
c.JupyterHub.services = c.JupyterHub.services + {entries!r}
{extra}
"""


USERS = ("alice", "bob", "carol", "dave", "admin")


@contextlib.contextmanager
def groups_service_on_hub(
    work: Path,
    slot: ServiceSlot | None = None,
    extra_slots: tuple[ServiceSlot, ...] = (),
    extra_config: str = "",
    users: tuple[str, ...] = USERS,
    configure: Callable[[Config], None] | None = None,
    *,
    hub_groups: bool,
) -> Iterator[SimpleNamespace]:
    """fort-groups in this process (passes only when a test asks: ``reconcile_interval`` is an
    hour) on a real hub with the example policy (copied into *work*) and *users*: a namespace
    of ``hub``, ``app``, ``svc`` (the :class:`ServiceThread`), ``policy`` and ``slot``.
    *hub_groups*: ``FortSettings.hub_groups`` (whether study groups are copied to the hub);
    *configure* changes the service's config before it starts."""
    from fort_hub.services.groups import GroupsService
    from tests.conftest import EXAMPLE_POLICY

    policy = work / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, policy)
    slot = slot or ServiceSlot(scopes.GROUPS_SERVICE)
    hub = RunningHub(work / "hub")
    hub.extra_config = hub_config([slot, *extra_slots], hub.url, extra=extra_config)
    cfg = slot.config(hub, policy, f"sqlite:///{work / 'fort.sqlite'}")
    cfg.GroupsService.reconcile_interval = 3600
    cfg.FortSettings.hub_groups = hub_groups
    if configure is not None:
        configure(cfg)
    app = GroupsService(config=cfg)
    app.initialize([])
    svc = ServiceThread(app).start()  # before the hub, which waits for its services
    try:
        hub.start()
        make_users(hub, *users)
        yield SimpleNamespace(hub=hub, app=app, svc=svc, policy=policy, slot=slot)
    finally:
        svc.stop()
        hub.stop()


def make_users(hub: RunningHub, *names: str) -> None:
    r = requests.post(
        hub.api("users"), json={"usernames": list(names)}, headers=hub.admin_headers, timeout=30
    )
    assert r.status_code in (201, 409), r.text


def user_token(hub: RunningHub, name: str, token_scopes: list[str] | None = None) -> str:
    body = {"note": "test"}
    if token_scopes is not None:
        body["scopes"] = token_scopes
    r = requests.post(
        hub.api(f"users/{name}/tokens"), json=body, headers=hub.admin_headers, timeout=30
    )
    assert r.status_code == 201, r.text
    return r.json()["token"]


def auth(token: str) -> dict:
    return {"Authorization": f"token {token}"}


def with_policy_group(policy: Path, app, entry: str) -> str:
    """Add the policy group *entry* (YAML, an item of ``groups:``) to the policy file and wait
    until the service *app* has read it; returns the policy's text before, to restore."""
    text = policy.read_text()
    name = entry.split("name: ", 1)[1].split("\n", 1)[0]
    rewrite_policy(policy, app, text.replace("groups:\n", "groups:\n" + entry, 1),
                   lambda p: name in p.groups)  # fmt: skip
    return text


def rewrite_policy(policy: Path, app, text: str, until) -> None:
    """Write *text* as the policy file and wait (30 s at most) until the service *app* has read
    it: ``until(app.fort_policy)`` is true."""
    policy.write_text(text)
    deadline = time.monotonic() + 30
    while not until(app.fort_policy):
        assert time.monotonic() < deadline, "the service did not reload the policy"
        time.sleep(0.1)


def restore_policy(policy: Path, text: str, hub: RunningHub, group: str) -> None:
    """Write the policy *text* back and wait until the hub group *group* is empty."""
    policy.write_text(text)
    deadline = time.monotonic() + 30
    while True:
        r = requests.get(hub.api(f"groups/{group}"), headers=hub.admin_headers, timeout=30)
        if r.status_code == 404 or not r.json()["users"]:
            return
        assert time.monotonic() < deadline, r.json()["users"]
        time.sleep(0.2)


class StuckPass:
    """fort-groups' reconciliation stuck in its listing of the hub's users (a slow or
    unreachable hub): pass *n* (counted from 1 in ``passes``) waits there, holding the
    reconciliation lock, until ``release(n)``; ``release()`` lets every pass through.
    ``start()`` runs a pass and returns once it is stuck."""

    def __init__(self, app, monkeypatch):
        self.app, self.hub_users = app, app.reconciler.hub_users
        self.listed = self.hub_users.current
        self.passes = self.released = 0
        monkeypatch.setattr(self.hub_users, "current", self.current)

    async def current(self):
        self.passes += 1
        n = self.passes
        while self.released < n:
            await asyncio.sleep(0.02)
        return await self.listed()

    def release(self, through: int = 1 << 30) -> None:
        self.released = through

    def wait_stuck(self, n: int) -> None:
        """Until pass *n* has reached the listing."""
        deadline = time.monotonic() + 30
        while self.passes < n:
            assert time.monotonic() < deadline, f"pass {n} did not start"
            time.sleep(0.02)

    def start(self):
        running = asyncio.run_coroutine_threadsafe(self.app.reconcile("test"), self.app.loop)
        self.wait_stuck(self.passes + 1)
        return running
