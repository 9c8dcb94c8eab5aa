"""The fort-groups admin page: server-rendered HTML, HubOAuth login, XSRF-protected forms."""

from __future__ import annotations

from urllib.parse import urlencode

from ... import scopes
from ...store import StoreError, isoformat
from ...store.audit import AuditError
from ...store.memberships import Memberships
from ..base import HubApiError
from ..handler import ServiceError
from ..pages import ServiceRoot
from .api import USERNAME_RE, parse_expiry


class AdminPageHandler(ServiceRoot):
    #: the JSON index an API client gets at the service root (pages.ServiceRoot)
    links = (("me", "api/v1/me"), ("authorize", "api/v1/authorize"), ("audit", "api/v1/audit"))
    required_scopes = (scopes.GROUPS_ADMIN,)
    admin_scopes = (scopes.GROUPS_ADMIN,)
    query_params = ("user", "action", "since", "msg")

    async def get(self):
        app = self.app
        policy = app.fort_policy
        now = app.clock()
        filters = {k: self.get_argument(k, "")[:200] for k in ("user", "action", "since")}
        store = app.fort_store
        rows = await store.run(Memberships(store).list)
        records = None  # the audit log is shown only to holders of the audit scope
        if await self.admin_power(scopes.GROUPS_AUDIT):
            records = await store.run(
                store.audit.query,
                user=filters["user"] or None,
                action=filters["action"] or None,
                since=filters["since"] or None,
                limit=50,
            )
        usage = await store.run(store.usage.recent, filters["user"])
        try:
            hub_groups = {g["name"]: g for g in await app.reconciler.paged("groups")}
        except HubApiError:
            hub_groups = {}
        groups = []
        for g in policy.groups.values():
            members: dict[str, dict] = {}
            for m in g.members:
                members[m.username] = {"expires": m.expires, "source": "policy"}
            for r in rows:
                if r.group == g.name and r.source == "api":
                    members.setdefault(r.username, {"expires": r.expires, "source": "api"})
            hub_users = set(hub_groups.get(g.name, {}).get("users", []))
            groups.append({
                "name": g.name, "description": g.description,
                "roles": policy.roles_for([g.name]), "grants": policy.grants_for([g.name]),
                "members": [
                    {"user": u, "expires": isoformat(v["expires"]) or "", "source": v["source"],
                     "active": v["expires"] is None or v["expires"] > now, "in_hub": u in hub_users}
                    for u, v in sorted(members.items())
                ],
            })  # fmt: skip
        self.render(
            "admin.html",
            groups=groups,
            records=records,
            audit_scope=scopes.GROUPS_AUDIT,
            usage=usage,
            filters=filters,
            msg=self.get_argument("msg", "")[:300],
            me=self.username,
            prefix=app.service_prefix,
            last=app.last_reconcile,
        )

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
            if op == "remove":
                await app.remove_member(self.username, group, user, self.request_id, self.client)
                msg = f"removed {user} from {group}"
            else:
                expires = parse_expiry(self.get_argument("expires", "") or None, app.clock())
                await app.add_member(
                    self.username, group, user, expires, self.request_id, self.client
                )
                until = isoformat(expires) if expires else "no expiry"
                msg = f"{'extended' if op == 'extend' else 'added'} {user} in {group} ({until})"
        except ServiceError as e:
            msg = f"error: {e.log_message % e.args if e.args else e.log_message}"
        except AuditError:
            msg = "error: the audit log is unavailable; nothing was changed"
        except StoreError:
            msg = "error: the fort store is unavailable; nothing was changed"
        self.redirect(app.service_prefix + "?" + urlencode({"msg": msg}))


def admin_handlers() -> list[tuple]:
    return [("", AdminPageHandler), ("members", AdminPageHandler)]
