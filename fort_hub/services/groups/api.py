"""fort-groups REST API, under ``/services/fort-groups/api/v1/``."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urlencode

from tornado import web

from ... import scopes
from ...store import StoreError
from ...store.audit import AuditError
from ..base import FortHandler

USERNAME_RE = re.compile(r"^[^/\s?#%]{1,255}\Z")
AUDIT_FIELDS = ("seq", "ts", "actor", "action", "resource", "decision", "reason", "details",
                "request_id", "client")  # fmt: skip


def parse_expiry(value, now: dt.datetime) -> dt.datetime | None:
    """``None`` (no expiry), an ISO date (valid through that day, UTC) or an ISO datetime."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise web.HTTPError(400, "expires must be an ISO date or datetime string, or null")
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            exp = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        else:
            exp = dt.datetime.fromisoformat(value)
            exp = exp if exp.tzinfo else exp.replace(tzinfo=dt.UTC)
    except ValueError:
        raise web.HTTPError(400, f"expires {value[:40]!r} is not an ISO date or datetime") from None
    if exp <= now:
        raise web.HTTPError(400, f"expires {value!r} is in the past")
    return exp


def only_params(handler: web.RequestHandler, allowed: set[str]) -> None:
    extra = sorted(set(handler.request.query_arguments) - allowed)
    if extra:
        raise web.HTTPError(400, f"unknown query parameter(s): {', '.join(extra)}")
    for name, values in handler.request.query_arguments.items():
        if len(values) > 1:
            raise web.HTTPError(400, f"query parameter {name!r} given more than once")


def store_errors(fn):
    """Turn store/audit failures into a clear 503 (fail closed)."""

    async def wrapper(self, *args, **kwargs):
        try:
            return await fn(self, *args, **kwargs)
        except AuditError as e:
            self.log.error("[%s] %s", self.request_id, e)
            raise web.HTTPError(503, "the audit log is unavailable; nothing was changed") from None
        except StoreError as e:
            self.log.error("[%s] %s", self.request_id, e)
            raise web.HTTPError(503, "the fort store is unavailable; try again shortly") from None

    return wrapper


class MeHandler(FortHandler):
    required_scopes = (scopes.GROUPS_READ,)

    @store_errors
    async def get(self):
        only_params(self, set())
        if self.current_user.get("kind", "user") != "user":
            raise web.HTTPError(400, "'me' describes users; this token belongs to a service")
        self.write_json(await self.app.describe_user(self.username))


class AuthorizeHandler(FortHandler):
    required_scopes = (scopes.GROUPS_AUTHORIZE,)

    @store_errors
    async def post(self):
        body = self.json_body()
        missing = [k for k in ("user", "action", "resource") if not isinstance(body.get(k), str)]
        if missing or set(body) - {"user", "action", "resource"}:
            raise web.HTTPError(
                400, 'send {"user", "action", "resource"} (all strings, nothing else)'
            )
        policy = self.app.fort_policy
        groups = await self.app.groups_of(body["user"])
        decision = policy.authorize(
            body["user"], groups, body["action"], body["resource"], now=self.app.clock()
        )
        self.write_json({"allowed": decision.allowed, "reason": decision.reason})


class MemberHandler(FortHandler):
    required_scopes = (scopes.GROUPS_ADMIN,)

    def _check(self, group: str, user: str) -> None:
        if group not in self.app.fort_policy.groups:
            raise web.HTTPError(404, f"no group {group!r} in the policy")
        if not USERNAME_RE.match(user):
            raise web.HTTPError(400, f"{user[:40]!r} is not a valid username")

    @store_errors
    async def put(self, group: str, user: str):
        only_params(self, set())
        self._check(group, user)
        body = self.json_body() if self.request.body else {}
        if set(body) - {"expires"}:
            raise web.HTTPError(400, "the body may only hold 'expires'")
        expires = parse_expiry(body.get("expires"), self.app.clock())
        m = await self.app.add_member(
            self.username, group, user, expires, self.request_id, self.client
        )
        self.write_json(m)

    @store_errors
    async def delete(self, group: str, user: str):
        only_params(self, set())
        self._check(group, user)
        await self.app.remove_member(self.username, group, user, self.request_id, self.client)
        self.set_status(204)
        self.finish()


class AuditHandler(FortHandler):
    required_scopes = (scopes.GROUPS_AUDIT,)

    @store_errors
    async def get(self):
        only_params(self, {"user", "action", "since", "limit", "before", "resource"})
        args = {k: self.get_argument(k, "") for k in ("user", "action", "since", "resource")}
        try:
            limit = int(self.get_argument("limit", "100"))
            before = int(self.get_argument("before")) if self.get_argument("before", "") else None
        except ValueError:
            raise web.HTTPError(400, "limit and before must be whole numbers") from None
        if not 1 <= limit <= 1000:
            raise web.HTTPError(400, "limit must be between 1 and 1000")
        if args["since"]:
            try:
                since = dt.datetime.fromisoformat(args["since"])
            except ValueError:
                raise web.HTTPError(400, "since must be an ISO date or datetime") from None
            args["since"] = since if since.tzinfo else since.replace(tzinfo=dt.UTC)
        records = await self.app.fort_store.run(
            self.app.fort_store.audit.query,
            user=args["user"] or None,
            action=args["action"] or None,
            since=args["since"] or None,
            resource=args["resource"] or None,
            limit=limit,
            before_seq=before,
        )
        out = [{k: getattr(r, k) for k in AUDIT_FIELDS} for r in records]
        nxt = None
        if len(records) == limit:
            query = {k: v for k, v in self.request.query_arguments.items() if k != "before"}
            params = {k: v[0].decode() for k, v in query.items()}
            nxt = f"{self.app.service_prefix}api/v1/audit?" + urlencode(
                {**params, "before": str(records[-1].seq)}
            )
        self.write_json({"records": out, "next": nxt})


def api_handlers() -> list[tuple]:
    return [
        ("api/v1/me", MeHandler),
        ("api/v1/authorize", AuthorizeHandler),
        (r"api/v1/groups/([^/]+)/members/([^/]+)", MemberHandler),
        ("api/v1/audit", AuditHandler),
    ]
