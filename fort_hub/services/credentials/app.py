"""fort-credentials: short-lived, per-user AWS credentials for notebooks (``credential_process``).

``GET /services/fort-credentials/api/v1/aws/credentials?role=NAME`` with the user's hub token
returns ``{"Version": 1, "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}`` for
the token's own user only. See docs/services.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import time

from jupyterhub.traitlets import EntryPointType
from tornado import web
from traitlets import Float, Instance, Integer, TraitError, default, validate

from ... import scopes
from ...naming import check_username_problem, is_safe_username
from ...policy import role_name
from ...policy.loader import NAME_RE
from ...store import StoreError
from ...store.audit import AuditError
from ..base import FortHandler, FortHTTPError, FortServiceApp
from .backends import AssumeRoleRequest, Credentials, StsBackend, StsBackendBase, StsError
from .sessionpolicy import SessionPolicyTooLarge, packed, session_policy, session_tags, sts_name


class CredentialsHandler(FortHandler):
    required_scopes = (scopes.CREDENTIALS_AWS,)

    def _role_argument(self) -> str:
        args = self.request.query_arguments
        unknown = sorted(set(args) - {"role"})
        if unknown:
            hint = (
                " (credentials are only issued for the token's own user)" if "user" in args else ""
            )
            raise web.HTTPError(400, f"unknown query parameter(s) {', '.join(unknown)}{hint}")
        values = args.get("role", [])
        if len(values) != 1:
            raise web.HTTPError(400, "give exactly one ?role=NAME (the role name, not its ARN)")
        role = values[0].decode("utf8", "replace")
        if not NAME_RE.match(role):
            raise web.HTTPError(400, f"{role[:80]!r} is not a valid role name")
        return role

    async def get(self) -> None:
        user = self.current_user
        if user.get("kind", "user") != "user":
            raise web.HTTPError(403, "AWS credentials are issued to users, not services")
        role = self._role_argument()
        issued = await self.app.credentials_for(
            self.username, role, request_id=self.request_id, client=self.client
        )
        self.write_json(issued.process_json())


class CredentialsService(FortServiceApp):
    """The fort-credentials hub service (``python -m fort_hub.services.credentials``)."""

    name = "fort-credentials"
    default_service_name = scopes.CREDENTIALS_SERVICE
    description = "Short-lived per-user AWS credentials for notebooks"

    sts_backend_class = EntryPointType(
        StsBackend,
        klass=StsBackendBase,
        entry_point_group="fort_hub.sts_backends",
        help="""Class that talks to STS (see fort_hub.services.credentials.backends for the
        contract): a name registered in the `fort_hub.sts_backends` entry point group or an
        import string. `sts` (`StsBackend`) uses boto3; `stub` (`StubStsBackend`) issues fake
        credentials (tests, demos without AWS).

            c.CredentialsService.sts_backend_class = "stub"
        """,
    ).tag(config=True)

    backend = Instance(StsBackendBase)

    @default("backend")
    def _default_backend(self):
        return self.sts_backend_class(parent=self)

    duration = Integer(
        3600,
        help="""Lifetime of issued credentials in seconds (STS DurationSeconds): at least 900
        (15 min), at most the role's MaxSessionDuration. When the service itself runs on role
        credentials (role chaining, e.g. IRSA), STS allows at most 3600.

            c.CredentialsService.duration = 7200
        """,
    ).tag(config=True)

    @validate("duration")
    def _validate_duration(self, proposal):
        v = proposal["value"]
        if not 900 <= v <= 43200:
            raise TraitError(
                f"CredentialsService.duration must be between 900 and 43200 seconds, not {v}"
            )
        return v

    refresh_margin = Integer(
        300,
        help="""Cached credentials are reused until this many seconds before they expire;
        afterwards a new STS session is requested.

            c.CredentialsService.refresh_margin = 600
        """,
    ).tag(config=True)

    @validate("refresh_margin")
    def _validate_margin(self, proposal):
        if not 0 <= proposal["value"] < self.duration:
            raise TraitError("CredentialsService.refresh_margin must be >= 0 and < duration")
        return proposal["value"]

    sts_attempts = Integer(
        4,
        help="""How many times one STS call is tried when STS throttles or fails transiently
        (exponential backoff with full jitter between attempts).

            c.CredentialsService.sts_attempts = 6
        """,
    ).tag(config=True)

    backoff_base = Float(0.2, help="First backoff step in seconds (doubles each retry).").tag(
        config=True
    )
    backoff_max = Float(5.0, help="Largest backoff step in seconds.").tag(config=True)

    def handlers(self):
        return [("api/v1/aws/credentials", CredentialsHandler)]

    def initialize(self, argv=None):
        super().initialize(argv)
        self.backend  # noqa: B018 - build it now so a bad backend class fails at start
        self._cache: dict[tuple[str, str], Credentials] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future] = {}
        self._windows: dict[str, tuple[int, int]] = {}

    def on_policy_change(self, policy) -> None:
        # a role may have been withdrawn: issue afresh (authorization is checked on every call)
        self._cache.clear()

    # ----- the decision -----------------------------------------------------------------------

    def _rate_limit(self, username: str, per_minute: int) -> None:
        minute = int(time.time() // 60)
        window, used = self._windows.get(username, (minute, 0))
        if window != minute:
            window, used = minute, 0
        if used >= per_minute:
            retry = max(1, math.ceil(60 - time.time() % 60))
            raise FortHTTPError(
                429,
                f"credential request limit reached ({per_minute} per minute); retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        self._windows[username] = (window, used + 1)

    async def credentials_for(
        self, username: str, role: str, request_id: str = "", client: str = ""
    ) -> Credentials:
        policy = self.fort_policy
        if not is_safe_username(username):
            # it would be copied into the session policy's ARNs ("a*" matches every user)
            reason = f"no credentials for this account: {check_username_problem(username)}"
            await self._audit_deny(username, role, reason, request_id, client)
            raise web.HTTPError(403, f"{reason}; ask a fort admin to rename it")
        try:
            groups = await self.groups_of(username)
        except StoreError as e:
            self.log.error("[%s] fort store unavailable: %s", request_id, e)
            raise web.HTTPError(503, "the fort store is unavailable; try again shortly") from None
        eff = policy.effective_groups(username, groups, self.clock())
        self._rate_limit(username, policy.quota_for(eff).credential_requests_per_minute)
        roles = policy.roles_for(eff)
        if role not in roles:
            known = {role_name(a) for a in policy.aws.roles.values()}
            reason = (
                f"unknown role {role!r}"
                if role not in known
                else f"role {role!r} is not given to your groups {sorted(eff)}"
            )
            await self._audit_deny(username, role, reason, request_id, client)
            raise web.HTTPError(404 if role not in known else 403, reason)
        key = (username, role)
        now = self.clock()
        cached = self._cache.get(key)
        if cached and cached.expiration - dt.timedelta(seconds=self.refresh_margin) > now:
            return cached
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(
                self._issue(username, role, roles[role], eff, request_id, client)
            )
            self._inflight[key] = fut
            fut.add_done_callback(lambda _f: self._inflight.pop(key, None))
        try:
            return await asyncio.shield(fut)
        except StsError as e:
            if cached and cached.expiration > self.clock() + dt.timedelta(seconds=30):
                self.log.warning("[%s] STS failed (%s); serving cached credentials", request_id, e)
                return cached
            raise web.HTTPError(
                503, f"AWS STS is unavailable ({e}); no credentials issued, try again shortly"
            ) from None

    async def _audit_deny(self, username, role, reason, request_id, client) -> None:
        try:
            await self.fort_store.audit.arecord(
                username, "credentials.issue", role, "deny", reason,
                request_id=request_id, client=client,
            )  # fmt: skip
        except AuditError as e:
            self.log.error("[%s] could not audit a denial: %s", request_id, e)

    async def _issue(self, username, role, arn, eff, request_id, client) -> Credentials:
        policy = self.fort_policy
        role_groups = [g for g in policy.role_groups(arn) if g in eff]
        try:
            document = packed(session_policy(policy, username, role_groups))
        except SessionPolicyTooLarge as e:
            # the access policy grants this group too many S3 prefixes for one STS session: a
            # configuration error for the admins (recorded), not something the caller can fix
            reason = f"cannot issue credentials for role {role!r}: {e}"
            await self._audit_deny(username, role, reason, request_id, client)
            raise web.HTTPError(500, f"{reason}; ask the hub's administrators") from None
        request = AssumeRoleRequest(
            role_arn=arn,
            session_name=sts_name(username, "fort-"),
            source_identity=sts_name(username),
            policy=document,
            duration_seconds=self.duration,
            tags=session_tags(username, role_groups[0] if role_groups else ""),
            region=policy.aws.region,
        )
        try:
            await self.fort_store.audit.arecord(
                username, "credentials.issue", arn, "allow",
                f"role {role!r} of groups {role_groups}",
                details={
                    "session_name": request.session_name, "duration": self.duration,
                    "groups": role_groups, "session_policy": document,
                },
                request_id=request_id, client=client,
            )  # fmt: skip
        except AuditError as e:
            self.log.error("[%s] %s", request_id, e)
            raise web.HTTPError(
                503, "the audit log is unavailable, so no credentials are issued; try again shortly"
            ) from None
        creds = await self._assume_with_retries(request, request_id)
        self._cache[(username, role)] = creds
        return creds

    async def _assume_with_retries(self, request: AssumeRoleRequest, request_id: str):
        for attempt in range(1, self.sts_attempts + 1):
            try:
                return await self.backend.assume_role(request)
            except StsError as e:
                if not e.retryable or attempt == self.sts_attempts:
                    self.log.error(
                        "[%s] STS failed after %d attempt(s): %s", request_id, attempt, e
                    )
                    raise
                step = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
                delay = random.uniform(0, step)  # noqa: S311 - jitter, not crypto
                self.log.warning("[%s] STS %s, retrying in %.2fs", request_id, e.code, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")
