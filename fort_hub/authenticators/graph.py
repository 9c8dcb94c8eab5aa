"""``GraphAPI``: the Facebook Graph API client mixed into :class:`FacebookOAuthenticator`.

It uses the host ``OAuthenticator``'s ``httpfetch``, ``client_secret`` and
``validate_server_cert``. Every call made with an access token carries ``appsecret_proof``;
Graph errors and network failures become :class:`~.meta.GraphError` with a message for the user
and one structured log line (``facebook.graph_error ...``) for the admin.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlencode

from tornado.httpclient import HTTPClientError
from traitlets import Float, Integer, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from .meta import GraphError, appsecret_proof, graph_error


class GraphAPI(LoggingConfigurable):
    graph_url = Unicode(
        "https://graph.facebook.com",
        help="""Origin of the Graph API (code exchange, `/me`, `debug_token`).

            c.FacebookOAuthenticator.graph_url = "https://graph.facebook.com"
        """,
    ).tag(config=True)

    graph_api_version = Unicode(
        "v23.0",
        help="""Graph API version used in every URL, e.g. `v23.0`.

            c.FacebookOAuthenticator.graph_api_version = "v23.0"
        """,
    ).tag(config=True)

    graph_max_clients = Integer(
        100,
        help="""Graph API requests in flight at once (a login makes three or four: code
        exchange, `/me` and `debug_token`, optionally `fb_exchange_token`). Graph calls get their
        own HTTP client: tornado's shared default allows 10 and queues the rest, counting the
        wait against `graph_timeout`, so a burst of logins failed as "Facebook could not be
        reached" while Facebook was fine.

            c.FacebookOAuthenticator.graph_max_clients = 200
        """,
    ).tag(config=True)

    @validate("graph_max_clients")
    def _validate_max_clients(self, proposal):
        if proposal["value"] < 1:
            raise TraitError(f"{type(self).__name__}.graph_max_clients must be at least 1")
        return proposal["value"]

    graph_timeout = Float(
        10.0, help="""Seconds to wait for each Graph API call.

            c.FacebookOAuthenticator.graph_timeout = 10
        """,
    ).tag(config=True)  # fmt: skip

    @validate("graph_api_version")
    def _validate_version(self, proposal):
        if not re.fullmatch(r"v\d+\.\d+", proposal["value"]):
            raise ValueError(
                f"{type(self).__name__}.graph_api_version must look like 'v23.0', "
                f"not {proposal['value']!r}"
            )
        return proposal["value"]

    def _graph_endpoint(self, path: str) -> str:
        return f"{self.graph_url.rstrip('/')}/{self.graph_api_version}/{path}"

    async def graph(self, path: str, params: dict, token: str | None = None) -> dict:
        """GET a Graph endpoint, adding ``access_token`` + ``appsecret_proof`` when *token* is
        given. Returns the JSON object; raises :class:`GraphError` with a readable message."""
        query = dict(params)
        if token:
            query.update(
                access_token=token, appsecret_proof=appsecret_proof(token, self.client_secret)
            )
        url = f"{self._graph_endpoint(path)}?{urlencode(query)}"
        try:
            resp = await self.httpfetch(
                url, f"calling Facebook {path}", parse_json=False, raise_error=False,
                method="GET", headers={"Accept": "application/json", "User-Agent": "JupyterHub"},
                validate_cert=self.validate_server_cert, request_timeout=self.graph_timeout,
            )  # fmt: skip
        except (TimeoutError, HTTPClientError, OSError) as e:
            self.log.error("facebook.graph_unreachable path=%s error=%r", path, str(e))
            raise GraphError(
                "Facebook could not be reached from this hub. Please try again in a few minutes.",
                503,
            ) from None
        try:
            body = json.loads(resp.body.decode("utf8", "replace")) if resp.body else None
        except ValueError:
            body = None
        if resp.code >= 400 or not isinstance(body, dict) or "error" in body:
            err = graph_error(body, resp.code)
            self.log.warning(
                "facebook.graph_error path=%s http=%s code=%s subcode=%s fbtrace_id=%s",
                path, resp.code, err.code, err.subcode, err.fbtrace_id,
            )  # fmt: skip
            raise err
        return body
