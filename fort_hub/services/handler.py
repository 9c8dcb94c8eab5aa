"""The handler contract every fort service follows, enforced once here.

Domain code (plain objects built from store, policy and clock) raises :class:`ServiceError`
when it refuses a request; handlers never format errors themselves. :class:`FortHandler`
renders every failure the same way in all three services:

- **who**: the caller is identified through the hub (token header or OAuth cookie); no
  credentials at all is ``401`` for every method, *before* any XSRF check; a caller without the
  service's access scope or the handler's ``required_scopes`` is ``403`` naming the scope. A
  scope only says which *kind* of caller this is: grants (memberships, admin powers) are
  decided by the domain objects from the fort store at the moment of the request.
- **XSRF**: a state-changing request authenticated by the OAuth cookie must carry ``_xsrf``
  (form field or ``X-XSRFToken`` header); token-authenticated API calls need not.
- **parameters**: each handler declares its ``query_params``; an unknown or repeated one is
  ``400`` naming it. :meth:`FortHandler.json_body` accepts one JSON object, refusing invalid
  JSON, nesting deeper than ``MAX_JSON_DEPTH`` and text that is not valid Unicode (a lone
  surrogate) with ``400`` naming the field.
- **errors**: ``{"error": {"status", "message", "request_id", ...details}}`` (HTML for pages),
  with the :class:`ServiceError`'s headers (``Retry-After``...). A fort store or audit log
  failure is a generic ``503`` (the store's own text is logged, never sent); anything
  unexpected is a ``500`` with the request id only. No traceback ever reaches a client.
- **headers**: every response carries ``X-Request-Id`` (a well-formed incoming one or a fresh
  one), ``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
  same-origin`` and, like the hub, ``X-Frame-Options: DENY`` and CSP ``frame-ancestors
  'none'``; a ``405`` lists the supported methods in ``Allow``.
- **client address**: the peer address, or, when the peer is one of
  ``c.FortServiceApp.trusted_proxies``, the last ``X-Forwarded-For`` entry (the address that
  proxy saw); entries further left and headers from anyone else are ignored.
"""

from __future__ import annotations

import ipaddress
import json
import re
import traceback
import uuid
from typing import TYPE_CHECKING, Any

from jupyterhub.services.auth import (
    HubOAuthCallbackHandler,
    HubOAuthenticated,
    UserNotAllowed,
    check_scopes,
)
from tornado import web
from tornado.escape import xhtml_escape

from ..store import AuditError, StoreError

if TYPE_CHECKING:
    from .base import FortServiceApp

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MAX_JSON_DEPTH = 32
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
STORE_DOWN = "the fort store is unavailable; nothing was done, try again shortly"
AUDIT_DOWN = "the audit log is unavailable, so nothing was done; try again shortly"
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "same-origin",
}


class ServiceError(web.HTTPError):
    """A refusal raised by domain code: ``ServiceError(403, "you may not ...")``.

    *headers* are added to the response (e.g. ``{"Retry-After": "30"}``); keyword *details*
    are merged into the JSON error body (e.g. ``quota={...}``). The message is shown to the
    caller, so it must name what is wrong and never carry another user's data.
    """

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, **details: Any
    ):
        super().__init__(status, "%s", message)
        self.message = message
        self.headers = dict(headers or {})
        self.details = details

    @property
    def status(self) -> int:
        return self.status_code


#: a JSON string, or an unterminated one up to the end of the body (as the parser reads it).
#: Possessive, and matching whatever follows a quote: every attempt succeeds in one pass, so the
#: scan is linear (a version that could fail rescanned the rest of the body from every escaped
#: quote of an unterminated string: a 64 KB body held the event loop for 19 s).
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.S)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def nesting_exceeds(raw: bytes, limit: int) -> bool:
    """True when the JSON text *raw* nests arrays and objects deeper than *limit*, found
    before parsing: a deep body made ``json.loads`` recurse a thousand frames, where a
    finalizer the garbage collector ran could fail with RecursionError of its own."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for c in _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth += 1 if c in b"[{" else -1
        if depth > limit:
            return True
    return False


def _depth_ok(value: Any, limit: int) -> bool:
    """True when *value* nests at most *limit* containers deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children)
    return True


