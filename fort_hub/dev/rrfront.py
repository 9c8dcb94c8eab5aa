"""A tiny round-robin TCP front: each new connection goes to the next backend (the one after it
if that backend refuses), like a Kubernetes Service in front of a Deployment's pods. DEVELOPMENT
ONLY: tests/test_replicas.py and the scale harness (benchmarks/bench_scale.py --replicas N) put
one in front of the replicas of each fort service.

In a thread of the caller (its own event loop)::

    front = RoundRobinFront([("127.0.0.1", 10201), ("127.0.0.1", 10202)]).start()

or as a process of its own, one front per ``--front`` until SIGTERM (then it prints how many
connections each backend got)::

    python -m fort_hub.dev.rrfront --front 10101=127.0.0.1:10201,127.0.0.1:10202
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import threading

from fort_hub.dev.ports import free_port


class RoundRobinFront:
    def __init__(self, backends: list[tuple[str, int]], port: int | None = None):
        self.backends = list(backends)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections: list[int] = []  # index of the backend each connection went to
        self._next = itertools.cycle(range(len(self.backends)))
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RoundRobinFront:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the round-robin front did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop = loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, backlog=1024)
        )
        self._ready.set()
        loop.run_forever()
        self._server.close()
        pending = asyncio.all_tasks(loop)  # connections still open: end them
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending))
        loop.close()

    async def _connect(self):
        for _ in range(len(self.backends)):
            i = next(self._next)
            host, port = self.backends[i]
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                continue  # a replica that is down: the next one answers
            self.connections.append(i)
            return reader, writer
        return None

    async def _serve(self, client_r, client_w) -> None:
        upstream = await self._connect()
        if upstream is None:
            client_w.close()
            return
        up_r, up_w = upstream

        async def pipe(r, w):
            with contextlib.suppress(ConnectionError, OSError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                w.close()

        with contextlib.suppress(asyncio.CancelledError):  # the front stopping
            await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))


def parse_front(spec: str) -> tuple[int, list[tuple[str, int]]]:
    """``PORT=HOST:PORT,HOST:PORT`` -> (port, backends)."""
    port, _, backends = spec.partition("=")
    out = []
    for b in filter(None, backends.split(",")):
        host, _, bport = b.rpartition(":")
        out.append((host or "127.0.0.1", int(bport)))
    if not out:
        raise argparse.ArgumentTypeError(f"{spec!r}: no backend (PORT=HOST:PORT,HOST:PORT)")
    return int(port), out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="round-robin TCP fronts (development only)")
    p.add_argument("--front", action="append", type=parse_front, required=True,
                   help="PORT=HOST:PORT,HOST:PORT (repeatable)")  # fmt: skip
    args = p.parse_args(argv)
    fronts = [RoundRobinFront(backends, port).start() for port, backends in args.front]
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    for f in fronts:
        f.stop()
        counts = [f.connections.count(i) for i in range(len(f.backends))]
        print(f"front :{f.port}: connections per backend {counts}", flush=True)


if __name__ == "__main__":
    main()
