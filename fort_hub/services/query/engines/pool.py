"""The service side of the DuckDB query workers (:mod:`.worker`): processes started ahead of
need, taken one per query, returned when they finished cleanly, killed otherwise.

A :class:`WorkerProcess` is one ``worker.py`` child: commands go to its stdin as JSON lines,
frames come back on its stdout. Reads block (they run on the engine's threads, never on the
event loop). Killing a worker (SIGKILL) ends any read on its frames with :class:`WorkerGone`.

Workers are started from the thread that builds the pool and from the engine's threads, which
live as long as the engine: ``PR_SET_PDEATHSIG`` fires when the *thread* that started a worker
ends, not only the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import threading
from typing import Any

import pyarrow as pa

from . import worker as W
from .base import EngineError

WORKER_PROGRAM = W.__file__
#: bytes read at a time when a frame's body is thrown away
SKIP_CHUNK = 1 << 20


class WorkerGone(EngineError):
    """The worker process ended (killed, crashed, or over a limit) while it was needed, or
    none could be started."""


class WorkerProcess:
    """One worker process and the two pipes to it."""

    def __init__(self, config: dict[str, Any]):
        config = {**config, "parent": os.getpid()}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", WORKER_PROGRAM, json.dumps(config)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env={**{k: v for k, v in os.environ.items() if k in W.INHERITED},
                     **W.ENVIRONMENT},
                close_fds=True,
            )  # fmt: skip
        except OSError as e:  # e.g. no memory or process slots left
            raise WorkerGone(f"no query worker could be started: {e}") from None
        self.pid = self.proc.pid
        self.ready = False
        #: the last command was answered completely (the worker waits for the next one)
        self.between_commands = True
        #: set when the worker should not run another query (e.g. it ran out of memory)
        self.retire = False
        self._send_lock = threading.Lock()
        self._last_read: int | None = None

    def alive(self) -> bool:
        return self._poll() is None

    def wait_ready(self, timeout: float) -> None:
        if self.ready:
            return
        # a selector, not select(): a service holding over 1,024 descriptors (many clients)
        # gets ValueError "filedescriptor out of range in select()" from select()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            readable = sel.select(timeout)
        if not readable:
            raise WorkerGone(f"the query worker did not start within {timeout:g} s")
        kind, length, _, _ = self.header()
        self.body(length)
        if kind != W.READY:
            raise WorkerGone(f"the query worker sent frame {kind} before it was ready")
        self.ready = True

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, default=str).encode() + b"\n"
        with self._send_lock:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                raise WorkerGone("the query worker is gone") from None
        if message["op"] != "cancel":
            self.between_commands = False

    def header(self) -> tuple[int, int, int, int]:
        data = self.proc.stdout.read(W.HEADER.size)
        if len(data) < W.HEADER.size:
            raise WorkerGone("the query worker ended")
        kind, length, rows, nbytes = W.HEADER.unpack(data)
        if kind in (W.DONE, W.ERROR, W.DESCRIBED):
            self.between_commands = True
        return kind, length, rows, nbytes

    def body(self, length: int) -> pa.Buffer:
        # Arrow's memory pool: not zero-filled first, and reused from batch to batch (a new
        # bytearray of a large batch is written twice and its pages faulted in every time)
        buf = pa.allocate_buffer(length)
        view, got = memoryview(buf).cast("B"), 0
        while got < length:
            n = self.proc.stdout.readinto(view[got:])
            if not n:
                self.between_commands = False
                raise WorkerGone("the query worker ended mid-answer")
            got += n
        return buf

    def json(self, length: int) -> dict[str, Any]:
        return json.loads(self.body(length).to_pybytes())

    def skip(self, length: int) -> None:
        while length:
            n = len(self.proc.stdout.read(min(length, SKIP_CHUNK)))
            if not n:
                raise WorkerGone("the query worker ended mid-answer")
            length -= n

    def bytes_read(self) -> int | None:
        """The bytes the worker has read from files and pipes so far (``rchar`` of
        ``/proc/<pid>/io``: what a query read, where a killed worker could not say), while it
        runs or has ended but is not yet reaped; once reaped, the last figure read (every
        reap here reads it first); None where it cannot be read (not Linux)."""
        if self.proc.returncode is not None:  # reaped: the pid may be another process's now
            return self._last_read
        try:
            with open(f"/proc/{self.pid}/io", "rb") as f:
                for line in f:
                    if line.startswith(b"rchar:"):
                        self._last_read = int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            pass
        return self._last_read

    def _poll(self) -> int | None:
        """``Popen.poll``, which reaps an ended worker: :meth:`bytes_read` first."""
        if self.proc.returncode is None:
            self.bytes_read()
        return self.proc.poll()

    def kill(self) -> None:
        """SIGKILL (a no-op once it has ended)."""
        if self._poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def reap(self, timeout: float = 5) -> int | None:
        """The exit status (negative: the signal that ended it); the pipes are closed."""
        if self.proc.returncode is None:
            self.bytes_read()
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):  # a write to a dead worker still buffered
                f.close()
        return rc


class WorkerPool:
    """Keeps *spare* started workers waiting (most recently used first) on top of the busy
    ones. A worker returned in a clean state is kept; any other is killed and replaced."""

    def __init__(self, config: dict[str, Any], spare: int, log):
        self.config, self.spare, self.log = config, spare, log
        self._idle: list[WorkerProcess] = []
        self._all: set[WorkerProcess] = set()
        self._lock = threading.Lock()
        self.closed = False
        self.top_up()

    def _spawn(self) -> WorkerProcess:
        w = WorkerProcess(self.config)
        with self._lock:
            self._all.add(w)
            closed = self.closed
        if closed:  # closed meanwhile: close() may have missed it
            w.kill()
            raise WorkerGone("fort-query is shutting down")
        return w

    def top_up(self) -> None:
        """Start workers until *spare* wait (a failure is logged: the next query retries)."""
        with self._lock:
            missing = 0 if self.closed else self.spare - len(self._idle)
        for _ in range(missing):
            try:
                w = self._spawn()
            except WorkerGone as e:
                self.log.error("%s", e)
                return
            with self._lock:
                self._idle.append(w)

    def acquire(self) -> WorkerProcess:
        with self._lock:
            if self.closed:
                raise WorkerGone("fort-query is shutting down")
            taken, dead = None, []
            while self._idle and taken is None:
                w = self._idle.pop()
                if w.alive():
                    taken = w
                else:
                    self._all.discard(w)
                    dead.append(w)
        for w in dead:  # died while waiting (e.g. the kernel's OOM killer)
            w.reap()
        if taken is None:
            taken = self._spawn()
        self.top_up()
        return taken

    def release(self, w: WorkerProcess) -> None:
        """Back to the waiting workers if it is clean and alive; otherwise killed, replaced."""
        if w.between_commands and not w.retire and w.alive():
            with self._lock:
                if not self.closed:
                    self._idle.append(w)
                    return
        self.discard(w)

    def discard(self, w: WorkerProcess) -> int | None:
        w.kill()
        rc = w.reap()
        with self._lock:
            self._all.discard(w)
        self.top_up()
        return rc

    def pids(self) -> list[int]:
        """The process ids of the workers alive now (waiting and busy)."""
        with self._lock:
            return sorted(w.pid for w in self._all if w.alive())

    def close(self) -> None:
        """Kill every worker and reap it: no process outlives the pool."""
        with self._lock:
            self.closed = True
            workers = list(self._all)
            self._idle.clear()
        for w in workers:
            w.kill()
        for w in workers:
            w.reap()
