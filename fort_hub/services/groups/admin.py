"""The fort-groups admin page: server-rendered HTML, HubOAuth login, XSRF-protected forms.

Messages after a change ("flash") travel in a cookie signed with the service's cookie secret and
bound to the admin who made the change, never in the URL; removing a membership asks for
confirmation first; the audit view filters by user (actor or subject), action prefix and a
``since`` the page understands or names as not understood, and pages newer / older.
"""

from __future__ import annotations

import json

from ... import scopes
from ...policy import dates
from ...store import StoreError
from ...store.audit import AuditError
from ..base import HubApiError
from ..handler import ServiceError
from ..pages import ServiceRoot
from .api import USERNAME_RE, parse_expiry
from .hubusers import paged
from .view import group_views

FLASH_COOKIE = "fort-groups-flash"
PAGE_SIZE = 50
#: a refused form's field longer than this is not kept (never cut: a cut name is another user)
FORM_FIELD_MAX = 255
#: the flash's JSON at most: signed and in base64 it stays under 4 KB, a browser's cookie limit
FLASH_MAX_BYTES = 2800
MAX_PAGE = 500


def audit_filters(args: dict[str, str]) -> tuple[dict, list[str]]:
    """The audit view's query arguments -> (query keyword arguments, problems) (pure)."""
    problems: list[str] = []
    query = {"user": args.get("user") or None, "action": args.get("action") or None}
    limit = args.get("limit") or str(PAGE_SIZE)
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE:
        problems.append(f"limit must be a whole number from 1 to {MAX_PAGE}")
        limit = str(PAGE_SIZE)
    query["limit"] = int(limit)
    for key, arg in (("before_seq", "before"), ("after_seq", "after")):
        raw = args.get(arg) or ""
        if raw and not (raw.isdigit() and len(raw) <= 18):
            problems.append(f"{arg} must be a record number (seq)")
        elif raw:
            query[key] = int(raw)
    return query, problems


