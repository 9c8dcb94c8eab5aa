"""The processes a test session starts, killed however the session ends.

Hubs, fort services, configurable-http-proxy and notebook servers started by the tests
outlived an interrupted ``pytest`` (SIGTERM, SIGHUP, or a Ctrl-C whose teardown did not run)
and disturbed the next benchmark. Now:

- helpers start their processes with :func:`spawn`: a process group of its own (a signal to
  the session does not reach it half-way) registered here;
- :func:`install` (``tests/conftest.py``'s ``pytest_configure``) marks the session's
  environment with a token of its own (:data:`MARK`: every process started from it inherits
  it, also those a hub starts in sessions of their own, such as its proxy), and kills them all
  at the session's finish (``pytest_sessionfinish``), at exit (``atexit``) and on SIGTERM,
  SIGINT and SIGHUP (then the signal's previous action runs: pytest's KeyboardInterrupt for
  SIGINT, else death by that signal);
- :func:`kill_all` sends SIGTERM to the registered groups, to the descendants of this process
  and to every process carrying the session's mark, waits up to :data:`GRACE` seconds (a hub
  stops its proxy and services), then SIGKILLs what is left.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

#: the environment variable naming the test session that started a process
MARK = "FORT_TEST_SESSION"
#: seconds the processes get to stop after SIGTERM
GRACE = 5.0
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_registered: list[subprocess.Popen] = []
_previous: dict[int, object] = {}
_installer: int | None = None  # the pid of the session that installed the handlers
_lock = threading.RLock()


def spawn(cmd: list[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` in a process group of its own, registered for :func:`kill_all`."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    with _lock:
        _registered.append(proc)
    return proc


def install() -> None:
    """Mark this session's environment; kill its processes at exit and on SIGTERM, SIGINT and
    SIGHUP. Each session gets its own mark (a session started by another session's test does
    not kill its parent's processes, nor they its)."""
    if _previous:
        return
    global _installer
    _installer = os.getpid()
    os.environ[MARK] = f"{_installer}-{secrets.token_hex(8)}"
    atexit.register(kill_all)
    for sig in SIGNALS:
        previous = signal.getsignal(sig)
        if previous is signal.SIG_IGN:  # e.g. SIGHUP under nohup: the run is meant to survive
            continue
        _previous[sig] = signal.signal(sig, _on_signal)


def reinstall() -> None:
    """Take the signals back from code a test ran in this process that set its own handlers
    (``fort-hub demo``'s ``main`` called in process, say); called after every test."""
    for sig in _previous:
        if signal.getsignal(sig) is not _on_signal:
            signal.signal(sig, _on_signal)


def _on_signal(signum, frame) -> None:
    if os.getpid() != _installer:  # a process forked from the session: not its processes
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    kill_all()
    previous = _previous.get(signum)
    if callable(previous):
        previous(signum, frame)  # SIGINT: pytest's KeyboardInterrupt (teardown, summary)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent, start time) of *pid*, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[19])


def alive(pid: int) -> bool:
    """Whether process *pid* exists and is not a zombie."""
    state = _stat(pid)
    return state is not None and state[0] != "Z"


def _pids() -> Iterator[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def session_processes() -> dict[int, int]:
    """pid -> start time of every live process of this session (not this one): registered,
    descendants of this process, or carrying this session's mark."""
    me, mark = os.getpid(), os.environ.get(MARK, "")
    needle = f"{MARK}={mark}".encode() + b"\0" if mark else None
    stats = {pid: s for pid in _pids() if (s := _stat(pid)) is not None and s[0] != "Z"}
    found = {p.pid for p in _registered if p.pid in stats}
    children: dict[int, list[int]] = {}
    for pid, (_, parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    todo = [me, *found]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    if needle is not None:
        for pid in stats.keys() - found:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read():
                    found.add(pid)
    found.discard(me)
    return {pid: stats[pid][2] for pid in found}


def _signal(targets: dict[int, int], sig: int) -> None:
    for pid, started in targets.items():
        now = _stat(pid)
        if now is not None and now[0] != "Z" and now[2] == started:  # not a reused pid
            with contextlib.suppress(OSError):
                os.kill(pid, sig)


def _alive(targets: dict[int, int]) -> list[int]:
    return [p for p, t in targets.items() if (s := _stat(p)) and s[0] != "Z" and s[2] == t]


def kill_all(grace: float = GRACE) -> None:
    """Stop every process of this session: SIGTERM, then SIGKILL after *grace* seconds.
    Nothing in a process forked from the session (its own exit must not kill the session's)."""
    if _installer is not None and os.getpid() != _installer:
        return
    with _lock:
        groups = [p for p in _registered if p.poll() is None]  # unreaped: the group is theirs
        _registered[:] = groups
        targets = session_processes()
        for proc in groups:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
        _signal(targets, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while (targets or groups) and time.monotonic() < deadline:
            if not _alive(targets) and all(p.poll() is not None for p in groups):
                break
            time.sleep(0.05)
        _signal(targets, signal.SIGKILL)
        for proc in groups:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything left in the group
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        _registered.clear()
