"""The scale harness's notebook stand-in (benchmarks/scale_notebook.py) checks tokens as
jupyterhub-singleuser's HubAuth does: with its hub, cached per token, 403 without a good one,
and the hub's readiness check (``/user/NAME/api``) answered without a token."""

from __future__ import annotations

import sys
from pathlib import Path

from tornado import web
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from scale_notebook import TokenChecker, make_app

MODELS = {
    "alice-server": {"name": "alice", "scopes": ["access:servers!server=alice/"]},
    "bob-server": {"name": "bob", "scopes": ["access:servers!server=bob/"]},
}


def serve(app) -> tuple[HTTPServer, str]:
    socks = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(socks)
    return server, f"http://127.0.0.1:{socks[0].getsockname()[1]}"


async def test_api_requests_need_a_token_of_the_hub_checked_once_per_token():
    asked: list[str] = []

    class HubUser(web.RequestHandler):
        def get(self):
            token = self.request.headers.get("Authorization", "").split(" ", 1)[-1]
            asked.append(token)
            if token not in MODELS:
                raise web.HTTPError(403)
            self.finish(MODELS[token])

    hub, hub_url = serve(web.Application([(r"/hub/api/user", HubUser)]))
    notebook, nb_url = serve(make_app(TokenChecker(hub_url + "/hub/api")))
    client = AsyncHTTPClient()

    async def get(path, token=None):
        headers = {"Authorization": f"token {token}"} if token else {}
        r = await client.fetch(nb_url + path, headers=headers, raise_error=False)
        return r.code

    try:
        assert await get("/user/alice/api") == 200  # the hub's readiness check
        assert await get("/user/alice/api/status") == 403
        assert await get("/user/alice/api/status", "forged") == 403
        assert await get("/user/alice/api/status", "bob-server") == 403  # not bob's server
        assert asked == ["forged", "bob-server"]
        for _ in range(3):
            assert await get("/user/alice/api/status", "alice-server") == 200
        assert asked == ["forged", "bob-server", "alice-server"]  # cached after the first
    finally:
        notebook.stop()
        hub.stop()


async def test_without_auth_every_request_gets_200():
    notebook, nb_url = serve(make_app(None))
    try:
        r = await AsyncHTTPClient().fetch(nb_url + "/user/alice/api/status", raise_error=False)
        assert r.code == 200
    finally:
        notebook.stop()
