"""fort-groups REST API, under ``/services/fort-groups/api/v1/``.

Errors, parameters, XSRF and store failures follow the handler contract
(:mod:`fort_hub.services.handler`); membership changes and the audit log need a current
membership of the admin group (``admin_scopes``), read from the fort store per request.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urlencode

from ... import scopes
from ...policy import dates
from ..handler import FortHandler, ServiceError

USERNAME_RE = re.compile(r"^[^/\s?#%]{1,255}\Z")
AUDIT_FIELDS = ("seq", "ts", "actor", "action", "resource", "decision", "reason", "details",
                "request_id", "client")  # fmt: skip


def parse_expiry(value, now: dt.datetime, tz: dt.tzinfo = dates.UTC) -> dt.datetime | None:
    """``None`` (no expiry), a date (valid through that day in *tz*, the policy's time zone) or
    an ISO datetime (without an offset: in *tz*); see :mod:`fort_hub.policy.dates`."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ServiceError(400, "expires must be a date like 2026-12-31, an ISO datetime, or null")
    try:
        exp = dates.parse_expiry(value, tz)
    except ValueError as e:
        raise ServiceError(400, f"expires {e}") from None
    if exp <= now:
        raise ServiceError(400, f"expires {value[:40]!r} is in the past")
    return exp


def parse_since(value: str, now: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """An audit ``since`` filter (:func:`fort_hub.policy.dates.parse_since`), else 400."""
    try:
        return dates.parse_since(value, tz, now)
    except ValueError as e:
        raise ServiceError(400, str(e)) from None


def whole_number(raw: str, name: str, lo: int, hi: int) -> int:
    """*raw* as an int from *lo* to *hi*, else 400 naming *name* (so no overflow reaches the
    database: ``before=10**23`` is refused here)."""
    if not re.fullmatch(r"\d{1,19}", raw) or not lo <= int(raw) <= hi:
        raise ServiceError(400, f"{name} must be a whole number from {lo} to {hi}")
    return int(raw)


class MeHandler(FortHandler):
    required_scopes = (scopes.GROUPS_READ,)

    async def get(self):
        if self.is_service:
            raise ServiceError(400, "'me' describes users; this token belongs to a service")
        self.write_json(await self.app.describe_user(self.username))


class AuthorizeHandler(FortHandler):
    required_scopes = (scopes.GROUPS_AUTHORIZE,)

    async def post(self):
        body = self.json_body()
        missing = [k for k in ("user", "action", "resource") if not isinstance(body.get(k), str)]
        if missing or set(body) - {"user", "action", "resource"}:
            raise ServiceError(
                400, 'send {"user", "action", "resource"} (all strings, nothing else)'
            )
        policy = self.app.fort_policy
        groups = await self.app.access.agroups(body["user"])
        decision = policy.authorize(
            body["user"], groups, body["action"], body["resource"], now=self.app.clock()
        )
        self.write_json({"allowed": decision.allowed, "reason": decision.reason})


class MemberHandler(FortHandler):
    required_scopes = (scopes.GROUPS_ADMIN,)
    admin_scopes = (scopes.GROUPS_ADMIN,)

    def _check(self, group: str, user: str) -> None:
        if group not in self.app.fort_policy.groups:
            raise ServiceError(404, f"no group {group[:40]!r} in the policy")
        if not USERNAME_RE.match(user):
            raise ServiceError(400, f"{user[:40]!r} is not a valid username")

    async def put(self, group: str, user: str):
        self._check(group, user)
        body = self.json_body() if self.request.body else {}
        if set(body) - {"expires"}:
            raise ServiceError(400, "the body may only hold 'expires'")
        policy = self.app.fort_policy
        expires = parse_expiry(body.get("expires"), self.app.clock(), policy.tz)
        m = await self.app.add_member(
            self.username, group, user, expires, self.request_id, self.client,
            expiry_given="expires" in body,
        )  # fmt: skip
        self.write_json(m)

    async def delete(self, group: str, user: str):
        self._check(group, user)
        await self.app.remove_member(self.username, group, user, self.request_id, self.client)
        self.set_status(204)
        self.finish()


class AuditHandler(FortHandler):
    required_scopes = (scopes.GROUPS_AUDIT,)
    admin_scopes = (scopes.GROUPS_AUDIT,)
    query_params = ("user", "action", "since", "limit", "before", "resource")

    async def get(self):
        args = {k: self.get_argument(k, "") for k in ("user", "action", "since", "resource")}
        limit = whole_number(self.get_argument("limit", "100"), "limit", 1, 1000)
        before = self.get_argument("before", "")
        before = whole_number(before, "before", 1, 2**63 - 1) if before else None
        if args["since"]:
            args["since"] = parse_since(args["since"], self.app.clock(), self.app.fort_policy.tz)
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
