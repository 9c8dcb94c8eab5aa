"""Issuing per-user AWS credentials, as a plain object.

:class:`CredentialIssuer` is built from the decision point (:class:`fort_hub.access.Access`:
store, policy, clock), an STS backend and a few numbers. Every hand-over of credentials is a
data-touching action: it is audited *before* the credentials leave, whether they come fresh from
STS or from the cache (``details.cached``), and refused with 503 when the record cannot be
committed. The cache only saves STS calls; the decision (membership, role) is made from the
store on every request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import random
import time
from dataclasses import dataclass

from ...access import Access
from ...naming import check_username_problem, is_safe_username
from ...policy import Policy, role_name
from ..handler import ServiceError
from ..metrics import CredentialsMetrics
from .backends import AssumeRoleRequest, Credentials, StsBackendBase, StsError, user_session
from .sessionpolicy import SessionPolicyTooLarge, packed, session_policy

log = logging.getLogger("fort_hub.credentials")
#: the usage counter (``fort_usage.metric``) of credential requests per user and minute
RATE_METRIC = "credentials.requests"
AUDIT_DOWN = "the audit log is unavailable, so no credentials are issued; try again shortly"


@dataclass(frozen=True)
class IssuerSettings:
    duration: int = 3600
    refresh_margin: int = 300
    sts_attempts: int = 4
    backoff_base: float = 0.2
    backoff_max: float = 5.0


@dataclass(frozen=True)
class Grant:
    """What the store and the policy give *username* for *role* now."""

    username: str
    role: str
    arn: str
    groups: list[str]  # the caller's groups that hold the role
    policy: Policy  # the access policy the decision was made with


class CredentialIssuer:
    def __init__(
        self,
        access: Access,
        backend: StsBackendBase,
        settings: IssuerSettings,
        metrics: CredentialsMetrics | None = None,
    ):
        self.metrics = metrics or CredentialsMetrics()
        self.access = access
        self.backend = backend
        self.settings = settings
        self.cache: dict[tuple[str, str], Credentials] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future] = {}
        self._pruned = ""  # the newest minute whose older windows were pruned

    def forget(self) -> None:
        """Drop cached sessions (e.g. after a policy change)."""
        self.cache.clear()

    def reset_rate_limit(self, username: str | None = None) -> None:
        """Start *username*'s (or everyone's) per-minute window afresh (in the store: for
        every replica)."""
        self.access.store.usage.clear(RATE_METRIC, username)

    async def rate_limit(self, username: str, per_minute: int) -> None:
        """Count one request in *username*'s current minute, in the fort store (shared by every
        replica of the service); 429 with ``Retry-After`` once *per_minute* is reached."""
        now = self.access.clock().astimezone(dt.UTC)
        window = now.strftime("%Y-%m-%dT%H:%M")
        usage = self.access.store.usage
        got = await self.access.store.run(usage.try_consume, username, RATE_METRIC, window, 1,
                                          per_minute)  # fmt: skip
        if window != self._pruned:  # once a minute per replica: drop the windows before it
            self._pruned = window
            await self.access.store.run(usage.prune, RATE_METRIC, window)
        if not got.allowed:
            retry = max(1, math.ceil(60 - now.second - now.microsecond / 1e6))
            raise ServiceError(
                429,
                f"credential request limit reached ({per_minute} per minute); retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )

    async def decide(self, username: str, role: str, request_id: str, client: str) -> Grant:
        """The grant from the store and the policy now, or a refusal (audited)."""
        if not is_safe_username(username):
            # it would be copied into the session policy's ARNs ("a*" matches every user)
            reason = f"no credentials for this account: {check_username_problem(username)}"
            await self.audit(username, role, "deny", reason, request_id, client)
            raise ServiceError(403, f"{reason}; ask a fort admin to rename it")
        policy, eff = await self.access.aeffective(username)
        await self.rate_limit(username, policy.quota_for(eff).credential_requests_per_minute)
        roles = policy.roles_for(eff)
        if role not in roles:
            known = {role_name(a) for a in policy.aws.roles.values()}
            reason = (
                f"unknown role {role!r}"
                if role not in known
                else f"role {role!r} is not given to your groups {sorted(eff)}"
            )
            await self.audit(username, role, "deny", reason, request_id, client)
            raise ServiceError(404 if role not in known else 403, reason)
        arn = roles[role]
        return Grant(username, role, arn, [g for g in policy.role_groups(arn) if g in eff], policy)

    async def credentials_for(
        self, username: str, role: str, request_id: str = "", client: str = ""
    ) -> Credentials:
        grant = await self.decide(username, role, request_id, client)
        request = await self._request(grant, request_id, client)
        # a session serves only requests that would get the same session now: the same user,
        # role and groups under the same session policy (a grant withdrawn from the policy
        # while a session was being issued changes the key, so that session is never reused)
        key = (username, role, tuple(grant.groups), request.role_arn, request.region,
               request.policy)  # fmt: skip
        cached = self.cache.get(key)
        margin = dt.timedelta(seconds=self.settings.refresh_margin)
        if cached and cached.expiration - margin > self.access.clock():
            await self.audit_handover(grant, cached, "cached session", request_id, client)
            self.metrics.cache_hit()
            return cached
        fut = self._inflight.get(key)
        joined = fut is not None
        if fut is None:
            fut = asyncio.ensure_future(self._issue(grant, request, key, request_id, client))
            self._inflight[key] = fut
            fut.add_done_callback(lambda _f: self._inflight.pop(key, None))
        try:
            creds = await asyncio.shield(fut)
        except StsError as e:
            if cached and cached.expiration > self.access.clock() + dt.timedelta(seconds=30):
                log.warning("[%s] STS failed (%s); serving cached credentials", request_id, e)
                await self.audit_handover(
                    grant, cached, "cached session (STS unavailable)", request_id, client
                )
                return cached
            raise ServiceError(  # the code only: STS messages name internal ARNs
                503,
                f"AWS STS could not issue credentials ({e.code or 'error'}); nothing was "
                "issued, try again shortly",
            ) from None
        if joined:  # issued (and audited) for a concurrent request: this hand-over is audited too
            await self.audit_handover(grant, creds, "session issued for a concurrent request",
                                      request_id, client)  # fmt: skip
        return creds

    async def audit(self, username, role, decision, reason, request_id, client, details=None):
        """One ``credentials.issue`` record; AuditError (a StoreError) propagates: the handler
        contract answers 503 and nothing is handed over."""
        await self.access.store.audit.arecord(
            username, "credentials.issue", role, decision, reason, details=details,
            request_id=request_id, client=client,
        )  # fmt: skip

    async def audit_handover(self, grant: Grant, creds: Credentials, how: str, rid, client):
        await self.audit(
            grant.username, grant.arn, "allow", f"{how} for role {grant.role!r} of {grant.groups}",
            rid, client,
            details={"cached": True, "groups": grant.groups, "access_key_id": creds.access_key_id,
                     "expiration": creds.expiration.isoformat()},
        )  # fmt: skip

    async def _request(self, grant: Grant, request_id: str, client: str) -> AssumeRoleRequest:
        """The STS request for *grant*, with the session policy of the policy it was decided
        with."""
        policy, username = grant.policy, grant.username
        try:
            document = packed(session_policy(policy, username, grant.groups))
        except SessionPolicyTooLarge as e:
            # the access policy grants this group too many S3 prefixes for one STS session: a
            # configuration error for the admins (recorded), not something the caller can fix
            reason = f"cannot issue credentials for role {grant.role!r}: {e}"
            await self.audit(username, grant.role, "deny", reason, request_id, client)
            raise ServiceError(500, f"{reason}; ask the hub's administrators") from None
        s = self.settings
        group = grant.groups[0] if grant.groups else ""
        return user_session(username, grant.arn, group, policy.aws.region, s.duration, document)

    async def _issue(
        self, grant: Grant, request: AssumeRoleRequest, key: tuple, request_id: str, client: str
    ) -> Credentials:
        await self.audit(
            grant.username, grant.arn, "allow", f"role {grant.role!r} of groups {grant.groups}",
            request_id, client,
            details={"session_name": request.session_name, "duration": request.duration_seconds,
                     "groups": grant.groups, "session_policy": request.policy},
        )  # fmt: skip
        creds = await self._assume_with_retries(request, request_id)
        self.cache[key] = creds
        return creds

    async def _assume_with_retries(self, request: AssumeRoleRequest, request_id: str):
        s = self.settings
        for attempt in range(1, s.sts_attempts + 1):
            started = time.perf_counter()
            try:
                creds = await self.backend.assume_role(request)
                self.metrics.sts_call("ok", time.perf_counter() - started)
                return creds
            except StsError as e:
                self.metrics.sts_call(e.code or "error", time.perf_counter() - started)
                if not e.retryable or attempt == s.sts_attempts:
                    log.error("[%s] STS failed after %d attempt(s): %s", request_id, attempt, e)
                    raise
                step = min(s.backoff_max, s.backoff_base * 2 ** (attempt - 1))
                delay = random.uniform(0, step)  # noqa: S311 - jitter, not crypto
                log.warning("[%s] STS %s, retrying in %.2fs", request_id, e.code, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")


__all__ = ["CredentialIssuer", "Grant", "IssuerSettings"]
