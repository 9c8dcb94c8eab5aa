"""Left alone in stop 19: killing a pytest run left its hubs, their proxies and services
running (they disturbed a benchmark). A session interrupted by SIGTERM, SIGHUP or SIGINT
kills every process it started (tests/children.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.children import MARK, alive, session_processes
from tests.conftest import ROOT


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == parent and int(name) not in found:
                found.add(int(name))
                todo.append(int(name))
    return found


@pytest.mark.parametrize(
    ("sig", "what"), [(signal.SIGTERM, "hub"), (signal.SIGHUP, "child"), (signal.SIGINT, "child")]
)
def test_an_interrupted_session_leaves_no_process(tmp_path, sig, what):
    """The inner session (tests/children_session.py) starts a hub (its proxy too) or a plain
    child; killed, it leaves none of them running."""
    ready = tmp_path / "ready"
    env = {**os.environ, "FORT_CHILDREN_READY": str(ready), "PYTHONPATH": str(ROOT)}
    env.pop(MARK, None)
    started: set[int] = set()
    session = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"tests/children_session.py::test_a_{what}_waits_for_the_session_to_be_killed",
         "--basetemp", str(tmp_path / "inner")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() or not ready.read_text():
            assert session.poll() is None, session.stdout.read().decode()
            assert time.monotonic() < deadline, "the inner session's hub never started"
            time.sleep(0.1)
        child = int(ready.read_text())
        started = descendants(session.pid)
        proxies = [p for p in started if b"configurable-http-proxy" in cmdline(p)]
        assert child in started and (proxies or what != "hub"), started  # with the hub's proxy
        session.send_signal(sig)
        session.wait(timeout=60)
        deadline = time.monotonic() + 10
        while any(map(alive, started)) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {p: cmdline(p)[:120] for p in started if alive(p)}
        assert left == {}, left
    finally:
        if session.poll() is None:
            session.kill()
        session.wait()
        for pid in started:  # whatever the test found left
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ")
    except OSError:
        return b""


def test_the_session_finds_its_processes_by_their_mark(tmp_path):
    """A process of this session that left it (its own session, its parent gone: as a hub's
    proxy after a crash) is still found by the mark it inherited."""
    orphan = subprocess.run(
        [sys.executable, "-c", "import os, subprocess, sys; p = subprocess.Popen([sys.executable,"
         " '-c', 'import time; time.sleep(60)'], start_new_session=True,"
         " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    pid = int(orphan.stdout)
    try:
        assert pid not in descendants(os.getpid())
        assert pid in session_processes()
    finally:
        os.kill(pid, signal.SIGKILL)
