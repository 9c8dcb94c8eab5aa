"""Settings every fort-hub plugin shares, declared once.

``FortSettings`` is a mixin for the authenticator, the spawners and the services. Because
traitlets applies a class's config to its subclasses, one line configures them all::

    c.FortSettings.policy_file = "/etc/fort/policy.yaml"
    c.FortSettings.store_url = "postgresql://fort@db/fort"

The defaults come from the environment (``FORT_POLICY_FILE``, ``FORT_STORE_URL``), which is how
hub-managed services receive them from the hub.
"""

from __future__ import annotations

import datetime as dt
import os
import threading

from traitlets import Bool, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .access import DEFAULT_ADMIN_GROUP, Access, user_groups
from .deploy import parse_yes_no
from .policy import Policy, PolicyWatcher
from .store import Store

_lock = threading.Lock()
_watchers: dict[str, PolicyWatcher] = {}
_stores: dict[str, Store] = {}


def shared_watcher(path: str) -> PolicyWatcher:
    """One :class:`PolicyWatcher` per file per process (raises PolicyError on a bad file)."""
    with _lock:
        if path not in _watchers:
            _watchers[path] = PolicyWatcher(path)
        return _watchers[path]


def env_bool(name: str, fallback: bool) -> bool:
    """A yes/no environment variable (``true``/``false``, ``1``/``0``, ``yes``/``no``,
    ``on``/``off``); unset or empty is *fallback*, anything else a TraitError naming it."""
    value = os.environ.get(name, "")
    if not value.strip():
        return fallback
    parsed = parse_yes_no(value)
    if parsed is None:
        raise TraitError(f"${name} must be true or false, not {value!r}")
    return parsed


def shared_store(url: str) -> Store:
    """One :class:`Store` (and connection pool) per URL per process."""
    with _lock:
        if url not in _stores:
            _stores[url] = Store(url)
        return _stores[url]


class FortSettings(LoggingConfigurable):
    """Mixin: the policy file and the fort store every plugin reads."""

    policy_file = Unicode(
        help="""Path of the fort access policy (YAML, `version: 1`).

        Read by every fort-hub plugin and reloaded when it changes (an invalid new file is
        logged and the last good policy stays in force). Defaults to `$FORT_POLICY_FILE`.

            c.FortSettings.policy_file = "/etc/fort/policy.yaml"
        """,
    ).tag(config=True)

    @default("policy_file")
    def _default_policy_file(self):
        return os.environ.get("FORT_POLICY_FILE", "")

    store_url = Unicode(
        help="""SQLAlchemy URL of the fort store (audit log, memberships, usage, queries).

        SQLite is the embedded default; use PostgreSQL in production. Defaults to
        `$FORT_STORE_URL`, else `sqlite:///fort.sqlite` in the working directory.

            c.FortSettings.store_url = "postgresql://fort@fort-db:5432/fort"
        """,
    ).tag(config=True)

    @default("store_url")
    def _default_store_url(self):
        return os.environ.get("FORT_STORE_URL", "sqlite:///fort.sqlite")

    @validate("store_url")
    def _validate_store_url(self, proposal):
        url = proposal["value"]
        if url and not url.split(":", 1)[0].startswith(("sqlite", "postgres")):
            raise ValueError(
                f"FortSettings.store_url must be a sqlite:// or postgresql:// URL, not {url!r}"
            )
        return url

    @property
    def fort_policy(self) -> Policy:
        """The current policy (reloaded when the file changed)."""
        if not self.policy_file:
            raise ValueError(
                "FortSettings.policy_file is not set: point it (or $FORT_POLICY_FILE) at the "
                "fort policy YAML"
            )
        watcher = shared_watcher(self.policy_file)
        watcher.check()
        return watcher.policy

    admin_group = Unicode(
        DEFAULT_ADMIN_GROUP,
        help="""The policy group whose current, unexpired members are fort admins.

        Admin powers (membership changes, the audit log, every user's queries) need both the
        hub scope (the `fort-admin` role of `scopes.load_roles(admin_group=...)`) and a
        membership of this group in the fort store or the policy *at the moment of the
        request*: an expired or removed admin loses them at once, whatever the hub's copy says.

            c.FortSettings.admin_group = "platform-admins"

        Defaults to `$FORT_ADMIN_GROUP` (else `admins`); the hub passes its value to the
        services it runs, so they agree on the group that carries the `fort-admin` role.
        """,
    ).tag(config=True)

    @default("admin_group")
    def _default_admin_group(self):
        return os.environ.get("FORT_ADMIN_GROUP") or DEFAULT_ADMIN_GROUP

    @validate("admin_group")
    def _validate_admin_group(self, proposal):
        if not proposal["value"]:
            raise ValueError("FortSettings.admin_group must name a policy group")
        return proposal["value"]

    hub_groups = Bool(
        False,
        help="""Also keep each study's current members in the JupyterHub group of the same name
        (off by default). Study membership lives in the fort store and the policy, which every
        fort decision reads; fort-groups' admin page and API manage it.

        On: fort-groups creates the hub groups, adds and removes members with each change and
        at each expiry, and the authenticator adds a new user to their groups at their first
        sign-in. Turn it on for JupyterHub's own group features: the admin page's groups,
        group roles, `allowed_groups`, KubeSpawner's `group_overrides`. Those then decide from
        a copy, kept current by fort-groups but never the authority, and the copy costs the
        hub about a tenth of its CPU per researcher: JupyterHub loads a user's groups, with
        their roles and shares, every time it looks the user up (docs/benchmarks.md, Scale,
        parts 8 and 9).

        Off: only `admin_group` is copied, since the `fort-admin` role reaches the admins
        through it (a new admin gets it at fort-groups' next pass, not at sign-in); fort-groups
        empties the other hub groups it manages (recorded as `groups.remove`, "hub group copy
        off"), so no copy that nobody maintains keeps granting anything. Set it the same for
        the hub and every fort service: it defaults to `$FORT_HUB_GROUPS` (`true` or `false`),
        and the hub passes its value to the services it runs.

            c.FortSettings.hub_groups = True
        """,
    ).tag(config=True)

    @default("hub_groups")
    def _default_hub_groups(self):
        return env_bool("FORT_HUB_GROUPS", False)

    def copies_to_hub(self, group: str) -> bool:
        """Whether fort keeps policy group *group*'s members in a hub group: every group, or
        with `hub_groups` off only `admin_group` (its hub group carries the `fort-admin` role)."""
        return bool(self.hub_groups) or group == self.admin_group

    @property
    def fort_store(self) -> Store:
        return shared_store(self.store_url)

    @property
    def fort_access(self) -> Access:
        """The decision point (:class:`fort_hub.access.Access`) over this store and policy."""
        return Access(self.fort_store, lambda: self.fort_policy, self.fort_clock, self.admin_group)

    def fort_clock(self):
        """The time every decision uses (services inject theirs through ``clock``)."""
        clock = getattr(self, "clock", None)
        return clock() if callable(clock) else dt.datetime.now(dt.UTC)


__all__ = ["FortSettings", "shared_store", "shared_watcher", "user_groups"]
