"""Keep a running service's policy current: reload when the file changes, keep the last good one."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from .loader import PolicyError, load_policy
from .model import Policy

log = logging.getLogger("fort_hub.policy")


class PolicyWatcher:
    """Holds the current :class:`Policy` for a long-running process.

    Call :meth:`check` periodically (services do it from a tornado ``PeriodicCallback``). When the
    file's modification time, size or inode changed it is read again; a valid file replaces the
    policy and calls every ``on_change`` callback, an invalid one is logged loudly, error by
    error, and the last good policy stays in force.

    The first load (the constructor) raises :class:`PolicyError`: a service must not start on a
    broken policy.
    """

    def __init__(self, path: str | os.PathLike, on_change: Callable[[Policy], None] | None = None):
        self.path = Path(path)
        self._callbacks: list[Callable[[Policy], None]] = [on_change] if on_change else []
        self._stamp = self._stat()
        self.policy: Policy = load_policy(self.path)
        self.last_errors: list = []

    def on_change(self, callback: Callable[[Policy], None]) -> None:
        self._callbacks.append(callback)

    def _stat(self):
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def check(self) -> bool:
        """Reload if the file changed. Returns True when a new policy took effect."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            policy = load_policy(self.path)
        except PolicyError as e:
            self.last_errors = e.errors
            log.error(
                "Policy %s changed but is invalid; keeping the last good policy. %s", self.path, e
            )
            return False
        self.policy = policy
        self.last_errors = []
        log.info("Policy reloaded from %s", self.path)
        for cb in self._callbacks:
            try:
                cb(policy)
            except Exception:
                log.exception("policy on_change callback %r failed", cb)
        return True
