"""The access policy as plain, immutable data, and the decisions made over it.

Everything here is pure: no I/O, no clock reads except where ``now`` is left out (then
``datetime.now(UTC)`` is used, and tests inject ``now``). Every fort-hub plugin asks the same
questions of the same :class:`Policy`:

- :meth:`Policy.authorize` -- may *user* in *groups* do *action* on *resource*?
- :meth:`Policy.profiles_for` -- which image profiles may they pick?
- :meth:`Policy.roles_for` -- which AWS roles may their notebook assume?
- :meth:`Policy.quota_for` -- which usage limits apply?
- :meth:`Policy.user_prefix` -- where is their own storage?
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..naming import check_username, is_safe_username
from . import dates

UTC = dt.UTC

#: Actions a grant can give on a dataset.
DATASET_ACTIONS = ("query", "s3:read", "s3:write")
#: Every action :meth:`Policy.authorize` understands.
ACTIONS = (*DATASET_ACTIONS, "spawn", "assume-role")

_PLAIN_COLLECTIONS = (list, tuple, set, frozenset)

GroupsArg = Iterable[str] | Mapping[str, "dt.datetime | dt.date | None"]


@dataclass(frozen=True)
class Decision:
    """The answer to one authorization question. Truthy when allowed."""

    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class Member:
    username: str
    expires: dt.datetime | None = None  # the first instant the membership is no longer valid


@dataclass(frozen=True)
class Group:
    name: str
    description: str = ""
    members: tuple[Member, ...] = ()


@dataclass(frozen=True)
class Dataset:
    name: str
    engine: str  # "duckdb" or "athena"
    description: str = ""
    tables: tuple[str, ...] = ()
    #: duckdb: {"paths": {table: path}} or {"database": path};
    #: athena: {"catalog", "database", "workgroup", optional "output_location"}
    location: Mapping[str, Any] = field(default_factory=dict)
    s3_prefixes: tuple[str, ...] = ()
    #: column -> {"distribution": "gaussian", "variance": V}: the release's additive noise
    noise: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Grant:
    group: str
    datasets: tuple[str, ...]
    actions: tuple[str, ...]
    index: int = 0  # position in the file, for reasons


@dataclass(frozen=True)
class Profile:
    slug: str
    display_name: str
    image: str
    description: str = ""
    cpu_guarantee: float | None = None
    cpu_limit: float | None = None
    mem_guarantee: str | None = None
    mem_limit: str | None = None
    gpu: int = 0
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    #: groups allowed to use it; empty means every user who may log in
    groups: tuple[str, ...] = ()
    default: bool = False
    #: {"display_name", "validation_regex"} when the user may type their own image
    unlisted_choice: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class AwsSettings:
    region: str = "us-east-1"
    #: group name -> IAM role ARN
    roles: Mapping[str, str] = field(default_factory=dict)
    bucket: str = ""
    user_prefix: str = "users/{username}/"


@dataclass(frozen=True)
class Quota:
    max_concurrent_queries: int = 2
    queries_per_day: int = 1000
    bytes_scanned_per_day: int = 1_000_000_000_000
    max_result_rows: int = 1_000_000
    credential_requests_per_minute: int = 60

    FIELDS = (
        "max_concurrent_queries",
        "queries_per_day",
        "bytes_scanned_per_day",
        "max_result_rows",
        "credential_requests_per_minute",
    )

    def as_dict(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in self.FIELDS}


def role_name(arn: str) -> str:
    """``arn:aws:iam::123:role/path/fort-x`` -> ``fort-x``."""
    return arn.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Policy:
    """A validated policy. Build it with :func:`fort_hub.policy.load_policy`."""

    version: int = 1
    groups: Mapping[str, Group] = field(default_factory=dict)
    datasets: Mapping[str, Dataset] = field(default_factory=dict)
    grants: tuple[Grant, ...] = ()
    profiles: tuple[Profile, ...] = ()
    aws: AwsSettings = field(default_factory=AwsSettings)
    default_quota: Quota = field(default_factory=Quota)
    group_quotas: Mapping[str, Quota] = field(default_factory=dict)
    #: whom people without access should ask (shown in refusals); empty: "a fort admin"
    contact: str = ""
    #: the time zone dates are in (fort_hub.policy.dates): "through 2026-12-31" ends at the
    #: next midnight there
    timezone: str = "UTC"
    source: str = "<memory>"

    def __post_init__(self):
        # indexes for fast decisions: dataset -> action -> {group: grant index}
        index: dict[str, dict[str, dict[str, int]]] = {}
        for grant in self.grants:
            for ds in grant.datasets:
                per_action = index.setdefault(ds, {})
                for action in grant.actions:
                    per_action.setdefault(action, {}).setdefault(grant.group, grant.index)
        expiries = {
            (g.name, m.username): m.expires for g in self.groups.values() for m in g.members
        }
        # s3 prefix (always ending in "/") -> datasets stored under it
        prefixes: dict[str, list[str]] = {}
        for ds in self.datasets.values():
            for prefix in ds.s3_prefixes:
                prefixes.setdefault(prefix, []).append(ds.name)
        object.__setattr__(self, "_grant_index", index)
        object.__setattr__(self, "_static_expiry", expiries)
        expiring: dict[str, dict[str, dt.datetime]] = {}
        for (group, user), expires in expiries.items():
            if expires is not None:
                expiring.setdefault(user, {})[group] = expires
        object.__setattr__(self, "_expiring", expiring)  # user -> group -> static expiry
        object.__setattr__(self, "_prefix_index", prefixes)
        object.__setattr__(self, "_tz", dates.zone(self.timezone))
        object.__setattr__(self, "_profiles_by_slug", {p.slug: p for p in self.profiles})
        # slug -> groups allowed (empty: everyone); the first profile of a slug wins
        profile_groups: dict[str, frozenset[str]] = {}
        for p in self.profiles:
            profile_groups.setdefault(p.slug, frozenset(p.groups))
        object.__setattr__(self, "_profile_groups", profile_groups)
        object.__setattr__(self, "_dataset_cache", {})  # (action, resource) -> allow decisions
        object.__setattr__(
            self, "_roles_by_group", {g: (role_name(a), a) for g, a in self.aws.roles.items()}
        )
        template = self.aws.user_prefix
        fast = "{username}" in template and "{{" not in template and "}}" not in template
        before, _, after = template.partition("{username}")
        object.__setattr__(
            self, "_prefix_parts", (f"s3://{self.aws.bucket}/{before}", after) if fast else None
        )

    # ----- membership -------------------------------------------------------------------------

    def static_members(self, group: str) -> tuple[Member, ...]:
        g = self.groups.get(group)
        return g.members if g else ()

    def groups_of(self, username: str, now: dt.datetime | None = None) -> list[str]:
        """Groups the policy itself lists *username* in, without expired memberships."""
        now = now or dt.datetime.now(UTC)
        return [
            g.name
            for g in self.groups.values()
            for m in g.members
            if m.username == username and (m.expires is None or m.expires > now)
        ]

    def effective_groups(
        self, user: str, groups: GroupsArg, now: dt.datetime | None = None
    ) -> list[str]:
        """The groups in *groups* that the policy declares and that have not expired for *user*.

        *groups* is a list of group names, or a mapping of group name to that membership's expiry
        (a ``date`` counts as valid through that day in the policy's time zone). A membership also expires when the
        policy lists *user* statically in that group with a past ``expires``.
        """
        declared = self.groups
        expiring = self._expiring.get(user)
        if isinstance(groups, _PLAIN_COLLECTIONS) or not isinstance(groups, Mapping):
            if expiring is None:  # the common case: nothing can have expired
                return [g for g in groups if g in declared]
            now = now or dt.datetime.now(UTC)
            return [
                g for g in groups if g in declared and ((e := expiring.get(g)) is None or e > now)
            ]
        now = now or dt.datetime.now(UTC)
        result = []
        for name, expires in groups.items():
            if name not in declared:
                continue
            exp = dates.as_expiry(expires, self._tz)
            if exp is not None and exp <= now:
                continue
            static = expiring.get(name) if expiring else None
            if static is not None and static <= now:
                continue
            result.append(name)
        return result

    # ----- decisions --------------------------------------------------------------------------

    def authorize(
        self,
        user: str,
        groups: GroupsArg,
        action: str,
        resource: str,
        now: dt.datetime | None = None,
    ) -> Decision:
        """May *user*, a member of *groups*, do *action* on *resource*?

        - ``query``: *resource* is ``dataset`` or ``dataset.table``.
        - ``s3:read`` / ``s3:write``: *resource* is a dataset name or an ``s3://bucket/key`` URI
          (the user's own prefix is always readable and writable by them).
        - ``spawn``: *resource* is a profile slug.  ``assume-role``: a role name (or its ARN).
        """
        if type(groups) is list and user not in self._expiring:  # the hot path, inlined
            declared = self.groups
            eff = [g for g in groups if g in declared]
        else:
            eff = self.effective_groups(user, groups, now)
        if action in DATASET_ACTIONS:
            if action != "query" and resource.startswith("s3://"):
                return self._authorize_s3_uri(user, eff, action, resource)
            return self._authorize_dataset(eff, action, resource)
        if action == "spawn":
            allowed_groups = self._profile_groups.get(resource)
            if allowed_groups is not None and (
                not allowed_groups or not allowed_groups.isdisjoint(eff)
            ):
                return Decision(True, f"profile '{resource}' is available to {sorted(eff)}")
            return Decision(False, f"profile '{resource}' is not available to groups {sorted(eff)}")
        if action == "assume-role":
            by_group = self._roles_by_group
            for g in eff:
                if resource in by_group.get(g, ()):
                    return Decision(True, f"role '{resource}' belongs to one of {sorted(eff)}")
            return Decision(False, f"role '{resource}' is not given to groups {sorted(eff)}")
        return Decision(False, f"unknown action '{action}' (known: {', '.join(ACTIONS)})")

    def _authorize_dataset(self, eff: list[str], action: str, resource: str) -> Decision:
        entry = self._dataset_cache.get((action, resource))
        if entry is None:
            ds_name, _, table = resource.partition(".")
            dataset = self.datasets.get(ds_name)
            if dataset is None:
                return Decision(False, f"unknown dataset '{ds_name}'")
            if table and table not in dataset.tables:
                return Decision(False, f"dataset '{ds_name}' has no table '{table}'")
            granted = self._grant_index.get(ds_name, {}).get(action, {})
            allow = {
                group: Decision(True, f"grants[{i}] gives '{action}' on '{ds_name}' to '{group}'")
                for group, i in granted.items()
            }
            # bounded: only known datasets and tables are cached (decisions are immutable)
            entry = self._dataset_cache[(action, resource)] = (ds_name, allow)
        ds_name, allow = entry
        for group in eff:
            decision = allow.get(group)
            if decision is not None:
                return decision
        return Decision(
            False, f"no grant gives '{action}' on dataset '{ds_name}' to groups {sorted(eff)}"
        )

    def _authorize_s3_uri(self, user: str, eff: list[str], action: str, uri: str) -> Decision:
        own = self.user_prefix(user) if is_safe_username(user) else ""
        if own and uri.startswith(own):
            return Decision(True, f"'{uri}' is under the user's own prefix")
        # a dataset prefix ends in "/", so it can only be one of the URI's parent "folders"
        cut = uri.find("/", 5)  # after "s3://bucket"
        while cut != -1:
            for name in self._prefix_index.get(uri[: cut + 1], ()):
                decision = self._authorize_dataset(eff, action, name)
                if decision.allowed:
                    return decision
            cut = uri.find("/", cut + 1)
        return Decision(False, f"no grant gives '{action}' on '{uri}' to groups {sorted(eff)}")

    def datasets_for(self, groups: Iterable[str], action: str = "query") -> list[str]:
        """Names of datasets on which one of *groups* (already effective) has *action*."""
        gs = set(groups)
        return [
            ds
            for ds, per_action in self._grant_index.items()
            if gs.intersection(per_action.get(action, ()))
        ]

    def grants_for(self, groups: Iterable[str]) -> dict[str, list[str]]:
        """dataset -> sorted actions granted to any of *groups* (already effective)."""
        gs = set(groups)
        out: dict[str, set[str]] = {}
        for ds, per_action in self._grant_index.items():
            for action, holders in per_action.items():
                if gs.intersection(holders):
                    out.setdefault(ds, set()).add(action)
        return {ds: sorted(a) for ds, a in sorted(out.items())}

    def profiles_for(
        self, groups: GroupsArg, *, user: str | None = None, now: dt.datetime | None = None
    ) -> list[Profile]:
        """Profiles usable by members of *groups*, in policy order.

        When *user* is given, *groups* is first narrowed with :meth:`effective_groups`.
        """
        gs = set(self.effective_groups(user, groups, now) if user is not None else groups)
        return [p for p in self.profiles if not p.groups or gs.intersection(p.groups)]

    def roles_for(
        self, groups: GroupsArg, *, user: str | None = None, now: dt.datetime | None = None
    ) -> dict[str, str]:
        """role name -> ARN for the roles of *groups*, in group order."""
        gs = self.effective_groups(user, groups, now) if user is not None else list(groups)
        out: dict[str, str] = {}
        for g in gs:
            arn = self.aws.roles.get(g)
            if arn:
                out.setdefault(role_name(arn), arn)
        return out

    def role_groups(self, role: str) -> list[str]:
        """Groups whose role is *role* (a name or an ARN)."""
        return [g for g, arn in self.aws.roles.items() if role in (arn, role_name(arn))]

    def quota_for(self, groups: Iterable[str]) -> Quota:
        """The limits for a member of *groups*: for each limit, the most generous override among
        the groups that have one, else the default."""
        overrides = [self.group_quotas[g] for g in groups if g in self.group_quotas]
        if not overrides:
            return self.default_quota
        return Quota(**{f: max(getattr(q, f) for q in overrides) for f in Quota.FIELDS})

    @property
    def tz(self) -> dt.tzinfo:
        """The policy's time zone (``timezone``), in which dates are read and shown."""
        return self._tz

    def user_prefix(self, username: str) -> str:
        """``s3://bucket/users/alice/`` (empty when no bucket is configured). Raises
        :class:`fort_hub.naming.UnsafeName` for a username that could widen the prefix (``*``)."""
        if not self.aws.bucket:
            return ""
        check_username(username)
        if self._prefix_parts is not None:
            head, tail = self._prefix_parts
            return head + username + tail
        key = self.aws.user_prefix.format(username=username)
        return f"s3://{self.aws.bucket}/{key}"