def bad_text(value: Any, path: str = "body") -> str | None:
    """What is wrong with the first string (key or value) in *value* that is not storable text,
    naming its path ("sql contains a NUL character", "a.b[1] is not valid Unicode text (a lone
    surrogate)", which JSON's ``\\u0000`` / ``\\ud800`` escapes produce), else None."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return f"{where} contains a NUL character"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return f"{where} is not valid Unicode text (a lone surrogate)"
        elif isinstance(item, dict):
            for k, v in item.items():
                stack.append((k, f"{where} key"))
                stack.append((v, f"{where}.{k}" if where != "body" else str(k)))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None


def printable(value: str) -> str:
    """*value* with anything that is not storable text escaped (for audit records, messages)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


class FortHandler(HubOAuthenticated, web.RequestHandler):
    """Base of every fort service handler (see the module docstring for the contract)."""

    #: the caller needs at least one of these (besides the service's access scope)
    required_scopes: tuple[str, ...] = ()
    #: the query parameters this handler understands; others are refused with 400
    query_params: tuple[str, ...] = ()
    #: False for browser pages: unauthenticated visitors are sent to the hub login
    is_api: bool = True
    #: False for public endpoints (e.g. the OpenAPI document): no caller identification
    authenticated: bool = True
    #: admin endpoints: a user needs one of these scopes *and* a current membership of the
    #: admin group in the fort store (see :meth:`admin_power`); services need the scope only
    admin_scopes: tuple[str, ...] = ()

    @property
    def app(self) -> FortServiceApp:
        return self.settings["fort_app"]

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]

    @hub_auth.setter
    def hub_auth(self, value):  # HubAuthenticated declares a setter; keep the settings one
        pass

    @property
    def log(self):
        return self.app.log

    def initialize(self) -> None:
        rid = self.request.headers.get("X-Request-Id", "")
        self.request_id = rid if REQUEST_ID_RE.match(rid) else uuid.uuid4().hex
        self.set_header("X-Request-Id", self.request_id)

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)
        if getattr(self, "request_id", None):  # also after send_error's clear()
            self.set_header("X-Request-Id", self.request_id)

    def check_xsrf_cookie(self) -> None:
        """Tornado checks XSRF before ``prepare``; we check it in ``prepare``, once we know
        whether the request is token-authenticated (then no XSRF check is needed). While the
        hub's OAuth cookie is read, HubOAuth asks here whether the cookie may authenticate this
        request: then it is JupyterHub's check (a mutation, or another site's fetch, without
        ``_xsrf`` is not authenticated by the cookie)."""
        if not getattr(self, "_reading_cookie", False):
            return
        try:
            self.hub_auth.check_xsrf_cookie(self)
        except web.HTTPError as e:
            self._xsrf_refusal = e.log_message % e.args if e.args else e.log_message
            raise

    @property
    def client(self) -> str:
        """The caller's address: see :meth:`FortServiceApp.client_address`."""
        return self.app.client_address(
            self.request.remote_ip or "", self.request.headers.get("X-Forwarded-For", "")
        )

    async def prepare(self) -> None:
        if self.authenticated:
            await self.identify()
            if self._finished:
                return
            if self.admin_scopes and not await self.admin_power(*self.admin_scopes):
                raise ServiceError(
                    403,
                    f"{self.username!r} is not a fort admin now: admin powers need a current "
                    f"membership of the {self.app.admin_group!r} group",
                )
        self.check_query_params()

    async def identify(self) -> None:
        """Who is calling: 401 without credentials, then XSRF, then the scopes."""
        self._reading_cookie, self._xsrf_refusal = True, None
        try:
            model = await self.hub_auth.get_user(self, sync=False)
        except web.HTTPError as e:
            self.log.error("[%s] hub authentication failed: %s", self.request_id, e)
            raise ServiceError(502, "the hub could not be asked who you are; try again") from None
        finally:
            self._reading_cookie = False
        if not model and self._xsrf_refusal:
            raise ServiceError(403, self._xsrf_refusal)
        user = None
        if model:
            try:
                user = self.check_hub_user(model)
            except UserNotAllowed:
                raise ServiceError(
                    403,
                    f"{model.get('kind', 'user')} {model.get('name')!r} may not use "
                    f"{self.app.service_name}: the token lacks "
                    f"{' or '.join(sorted(self.hub_scopes or ()))}",
                ) from None
        self._hub_auth_user_cache = user
        if user is None:
            if self.is_api and not self.browser_navigation():
                raise ServiceError(401, "authentication required: send 'Authorization: token …'")
            if self.request.method in SAFE_METHODS:
                self.redirect(self.get_login_url())
                return
            raise ServiceError(401, "log in first")
        if self.request.method not in SAFE_METHODS:
            self.hub_auth.check_xsrf_cookie(self)
        if self.required_scopes and not self.has_scope(*self.required_scopes):
            raise ServiceError(403, self.scope_refusal(user))

    def scope_refusal(self, user: dict) -> str:
        """The message of a caller lacking ``required_scopes``."""
        return (
            f"{user.get('kind', 'user')} {user['name']!r} lacks the scope "
            f"{' or '.join(self.required_scopes)}"
        )

    def check_query_params(self) -> None:
        args = self.request.query_arguments
        unknown = sorted(set(args) - set(self.query_params))
        if unknown:
            known = ", ".join(self.query_params) or "none"
            raise ServiceError(
                400,
                f"unknown query parameter(s) {', '.join(repr(u[:40]) for u in unknown)} "
                f"(known: {known})",
            )
        for name, values in args.items():
            if len(values) > 1:
                raise ServiceError(400, f"query parameter {name!r} given more than once")

    def has_scope(self, *scopes: str) -> bool:
        user = self.current_user
        return bool(user) and bool(check_scopes(set(scopes), set(user.get("scopes", ()))))

    @property
    def username(self) -> str:
        return self.current_user["name"]

    async def admin_power(self, *scopes: str) -> bool:
        """True when the caller holds one of *scopes* (the kind of caller) and, for a user, a
        current, unexpired membership of the admin group in the fort store or the policy (the
        grant, read now: a hub group or a cached scope can outlive it)."""
        if not self.has_scope(*scopes):
            return False
        if self.is_service:
            return True
        return await self.app.access.ais_admin(self.username)

    @property
    def is_service(self) -> bool:
        return self.current_user.get("kind", "user") == "service"

    # ----- bodies -----------------------------------------------------------------------------

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(data, default=str))

    def json_body(self, check_text: bool = True) -> dict:
        """The request body as a JSON object (400 naming what is wrong otherwise). With
        *check_text* False, strings that are not valid Unicode are left for the caller to
        refuse (so that it can audit the attempt)."""
        ctype = self.request.headers.get("Content-Type", "application/json")
        if "json" not in ctype:
            raise ServiceError(415, "send a JSON body (Content-Type: application/json)")
        raw = self.request.body or b"{}"
        try:  # UTF-8 only: json.loads(bytes) would also read UTF-16/32, whose bytes the nesting
            text = raw.decode("utf-8")  # check cannot read (a 0x22 byte inside a character)
        except UnicodeDecodeError:
            raise ServiceError(400, "the body is not JSON in UTF-8") from None
        if nesting_exceeds(raw, MAX_JSON_DEPTH):
            raise ServiceError(400, f"the body is nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            body = json.loads(text)
        except RecursionError:
            raise ServiceError(400, "the body is nested too deeply") from None
        except ValueError as e:
            raise ServiceError(400, f"the body is not valid JSON: {str(e)[:120]}") from None
        if not isinstance(body, dict):
            raise ServiceError(400, "the body must be a JSON object")
        if not _depth_ok(body, MAX_JSON_DEPTH):
            raise ServiceError(400, f"the body is nested deeper than {MAX_JSON_DEPTH} levels")
        problem = bad_text(body) if check_text else None
        if problem:
            raise ServiceError(400, problem)
        return body

    # ----- errors -----------------------------------------------------------------------------

    def log_exception(self, typ, value, tb) -> None:
        """Like tornado's, without the query string (it may hold a token)."""
        where = f"{self.request.method} {self.request.path} rid={self.request_id}"
        if isinstance(value, web.HTTPError):
            if value.log_message:
                msg = value.log_message % value.args if value.args else value.log_message
                self.log.warning("%d %s: %s", value.status_code, where, msg)
        elif isinstance(value, StoreError):
            self.log.error("503 %s: %s", where, value)
        else:
            self.log.error("Uncaught exception %s", where, exc_info=(typ, value, tb))

    def get_login_url(self) -> str:
        if self.is_api and not self.browser_navigation():
            raise ServiceError(401, "authentication required")
        return super().get_login_url()

    def browser_navigation(self) -> bool:
        """A browser opening a read-only URL (no token; a navigation or HTML accepted): it
        is sent through the hub's OAuth login like a page, and its cookie then identifies it
        (also for JSON endpoints, as JupyterHub's own services do)."""
        headers = self.request.headers
        if self.request.method not in ("GET", "HEAD") or headers.get("Authorization"):
            return False
        return headers.get("Sec-Fetch-Mode") == "navigate" or "text/html" in headers.get(
            "Accept", ""
        )

    def describe_error(self, status: int, exc: BaseException | None) -> tuple[int, str]:
        """(status, message) shown to the caller for *exc*: the one mapping of the contract."""
        if isinstance(exc, AuditError):
            return 503, AUDIT_DOWN
        if isinstance(exc, StoreError):
            return 503, STORE_DOWN
        if isinstance(exc, web.HTTPError) and exc.log_message:
            return status, exc.log_message % exc.args if exc.args else exc.log_message
        if isinstance(exc, web.HTTPError) or exc is None:
            return status, self._reason
        self.log.error(
            "[%s] unhandled error: %s", self.request_id, "".join(traceback.format_exception(exc))
        )
        return 500, f"internal error (request id {self.request_id})"

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        status, message = self.describe_error(status_code, exc)
        self.set_status(status)
        self.clear_header("Content-Type")
        headers = dict(getattr(exc, "headers", None) or {})
        if status == 503:
            headers.setdefault("Retry-After", "5")
        if status == 405:
            headers["Allow"] = ", ".join(self.allowed_methods())
        for name, value in headers.items():
            self.set_header(name, value)
        err = {"status": status, "message": message, "request_id": self.request_id}
        err.update(getattr(exc, "details", None) or {})
        if self.is_api:
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps({"error": err}, default=str))
        else:
            self.set_header("Content-Type", "text/html; charset=UTF-8")
            self.finish(
                f"<!doctype html><title>{status}</title><h1>{status} "
                f"{xhtml_escape(self._reason)}</h1><p>{xhtml_escape(message)}</p>"
                f"<p><small>request id {xhtml_escape(self.request_id)}</small></p>"
            )

    def allowed_methods(self) -> list[str]:
        base = web.RequestHandler
        return [
            m for m in METHODS if getattr(type(self), m.lower()) is not getattr(base, m.lower())
        ]


