"""A tiny round-robin TCP front for tests: each new connection goes to the next backend (the
one after it if that backend refuses), like a Kubernetes Service in front of a Deployment's
pods. Runs on its own thread and event loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading

from tests.hubproc import free_port


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
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
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
