"""What every fort hub service shares: the traitlets ``Application``, the authenticated handler
base, the hub API client and the ``python -m`` launcher.

A service is a subclass of :class:`FortServiceApp` that lists its handlers::

    class MyService(FortServiceApp):
        name = "fort-mine"
        default_service_name = "fort-mine"

        def handlers(self):
            return [("api/v1/thing", ThingHandler)]   # relative to the service prefix

    class ThingHandler(FortHandler):
        required_scopes = ("custom:fort-mine:use",)

        async def get(self):
            self.write_json({"user": self.current_user["name"]})

and a ``__main__.py`` calling ``MyService.launch_instance()``. Run by the hub
(``c.JupyterHub.services`` entry with ``url`` and ``command``) it binds to
``$JUPYTERHUB_SERVICE_URL``, serves under ``$JUPYTERHUB_SERVICE_PREFIX`` and authenticates with
``HubOAuth`` configured from the ``$JUPYTERHUB_*`` environment (or ``c.HubOAuth.*``).

The handler contract (errors, parameters, XSRF, headers, client address) is in
:mod:`fort_hub.services.handler`; membership and admin decisions in :mod:`fort_hub.access`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import socket
from typing import Any
from urllib.parse import quote, urlencode, urlparse

from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Bytes, Float, Integer, List, TraitError, Unicode, default, validate
from traitlets import Callable as CallableTrait
from traitlets.config import Application, catch_config_error

from ..config import FortSettings, shared_watcher
from ..policy import Policy, PolicyError
from ..redaction import install_redaction
from ..store import StoreError
from .handler import (
    FortHandler,
    FortPageHandler,
    LoginHandler,
    NotFoundHandler,
    OAuthCallbackHandler,
    ServiceError,
    client_address,
    parse_networks,
)
from .hubauth import FortHubOAuth, TokenAnswers
from .metrics import UNMATCHED, MetricsHandler, ServiceMetrics
from .pages import FortPages


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class HubApiError(Exception):
    """A hub REST API call failed; ``status`` is the hub's status (599 when unreachable)."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


class HubApi:
    """A small async client for the JupyterHub REST API with the service's own token."""

    def __init__(self, api_url: str, token: str, timeout: float = 20):
        self.api_url = api_url.rstrip("/") + "/"
        self.token = token
        self.timeout = timeout

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict | None = None,
        accept: str = "application/json",
    ) -> Any:
        url = self.api_url + path.lstrip("/")
        if params:
            url += "?" + urlencode(params)
        req = HTTPRequest(
            url,
            method=method,
            headers={
                "Authorization": f"token {self.token}",
                "Content-Type": "application/json",
                "Accept": accept,
            },
            body=None if body is None and method in ("GET", "DELETE") else json.dumps(body or {}),
            allow_nonstandard_methods=True,
            request_timeout=self.timeout,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req)
        except HTTPClientError as e:
            message = ""
            if e.response is not None and e.response.body:
                try:
                    message = json.loads(e.response.body).get("message", "")
                except (ValueError, AttributeError):
                    message = e.response.body[:200].decode("utf8", "replace")
            raise HubApiError(e.code, f"hub API {method} {path}: {e.code} {message}") from None
        except OSError as e:
            raise HubApiError(599, f"hub API {method} {path}: hub unreachable ({e})") from None
        return json.loads(resp.body) if resp.body else None


def hub_http_client() -> Any:
    """This event loop's client of JupyterHub 6's ``HubAuth`` (an aiohttp session per loop,
    kept until closed, with its DNS resolver's threads and descriptors), or None (JupyterHub 5
    uses tornado's client and holds nothing)."""
    try:
        from jupyterhub.httpclient import JupyterHubHTTPClient
    except ImportError:
        return None
    return JupyterHubHTTPClient.loop_instance()


