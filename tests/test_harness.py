"""The test harness itself: a real hub starts and answers; the PostgreSQL schema fixture works."""

import contextlib
import os
import socket
import threading
import time
import types

import requests

from fort_hub.dev import ports
from fort_hub.store import Store
from tests.hubproc import RunningHub
from tests.query_support import QueryEnv


def test_real_hub_starts_with_python_chp(tmp_path):
    with RunningHub(tmp_path, "c.JupyterHub.authenticator_class = 'dummy'") as hub:
        r = requests.get(hub.api("users"), headers=hub.admin_headers, timeout=10)
        assert r.status_code == 200
        assert r.json() == []
        # through the proxy, the login page is served
        assert requests.get(hub.url + "/hub/login", timeout=10).status_code == 200


def test_store_schema_is_idempotent(store_url):
    Store(store_url).dispose()
    s = Store(store_url)  # second creation must not fail
    s.audit.record("svc", "test.action", "r", "allow", "because")
    assert s.audit.verify().ok


def _descriptors() -> dict[str, str]:
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return found


def _tcp_sockets() -> dict[str, tuple[int, bool]]:
    """This process's TCP sockets: ``socket:[inode]`` -> (local port, listening)."""
    found = {}
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                found[f"socket:[{fields[9]}]"] = (port, fields[3] == "0A")
    return found


def _not_ours(left: dict[str, str], listening_before: set[int]) -> dict[str, str]:
    """*left* without the connections accepted by a server that was listening before the
    cycle: the session's services in this process (tests/clientstack.py) answer the hub's
    health check every minute, whatever this test does."""
    tcp = _tcp_sockets()
    return {
        fd: target
        for fd, target in left.items()
        if not (target in tcp and tcp[target][0] in listening_before and not tcp[target][1])
    }


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_query_env_leaves_no_thread_port_or_descriptor_behind(tmp_path):
    """A stopped QueryEnv kept its fake hub API listening (a thread and a port per test), the
    service's HTTP session to the hub (JupyterHub 6: aiohttp with c-ares' threads, epoll,
    inotify and pipes) and the store's SQLite connections: some 16 descriptors per test, past
    1,023 in a full run, and threads holding ports other tests' services were given."""

    def cycle(folder):  # two services in one process (as in FortStack), one restarted
        envs = [QueryEnv(folder / n, f"sqlite:///{folder / n / 'fort.sqlite'}") for n in "ab"]
        for env in envs:
            assert env.start().run("SELECT 1 AS x")["state"] == "succeeded"  # asks the hub API
        envs[1].restart()
        assert envs[1].run("SELECT 1 AS x")["state"] == "succeeded"
        for env in envs:  # the one holding JupyterHub's global HTTP client stops first
            env.stop()
        return envs

    cycle(tmp_path / "first")  # process-wide singletons (e.g. pycares' reaper thread) start
    fds, threads = _descriptors(), set(threading.enumerate())
    tcp = _tcp_sockets()
    listening = {tcp[t][0] for t in fds.values() if t in tcp and tcp[t][1]}
    envs = cycle(tmp_path / "second")
    deadline = time.monotonic() + 10  # pycares closes a resolver's channel on its own thread
    while (
        left := _not_ours({k: v for k, v in _descriptors().items() if fds.get(k) != v}, listening)
    ) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == {}
    assert [t.name for t in threading.enumerate() if t not in threads] == []
    assert all(_refused(env.port) and _refused(env.hub.port) for env in envs)


def test_free_port_never_hands_out_a_port_twice(monkeypatch):
    """The kernel gives a free port out again at once; a port chosen earlier could then be
    bound late by a service of an earlier test while a later test's service wants it."""
    fresh = iter([41001, 41001, 41002, 41001, 41003])

    class Probe:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, address):
            self.port = next(fresh)

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(ports, "socket", types.SimpleNamespace(socket=Probe))
    monkeypatch.setattr(ports, "_handed_out", set())
    assert [ports.free_port() for _ in range(3)] == [41001, 41002, 41003]
