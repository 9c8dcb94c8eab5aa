"""Loopback ports for the development stacks (the demo, the benchmarks, the tests)."""

from __future__ import annotations

import socket
import threading

_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A loopback port nothing is bound to, and never handed out before in this process.

    The kernel may give a port out again as soon as it is free, so a port chosen for one test
    could be bound late by a service of an earlier test (one restarting, or still starting) and
    a later test's service would find it taken ("Address already in use")."""
    with _handed_out_lock:
        for _ in range(1000):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no loopback port left that this process has not handed out before")