async def close_hub_http_client(taken_at_start: Any) -> None:
    """Close the client taken at start and the one ``HubAuth`` would use now (they differ when
    another service of this process, holding the global one, stopped first)."""
    for client in {id(c): c for c in (taken_at_start, hub_http_client()) if c}.values():
        await client.close()


def log_request(handler: web.RequestHandler) -> None:
    """Access log without query strings (they may hold tokens)."""
    status = handler.get_status()
    log = handler.settings["fort_app"].log
    level = log.info if status < 400 else log.warning if status < 500 else log.error
    user = getattr(handler, "_hub_auth_user_cache", None) or {}
    level(
        "%s %s %s %.1fms user=%s rid=%s",
        status,
        handler.request.method,
        handler.request.path,
        1000.0 * handler.request.request_time(),
        user.get("name", "-"),
        getattr(handler, "request_id", "-"),
    )
    app = handler.settings["fort_app"]
    app.metrics.observe_request(
        app.route_of(handler), handler.request.method, status, handler.request.request_time()
    )


class FortServiceApp(Application, FortSettings):
    """Base of the fort services (a traitlets Application with a ``python -m`` entry)."""

    name = "fort-service"
    #: the hub service name used when ``$JUPYTERHUB_SERVICE_NAME`` is not set
    default_service_name = "fort-service"

    aliases = {
        "config": "FortServiceApp.config_file",
        "log-level": "Application.log_level",
        "bind-url": "FortServiceApp.bind_url",
        "policy-file": "FortSettings.policy_file",
        "store-url": "FortSettings.store_url",
    }

    config_file = Unicode(
        "",
        help="""A Python config file (``c.<Class>.<trait> = ...``) to load at start.

            python -m fort_hub.services.groups --config /etc/fort/groups_config.py
        """,
    ).tag(config=True)

    service_name = Unicode(
        help="""The hub service name. Defaults to `$JUPYTERHUB_SERVICE_NAME`.

            c.FortServiceApp.service_name = "fort-groups"
        """
    ).tag(config=True)

    @default("service_name")
    def _default_service_name(self):
        return os.environ.get("JUPYTERHUB_SERVICE_NAME") or self.default_service_name

    bind_url = Unicode(
        help="""Where to listen. Defaults to `$JUPYTERHUB_SERVICE_URL` (set by the hub from the
        service's `url`), else http://127.0.0.1:10100.

            c.FortServiceApp.bind_url = "http://0.0.0.0:10101"
        """
    ).tag(config=True)

    @default("bind_url")
    def _default_bind_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL") or "http://127.0.0.1:10100"

    @validate("bind_url")
    def _validate_bind_url(self, proposal):
        u = urlparse(proposal["value"])
        if u.scheme != "http" or not u.port:
            raise TraitError(
                f"FortServiceApp.bind_url must be http://HOST:PORT, not {proposal['value']!r}"
            )
        return proposal["value"]

    replica_name = Unicode(
        help="""This replica's name in the fort store, where replicas of one service sharing
        the store coordinate: fort-query's leases on the queries it runs, fort-groups' lease
        on the periodic reconciliation. Unique among the replicas of a service, and the same
        when a replica restarts (fort-query then fails at once the queries it left in flight).
        Defaults to `<host name>:<port of bind_url>` (on Kubernetes the pod name and the port),
        unique for replicas on one host too.

            c.QueryService.replica_name = "fort-query-1"
        """,
    ).tag(config=True)

    @default("replica_name")
    def _default_replica_name(self):
        return f"{socket.gethostname()}:{urlparse(self.bind_url).port}"

    service_prefix = Unicode(
        help="""URL path the service is served under. Defaults to `$JUPYTERHUB_SERVICE_PREFIX`,
        else /services/<service_name>/.

            c.FortServiceApp.service_prefix = "/services/fort-groups/"
        """
    ).tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self):
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or f"/services/{self.service_name}/"
        return prefix if prefix.endswith("/") else prefix + "/"

    policy_reload_interval = Float(
        5.0,
        help="""Seconds between checks of the policy file; a valid new policy takes effect
        without a restart (an invalid one is logged and the last good one stays).

            c.FortServiceApp.policy_reload_interval = 10
        """,
    ).tag(config=True)

    @validate("policy_reload_interval")
    def _validate_reload(self, proposal):
        if proposal["value"] < 0.1:
            raise TraitError("FortServiceApp.policy_reload_interval must be at least 0.1 s")
        return proposal["value"]

    trusted_proxies = List(
        Unicode(),
        ["127.0.0.0/8", "::1/128"],
        help="""Addresses (or CIDR networks) of the proxy in front of the service. When a
        request comes from one of them, the audit records' `client` is the last
        `X-Forwarded-For` entry (the address that proxy saw); otherwise it is the peer address,
        and forwarded headers (`X-Forwarded-For`, `X-Real-Ip`) are ignored. Entries further left
        are never believed: whoever connects to the proxy writes them. The default trusts
        loopback, where the proxy runs in a single-machine deployment; on Kubernetes list the
        proxy pod's address range, and let no notebook reach the service's port directly (the
        hub's NetworkPolicy).

            c.FortServiceApp.trusted_proxies = ["127.0.0.0/8", "::1/128", "10.100.0.0/16"]
        """,
    ).tag(config=True)

    @validate("trusted_proxies")
    def _validate_trusted_proxies(self, proposal):
        try:
            parse_networks(proposal["value"])
        except ValueError as e:
            raise TraitError(f"FortServiceApp.trusted_proxies: {e}") from None
        return proposal["value"]

    hub_user_cache_seconds = Integer(
        60,
        help="""How long the hub's answer to "whose token is this?" is used, counted from when
        the hub was asked. With a configured `cookie_secret` (`$FORT_COOKIE_SECRET`) the answer
        is shared through the fort store, signed with it, by every fort service and replica
        (the hub is asked once per token and period, not once per process; each reader applies
        its own setting). A revoked token keeps working for at most this long;
        0 asks the hub on every request. Only the caller's identity comes from this cache:
        memberships and admin powers are read from the fort store on every request.

            c.FortServiceApp.hub_user_cache_seconds = 30
        """,
    ).tag(config=True)

    cookie_secret = Bytes(
        help="""Secret signing the OAuth and XSRF cookies, and the hub's answers the services
        share through the fort store (see `hub_user_cache_seconds`): the same for every fort
        service and replica. Defaults to `$FORT_COOKIE_SECRET` (hex), else a random one (browser
        sessions then end when the service restarts, and the hub's answers are not shared).

            c.FortServiceApp.cookie_secret = bytes.fromhex(open("/etc/fort/secret").read())
        """
    ).tag(config=True)

    @validate("cookie_secret")
    def _validate_cookie_secret(self, proposal):
        if len(proposal["value"]) < 16:
            raise TraitError(
                "FortServiceApp.cookie_secret ($FORT_COOKIE_SECRET) must be at least 16 bytes "
                "(32 hex characters; e.g. openssl rand -hex 32)"
            )
        return proposal["value"]

    @default("cookie_secret")
    def _default_cookie_secret(self):
        env = os.environ.get("FORT_COOKIE_SECRET")
        if env:
            try:
                return bytes.fromhex(env)
            except ValueError:
                raise TraitError(
                    "$FORT_COOKIE_SECRET is not hex (e.g. openssl rand -hex 32)"
                ) from None
        self._random_cookie_secret = os.urandom(32)
        return self._random_cookie_secret

    max_body_size = Integer(
        1024 * 1024,
        help="""Largest request body accepted, in bytes (larger ones are refused with 413).

            c.FortServiceApp.max_body_size = 256 * 1024
        """,
    ).tag(config=True)

    max_header_size = Integer(
        16 * 1024,
        help="""Largest request header block accepted, in bytes.

            c.FortServiceApp.max_header_size = 32 * 1024
        """,
    ).tag(config=True)

    @validate("max_body_size", "max_header_size", "hub_user_cache_seconds")
    def _validate_sizes(self, proposal):
        low = 0 if proposal["trait"].name == "hub_user_cache_seconds" else 1024
        if proposal["value"] < low:
            raise TraitError(f"FortServiceApp.{proposal['trait'].name} must be at least {low}")
        return proposal["value"]

    authenticate_prometheus = Bool(
        True,
        help="""Require the `read:metrics` scope for `<prefix>metrics`, as the hub does for
        /hub/metrics (`c.JupyterHub.authenticate_prometheus`). Turn it off only where nothing
        but Prometheus can reach the service's port.

            c.FortServiceApp.authenticate_prometheus = False
        """,
    ).tag(config=True)

    #: the clock every time decision uses (tests inject one; not configurable from files)
    clock = CallableTrait(utcnow)

    def handlers(self) -> list[tuple]:
        """(path relative to the service prefix, handler[, kwargs]) tuples. Override."""
        return []

    def make_metrics(self) -> ServiceMetrics:
        """This service's metrics (one registry). Override to add the service's own."""
        return ServiceMetrics(self.service_name)

    def route_of(self, handler: web.RequestHandler) -> str:
        """The route template (never the path) that served *handler*: a metrics label."""
        return self._routes.get(type(handler), UNMATCHED)

    def on_policy_change(self, policy: Policy) -> None:
        """Called on the event loop after a new valid policy took effect. Override."""

    async def on_start(self) -> None:
        """Called once the server listens. Override (e.g. to start background work)."""

    # ----- lifecycle --------------------------------------------------------------------------

    @catch_config_error
    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        install_redaction(self.log.name)  # no OAuth code/state in clear in any log line
        if self.config_file:
            self.load_config_file(self.config_file)
            self.update_config(self.config)
        try:
            self.fort_policy  # noqa: B018 - load now so a broken policy stops the start
        except (ValueError, PolicyError) as e:
            self.log.critical("cannot start %s: %s", self.service_name, e)
            self.exit(1)
        try:
            self.fort_store.ping()
        except StoreError as e:
            # not fatal: the service answers 503 until the store is back
            self.log.error("the fort store (FortSettings.store_url) is unavailable: %s", e)
        self.init_hub_auth()
        if not self.hub_auth.access_scopes:
            # never "allow every hub user": require access to this service at least
            self.hub_auth.access_scopes = {f"access:services!service={self.service_name}"}
        if not self.hub_auth.api_token:
            self.log.warning("no hub API token ($JUPYTERHUB_API_TOKEN / c.HubOAuth.api_token)")
        self.hub_api = HubApi(self.hub_auth.api_url, self.hub_auth.api_token)
        self.access = self.fort_access
        self.metrics = self.make_metrics()
        self.fort_store.audit.add_observer(self.metrics.observe_audit)
        self._routes: dict[type, str] = {}
        self.pages = FortPages(parent=self)
        self._trusted = parse_networks(self.trusted_proxies)
        self._stopping: asyncio.Event | None = None

    def init_hub_auth(self) -> None:
        """``HubOAuth`` with the hub's answers shared through the fort store when the services
        share a configured secret (``FORT_COOKIE_SECRET``) to sign them; with a random one
        (nothing configured) each process keeps its own, as JupyterHub's ``HubAuth`` does."""
        self.hub_auth = FortHubOAuth(parent=self, cache_max_age=self.hub_user_cache_seconds)
        if not self.hub_user_cache_seconds:
            return
        if self.cookie_secret is getattr(self, "_random_cookie_secret", None):
            self.log.info("the hub's answers are not shared: no FORT_COOKIE_SECRET is set")
            return
        self.hub_auth.answers = TokenAnswers(
            self.fort_store, self.hub_user_cache_seconds, secret=self.cookie_secret
        )

    def make_app(self) -> web.Application:
        prefix = self.service_prefix
        routes: list[tuple] = [
            (prefix.rstrip("/"), web.RedirectHandler, {"url": prefix}),  # the root, no slash
            (url_path_join(prefix, "oauth_callback"), OAuthCallbackHandler),
            (url_path_join(prefix, "login"), LoginHandler),
            (url_path_join(prefix, "metrics"), MetricsHandler),
        ]
        for spec in self.handlers():
            path, *rest = spec
            routes.append((url_path_join(prefix, path), *rest))
        for path, cls, *_ in routes:  # "queries/([^/]+)" -> "queries/*"
            self._routes.setdefault(cls, re.sub(r"\([^)]*\)", "*", path[len(prefix) :] or "/"))
        routes.append((r".*", NotFoundHandler))
        return web.Application(
            routes,
            fort_app=self,
            hub_auth=self.hub_auth,
            cookie_secret=self.cookie_secret,
            xsrf_cookies=True,
            login_url=self.hub_auth.login_url,
            log_function=log_request,
            serve_traceback=False,
            debug=False,
            template_path=self.template_path(),
        )

    def template_path(self) -> str | None:
        return None

    async def start_serving(self) -> None:
        """Listen and start the periodic work (usable from tests without ``start()``)."""
        u = urlparse(self.bind_url)
        self.web_app = self.make_app()
        self.http_server = HTTPServer(
            self.web_app,
            xheaders=False,  # see client_address: only trusted proxies are believed
            max_body_size=self.max_body_size,
            max_header_size=self.max_header_size,
        )
        self.http_server.listen(u.port, u.hostname or "127.0.0.1")
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._hub_http = hub_http_client()  # before any request: the one HubAuth will use
        watcher = shared_watcher(self.policy_file)
        watcher.on_change(
            lambda policy: self.loop.call_soon_threadsafe(self._policy_changed, policy)
        )
        self._policy_timer = PeriodicCallback(
            self._check_policy, self.policy_reload_interval * 1000
        )
        self._policy_timer.start()
        self.log.info(
            "%s listening on %s, serving %s", self.service_name, self.bind_url, self.service_prefix
        )
        await self.on_start()

    def _check_policy(self) -> None:
        try:
            shared_watcher(self.policy_file).check()
        except Exception:
            self.log.exception("policy check failed")

    def _policy_changed(self, policy: Policy) -> None:
        self.on_policy_change(policy)

    async def serve(self) -> None:
        await self.start_serving()
        await self._stopping.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        self._policy_timer.stop()
        self.http_server.stop()
        await self.http_server.close_all_connections()
        await close_hub_http_client(self._hub_http)

    def stop(self) -> None:
        """Thread-safe request to stop :meth:`serve`."""
        if self._stopping is not None:
            self.loop.call_soon_threadsafe(self._stopping.set)

    def start(self) -> None:
        async def main():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            await self.serve()

        asyncio.run(main())

    # ----- helpers for handlers ---------------------------------------------------------------

    def client_address(self, peer: str, forwarded_for: str) -> str:
        """The caller's address: *peer*, or the last ``X-Forwarded-For`` entry when the peer is
        one of ``trusted_proxies`` (see :func:`.handler.client_address`)."""
        return client_address(peer, forwarded_for, self._trusted)

    def service_url(self, *parts: str, **query: str) -> str:
        path = url_path_join(self.service_prefix, *(quote(p, safe="") for p in parts))
        return path + ("?" + urlencode(query) if query else "")


def launch(app_class: type[FortServiceApp], argv: list[str] | None = None) -> None:
    """The ``python -m`` entry: ``launch(MyService)`` in ``__main__.py``."""
    app_class.launch_instance(argv)


__all__ = [
    "FortHandler",
    "FortPageHandler",
    "FortServiceApp",
    "HubApi",
    "HubApiError",
    "ServiceError",
    "launch",
    "utcnow",
]
