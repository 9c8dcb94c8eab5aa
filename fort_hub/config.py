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

from traitlets import Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .policy import Policy, PolicyWatcher
from .store import Store
from .store.memberships import Memberships

_lock = threading.Lock()
_watchers: dict[str, PolicyWatcher] = {}
_stores: dict[str, Store] = {}


def shared_watcher(path: str) -> PolicyWatcher:
    """One :class:`PolicyWatcher` per file per process (raises PolicyError on a bad file)."""
    with _lock:
        if path not in _watchers:
            _watchers[path] = PolicyWatcher(path)
        return _watchers[path]


def shared_store(url: str) -> Store:
    """One :class:`Store` (and connection pool) per URL per process."""
    with _lock:
        if url not in _stores:
            _stores[url] = Store(url)
        return _stores[url]


def user_groups(
    username: str, policy: Policy, store: Store | None = None, now: dt.datetime | None = None
) -> dict[str, dt.datetime | None]:
    """A user's active memberships: group -> expiry, from the policy's static members and the
    fort store's memberships (fort-groups), limited to groups the policy declares."""
    now = now or dt.datetime.now(dt.UTC)
    out: dict[str, dt.datetime | None] = {}
    for group in policy.groups.values():
        for m in group.members:
            if m.username == username and (m.expires is None or m.expires > now):
                out[group.name] = m.expires
    if store is not None:
        for name, expires in Memberships(store).for_user(username, now).items():
            if name in policy.groups:
                out.setdefault(name, expires)
    return out


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

    @property
    def fort_store(self) -> Store:
        return shared_store(self.store_url)