class FortPageHandler(FortHandler):
    """Browser pages: OAuth login through the hub, XSRF-protected forms, HTML errors."""

    is_api = False


class LoginHandler(FortPageHandler):
    """``<prefix>login``: sign in to the service through the hub (OAuth), then go to the
    service root. Gives a browser the service's cookie for its read-only JSON endpoints."""

    async def get(self):
        self.redirect(self.app.service_prefix)


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    @property
    def hub_auth(self):
        return self.settings["hub_auth"]

    @hub_auth.setter
    def hub_auth(self, value):
        pass

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    def log_exception(self, typ, value, tb) -> None:
        """Without the query string: it holds the OAuth ``code`` and ``state``."""
        log = self.settings["fort_app"].log
        where = f"{self.request.method} {self.request.path}"
        if isinstance(value, web.HTTPError):
            msg = value.log_message % value.args if value.args else value.log_message
            log.warning("%d %s: %s", value.status_code, where, msg or "")
        else:
            log.error("Uncaught exception %s", where, exc_info=(typ, value, tb))


class NotFoundHandler(FortHandler):
    authenticated = False

    async def prepare(self) -> None:
        raise ServiceError(404, f"no such endpoint: {self.request.path[:200]}")


def parse_networks(values: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """CIDRs or addresses -> networks (ValueError naming the bad entry)."""
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address or CIDR network") from None
    return out


def client_address(peer: str, forwarded_for: str, trusted: list) -> str:
    """The address the proxy saw: when *peer* is a trusted proxy, the last ``X-Forwarded-For``
    entry (the one that proxy appended), else *peer*. Entries further left were written by
    whoever connected to the proxy, so they are never believed (a notebook can forge them)."""
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if not any(ip in net for net in trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    if not hops:
        return peer
    try:
        return str(ipaddress.ip_address(hops[-1]))
    except ValueError:
        return peer


__all__ = [
    "FortHandler",
    "FortPageHandler",
    "LoginHandler",
    "NotFoundHandler",
    "OAuthCallbackHandler",
    "ServiceError",
    "bad_text",
    "client_address",
    "printable",
]
