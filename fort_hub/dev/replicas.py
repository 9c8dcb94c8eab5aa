"""Fort services as real processes on one machine, N replicas of each behind one round-robin
front (:mod:`fort_hub.dev.rrfront`), sharing one store and (for fort-query) one result store.
DEVELOPMENT ONLY: tests/test_replicas.py and the scale harness (benchmarks/bench_scale.py
--replicas N) use it; on Kubernetes the fort-services chart runs the replicas (docs/replicas.md).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fort_hub import scopes
from fort_hub.dev.rrfront import RoundRobinFront, free_port

MODULES = {
    scopes.GROUPS_SERVICE: "fort_hub.services.groups",
    scopes.QUERY_SERVICE: "fort_hub.services.query",
    scopes.CREDENTIALS_SERVICE: "fort_hub.services.credentials",
}


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"no replica listening on {port}:\n{log.read_text()[-3000:]}")


class Replica:
    """One service process, configured by a config file of ``c.*`` lines."""

    def __init__(self, service: str, index: int, work: Path, config_lines: list[str]):
        self.service, self.index = service, index
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = work / f"{service}-{index}_config.py"
        self.log = work / f"{service}-{index}.log"
        lines = [f"c.FortServiceApp.bind_url = {self.url!r}", *config_lines]
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self, env: dict[str, str]) -> Replica:
        self.launch(env)
        self.wait()
        return self

    def launch(self, env: dict[str, str]) -> None:
        """Start the process without waiting for it to listen (see :meth:`wait`)."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", MODULES[self.service], "--config", str(self.config)],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.config.parent,
            )  # fmt: skip

    def wait(self, timeout: float = 60) -> None:
        wait_port(self.port, self.proc, self.log, timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a node or a container dies."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class ReplicatedService:
    """*n* replicas of *service* and the front that spreads connections over them."""

    def __init__(
        self, service: str, n: int, work: Path, config_lines, env: dict[str, str],
        front_port: int | None = None,
    ):  # fmt: skip
        self.replicas = [
            Replica(service, i, work, config_lines(i)) for i in range(n)
        ]  # fmt: skip
        self.env = env
        self.front_port = front_port
        self.front: RoundRobinFront | None = None

    def start(self) -> ReplicatedService:
        for r in self.replicas:  # all starting at once, then each waited for
            r.launch(self.env)
        for r in self.replicas:
            r.wait()
        backends = [("127.0.0.1", r.port) for r in self.replicas]
        self.front = RoundRobinFront(backends, self.front_port).start()
        return self

    def stop(self) -> None:
        if self.front:
            self.front.stop()
        for r in self.replicas:
            r.stop()
