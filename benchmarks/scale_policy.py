"""The policy phase of benchmarks/bench_scale.py: a policy of many users and groups, its load
(parse and validate, what every service does on a reload) and reconciliation times.

fort-groups runs in-process (tests/fortsvc.py's ServiceThread) against the stock hub (its admin
service token; the stock hub runs no fort services that would reconcile the same groups) with a
fresh schema of the run's PostgreSQL database as its store. Users: the hub's researchers plus
generated ones up to ``--policy-users``; each is a member of three of ``--policy-groups`` groups.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import psycopg
import yaml
from traitlets.config import Config

from fort_hub import scopes
from fort_hub.policy import load_policy
from fort_hub.services.groups import GroupsService
from tests.fortsvc import ServiceThread
from tests.hubproc import free_port


def write_big_policy(path: Path, users: list[str], n_groups: int) -> None:
    rng = random.Random(13)
    groups = [{"name": f"study-{g:04d}", "members": []} for g in range(n_groups)]
    for u in users:
        for g in rng.sample(range(n_groups), min(3, n_groups)):
            groups[g]["members"].append(u)
    policy = {"version": 1, "groups": groups, "datasets": [], "grants": [],
              "profiles": [{"slug": "python", "display_name": "Python",
                            "image": "quay.io/jupyter/scipy-notebook:2025-06-02",
                            "default": True}]}  # fmt: skip
    path.write_text(yaml.safe_dump(policy, sort_keys=False))


def groups_app(stack, policy: Path, store_url: str) -> GroupsService:
    hub = stack.stock
    c = Config()
    c.FortSettings.policy_file = str(policy)
    c.FortSettings.store_url = store_url
    c.FortServiceApp.bind_url = f"http://127.0.0.1:{free_port()}"
    c.FortServiceApp.service_name = scopes.GROUPS_SERVICE
    c.FortServiceApp.policy_reload_interval = 3600
    c.GroupsService.reconcile_interval = 3600
    c.FortSettings.hub_groups = True  # the heavier pass: 1,000 hub groups kept in line
    c.HubOAuth.api_token = hub.admin_token
    c.HubOAuth.api_url = hub.hub_api_url
    c.HubOAuth.oauth_client_id = "service-bench-groups"
    c.HubOAuth.base_url = "/services/bench-groups/"
    c.HubOAuth.hub_prefix = "/hub/"
    app = GroupsService(config=c)
    app.initialize([])
    return app


def policy_phase(stack, work: Path, args) -> dict:
    users = list(stack.names)
    users += [f"u{i:05d}" for i in range(max(0, args.policy_users - len(users)))]
    path = work / "big-policy.yaml"
    write_big_policy(path, users, args.policy_groups)
    loads = []
    for _ in range(3):
        t0 = time.perf_counter()
        load_policy(path)
        loads.append(time.perf_counter() - t0)
    schema = "policy_phase"
    with psycopg.connect(stack.pg.url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    app = groups_app(stack, path, f"{stack.pg.url}?options=-csearch_path%3D{schema}")
    t0 = time.perf_counter()
    thread = ServiceThread(app).start()  # its start schedules the first reconciliation
    try:
        deadline = time.monotonic() + args.policy_timeout
        while not app.last_reconcile and time.monotonic() < deadline:
            time.sleep(0.2)
        first = time.perf_counter() - t0
        last = dict(app.last_reconcile) or {"error": f"over --policy-timeout {first:.0f}s"}
        second, second_s = [], float("nan")
        if app.last_reconcile:
            t1 = time.perf_counter()
            second = thread.call(app.reconcile, "bench", timeout=args.policy_timeout)
            second_s = time.perf_counter() - t1
    finally:
        thread.stop()
    return {
        "users": len(users), "groups": args.policy_groups,
        "memberships": len(users) * min(3, args.policy_groups),
        "hub_users": len(stack.names),
        "load_s": {"p50": statistics.median(loads), "min": min(loads), "max": max(loads)},
        "reconcile_first_s": first, "first_changes": len(last.get("changes", [])),
        "first_error": last.get("error", ""),
        "reconcile_second_s": second_s, "second_changes": len(second),
    }  # fmt: skip
