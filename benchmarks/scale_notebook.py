"""The notebook stand-in of the scale harness (benchmarks/scale_stack.py), in its own process.

Every pod of the Kubernetes double has podIP 127.0.0.1, so one process stands in for every
notebook server: one port per hub (each hub's ``KubeSpawner.port``), and the proxy routes
``/user/<name>/`` there. Like jupyterhub-singleuser it authenticates every API request
(``/user/<name>/api/...``) with the hub that spawned the server: the request's token
(``Authorization: token ...``) is checked with ``GET <hub API>/user``, as
``jupyterhub.services.auth.HubAuth`` does, and a good answer is cached per token for
``cache_max_age`` (300 s, HubAuth's default); a missing or bad token, or a token of another user
without access to this server, gets 403. The hub's readiness check (``/user/<name>/api``, no token,
unauthenticated in jupyter_server too) gets 200. With ``auth=False`` every request gets 200 (the harness before #13's fidelity fix).
"""

from __future__ import annotations

import asyncio
import json
import re
import time

CACHE_MAX_AGE = 300.0  # HubAuth.cache_max_age's default
# /user/<name>/api itself (the version; the hub's readiness check asks it) needs no token, as in
# jupyter_server; everything under it does
API_PATH = re.compile(r"user/([^/]+)/api/.")
STATUS = {"started": "2026-01-01T00:00:00Z", "kernels": 0, "connections": 0}


def token_of(header: str) -> str | None:
    """The token of an ``Authorization: token X`` (or ``Bearer X``) header, as HubAuth reads it."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return None


def may_access(model: dict, name: str) -> bool:
    """Whether the hub's model of a token grants access to *name*'s default server (HubAuth
    checks the token's scopes for ``access:servers!server=<name>/``)."""
    wanted = {"access:servers", f"access:servers!user={name}", f"access:servers!server={name}/"}
    return bool(wanted & set(model.get("scopes") or []))


class TokenChecker:
    """HubAuth's token check against one hub, cached per token for ``max_age`` seconds."""

    def __init__(self, hub_api_url: str, max_age: float = CACHE_MAX_AGE):
        from tornado.httpclient import AsyncHTTPClient

        self.url = hub_api_url.rstrip("/") + "/user"
        self.max_age = max_age
        self.cache: dict[str, tuple[float, dict]] = {}
        self.client = AsyncHTTPClient(max_clients=64)
        self.checks = 0  # requests made to the hub

    async def user(self, token: str) -> dict | None:
        now = time.monotonic()
        hit = self.cache.get(token)
        if hit and hit[0] > now:
            return hit[1]
        self.checks += 1
        r = await self.client.fetch(self.url, headers={"Authorization": f"token {token}"},
                                    raise_error=False, request_timeout=120)  # fmt: skip
        if r.code != 200:  # HubAuth caches no failure
            return None
        model = json.loads(r.body)
        self.cache[token] = (now + self.max_age, model)
        return model


def make_app(checker: TokenChecker | None):
    from tornado import web

    class Server(web.RequestHandler):
        def check_xsrf_cookie(self):
            return

        async def get(self, path):
            m = API_PATH.match(path)
            if checker is not None and m:
                token = token_of(self.request.headers.get("Authorization", ""))
                model = await checker.user(token) if token else None
                if model is None or not may_access(model, m.group(1)):
                    raise web.HTTPError(403)
            self.set_header("X-Jupyter-Server", "scale-standin")
            self.finish(STATUS)

        post = put = delete = patch = get

    return web.Application([(r"/(.*)", Server)])


def serve(conn, kinds: list[str], auth: bool) -> None:
    """Listen on one port per hub; send back ``{kind: port}``, then receive ``{kind: hub API
    URL}`` (the hubs are configured with the ports before they exist); run until the parent
    sends anything more (or goes away)."""

    async def main():
        from tornado.httpserver import HTTPServer
        from tornado.netutil import bind_sockets

        socks = {kind: bind_sockets(0, "127.0.0.1", backlog=1024) for kind in kinds}
        conn.send({kind: s[0].getsockname()[1] for kind, s in socks.items()})
        loop = asyncio.get_running_loop()
        hubs = await loop.run_in_executor(None, conn.recv)
        if not isinstance(hubs, dict):  # stopped before the hubs were configured
            return
        for kind, api_url in hubs.items():
            checker = TokenChecker(api_url) if auth else None
            HTTPServer(make_app(checker)).add_sockets(socks[kind])
        await loop.run_in_executor(None, conn.recv)

    asyncio.run(main())