class AdminPageHandler(ServiceRoot):
    #: the JSON index an API client gets at the service root (pages.ServiceRoot)
    links = (("me", "api/v1/me"), ("authorize", "api/v1/authorize"), ("audit", "api/v1/audit"))
    required_scopes = (scopes.GROUPS_ADMIN,)
    admin_scopes = (scopes.GROUPS_ADMIN,)
    query_params = ("user", "action", "since", "limit", "before", "after")

    async def page(self):
        app = self.app
        policy = app.fort_policy
        args = {k: self.get_argument(k, "")[:200].strip() for k in self.query_params}
        audit = None  # the audit log is shown only to holders of the audit scope
        if await self.admin_power(scopes.GROUPS_AUDIT):
            audit = await self.audit_view(args)
        store = app.fort_store
        usage = await store.run(store.usage.recent, args["user"])
        await self.render_page(
            "admin.html",
            title="fort-groups",
            groups=await self.groups(),
            audit=audit,
            audit_scope=scopes.GROUPS_AUDIT,
            usage=usage,
            filters=args,
            flash=self.take_flash(),
            me=self.username,
            last=app.last_reconcile,
            timezone=policy.timezone,
        )

    async def groups(self) -> list:
        app = self.app
        rows = await app.fort_store.run(app.memberships.members.list)
        copies = app.copies_to_hub
        try:
            hub_groups = {g["name"]: g for g in await paged(app.hub_api, "groups")}
            hub_users = {u["name"] for u in await paged(app.hub_api, "users")}
        except HubApiError as e:
            self.log.warning("admin page: the hub's groups could not be read: %s", e)
            hub_groups = hub_users = None
        return group_views(app.fort_policy, rows, hub_groups, hub_users, app.clock(), copies)

    async def audit_view(self, args: dict[str, str]) -> dict:
        store = self.app.fort_store
        query, problems = audit_filters(args)
        if args["since"]:
            try:
                query["since"] = dates.parse_since(
                    args["since"], self.app.fort_policy.tz, self.app.clock()
                )
            except ValueError as e:
                problems.append(str(e))
        records = [] if problems else await store.run(store.audit.query, **query)
        actions = await store.run(store.audit.actions)
        paging = {k: v for k, v in args.items() if v and k not in ("before", "after")}
        paged = "before_seq" in query or "after_seq" in query
        at_newest = not paged or ("after_seq" in query and len(records) < query["limit"])
        has_older = len(records) == query["limit"] or "after_seq" in query
        older = {**paging, "before": str(records[-1].seq)} if records and has_older else None
        newer = {**paging, "after": str(records[0].seq)} if records and not at_newest else None
        return {
            "records": records, "problems": problems, "older": older, "newer": newer,
            "actions": actions, "spawn_actions": [a for a in actions if a.startswith("spawn")],
        }  # fmt: skip

    # ----- flash messages: a signed cookie for this admin, read once ----------------------------

    def set_flash(self, message: str, error: bool, form: dict | None = None) -> None:
        """*form*: the fields of a refused form (op, group, user, expires), shown again. A
        browser drops a cookie over 4 KB, message and all: the form goes first, then most of
        the message."""
        kept = {k: str(v) for k, v in (form or {}).items() if len(str(v)) <= FORM_FIELD_MAX}
        for m, f in ((message[:500], kept), (message[:500], {}), (message[:100], {})):
            payload = json.dumps(
                {"u": self.username, "m": m, "e": error, "f": f}, ensure_ascii=False
            )
            if len(payload.encode()) <= FLASH_MAX_BYTES:
                break
        self.set_signed_cookie(
            FLASH_COOKIE, payload, expires_days=None, path=self.app.service_prefix,
            httponly=True, samesite="Lax", secure=self.request.protocol == "https",
        )  # fmt: skip

    def take_flash(self) -> dict | None:
        raw = self.get_signed_cookie(FLASH_COOKIE, max_age_days=1)
        if self.get_cookie(FLASH_COOKIE) is not None:
            self.clear_cookie(FLASH_COOKIE, path=self.app.service_prefix)
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("u") != self.username:
            return None
        form = data.get("f") if isinstance(data.get("f"), dict) else {}
        return {
            "message": str(data.get("m", "")), "error": bool(data.get("e")),
            "form": {k: str(form.get(k, "")) for k in ("op", "group", "user", "expires")},
        }  # fmt: skip

    # ----- changes -------------------------------------------------------------------------------

    async def post(self):
        app = self.app
        op = self.get_argument("op", "")
        group = self.get_argument("group", "")
        user = self.get_argument("user", "").strip()
        try:
            if op not in ("add", "extend", "remove"):
                raise ServiceError(400, f"unknown operation {op[:20]!r}")
            if group not in app.fort_policy.groups:
                raise ServiceError(400, f"no group {group[:40]!r} in the policy")
            if not USERNAME_RE.match(user):
                raise ServiceError(400, f"{user[:40]!r} is not a valid username")
            if op == "remove" and self.get_argument("confirm", "") != "yes":
                await self.render_page("confirm.html", group=group, member=user)
                return
            msg = await self.change(op, group, user)
            error = False
        except ServiceError as e:
            msg, error = e.message, True
        except AuditError:
            msg, error = "the audit log is unavailable; nothing was changed", True
        except StoreError:
            msg, error = "the fort store is unavailable; nothing was changed", True
        # a refused add or extend comes back filled in, to be corrected or sent again
        kept = {"op": op, "group": group, "user": user, "expires": self.get_argument("expires", "")}
        self.set_flash(msg, error, kept if error and op in ("add", "extend") else None)
        self.redirect(app.service_prefix + (f"#group-{group}" if group in app.fort_policy.groups
                                            else ""))  # fmt: skip

    async def change(self, op: str, group: str, user: str) -> str:
        app = self.app
        if op == "remove":
            await app.remove_member(self.username, group, user, self.request_id, self.client)
            return f"removed {user} from {group}"
        raw = self.get_argument("expires", "").strip()
        if op == "extend" and not raw:
            raise ServiceError(400, f"extending {user} in {group} needs a new expiry date")
        expires = parse_expiry(raw or None, app.clock(), app.fort_policy.tz)
        out = await app.add_member(
            self.username, group, user, expires, self.request_id, self.client,
            expiry_given=bool(raw),
        )  # fmt: skip
        return out["message"]


def admin_handlers() -> list[tuple]:
    return [("", AdminPageHandler), ("members", AdminPageHandler)]
