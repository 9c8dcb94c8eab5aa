"""A real JupyterHub with fort-query, fort-credentials (stub STS) and fort-groups, for the
client tests (R package, IPython magic): the services run in-process (tests/fortsvc.py) and are
reached through the hub's proxy, with users' hub tokens, as a notebook reaches them.

Users (the example policy plus a small-quota group): alice (urls-study, one AWS role), bob
(ads-study), quinn (group ``tiny``: one query a day)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import pytest

from fort_hub import scopes
from fort_hub.services.credentials import CredentialsService, StubStsBackend
from fort_hub.services.groups import GroupsService
from fort_hub.services.query import QueryService
from tests.conftest import EXAMPLE_POLICY, IN_CI
from tests.fortsvc import ServiceSlot, ServiceThread, hub_config, make_users, user_token
from tests.hubproc import RunningHub
from tests.query_support import make_datasets

#: runs until the service's query_timeout (5-way cross join of the 200-row sample)
SLOW_SQL = (
    "SELECT count(*) FROM url_shares a, url_shares b, url_shares c, url_shares d, url_shares e"
)
QUERY_TIMEOUT = 2.0
#: what the R tests need of R (Debian: `make r-deps`)
R_PACKAGES = ("httr2", "jsonlite", "testthat", "withr", "IRkernel")
TINY = """
  - name: tiny
    description: one query a day (quota tests)
    members: [quinn]
"""
TINY_GRANT = """
  - group: tiny
    datasets: [url_shares]
    actions: [query]
"""
TINY_QUOTA = """
    tiny:
      queries_per_day: 1
"""


def stack_policy(path: Path) -> None:
    """The example policy with the group ``tiny`` (quinn, url_shares, one query a day)."""
    text = EXAMPLE_POLICY.read_text()
    text = text.replace("\ndatasets:\n", TINY + "datasets:\n", 1)
    text = text.replace("\nprofiles:\n", TINY_GRANT + "profiles:\n", 1)
    assert text.rstrip().endswith("queries_per_day: 5000"), "example policy layout changed"
    path.write_text(text.rstrip() + "\n" + TINY_QUOTA.lstrip("\n"))


class FortStack:
    """``with FortStack(tmp) as s:`` -> ``s.hub``, ``s.services_url``, ``s.tokens[user]``."""

    def __init__(self, work: Path):
        self.work = Path(work)
        self.threads: list[ServiceThread] = []
        self.hub = RunningHub(self.work / "hub")
        self.tokens: dict[str, str] = {}

    @property
    def services_url(self) -> str:
        return f"{self.hub.url}/services/"

    def _apps(self, slots: dict[str, ServiceSlot], policy: Path, store_url: str):
        q = slots["query"].config(self.hub, policy, store_url)
        q.QueryService.results_dir = str(self.work / "results")
        q.QueryService.query_timeout = QUERY_TIMEOUT
        c = slots["credentials"].config(self.hub, policy, store_url)
        c.CredentialsService.sts_backend_class = StubStsBackend
        g = slots["groups"].config(self.hub, policy, store_url)
        g.GroupsService.reconcile_interval = 3600
        return [QueryService(config=q), CredentialsService(config=c), GroupsService(config=g)]

    def start(self) -> FortStack:
        make_datasets(self.work)
        policy = self.work / "policy.yaml"
        stack_policy(policy)
        store_url = f"sqlite:///{self.work / 'fort.sqlite'}"
        slots = {
            "query": ServiceSlot(scopes.QUERY_SERVICE),
            "credentials": ServiceSlot(scopes.CREDENTIALS_SERVICE),
            "groups": ServiceSlot(scopes.GROUPS_SERVICE),
        }
        self.hub.extra_config = hub_config(list(slots.values()), self.hub.url)
        try:
            for app in self._apps(slots, policy, store_url):
                app.initialize([])
                self.threads.append(ServiceThread(app).start())
            self.hub.start()
            make_users(self.hub, "alice", "bob", "quinn")
            self.tokens = {u: user_token(self.hub, u) for u in ("alice", "bob", "quinn")}
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for t in self.threads:
            t.stop()
        self.threads = []
        self.hub.stop()

    def __enter__(self) -> FortStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@functools.cache
def require_r(packages: tuple[str, ...] = R_PACKAGES) -> str:
    """Rscript with the package's dependencies, else skip (fail under CI)."""
    found = shutil.which("Rscript")
    problem = "Rscript is not installed"
    if found:
        check = "for (p in commandArgs(TRUE)) if (!requireNamespace(p, quietly = TRUE)) cat(p, '')"
        r = subprocess.run(
            [found, "-e", check, *packages], capture_output=True, text=True, timeout=60
        )
        problem = f"R lacks the packages {r.stdout.strip()}" if r.stdout.strip() else ""
    if problem:
        msg = f"{problem}: run `make r-deps` (as root: Debian's r-base-core, r-cran-httr2, ...)"
        if IN_CI:
            pytest.fail(msg + "; CI must run the R client tests")
        pytest.skip(msg)
    return found
