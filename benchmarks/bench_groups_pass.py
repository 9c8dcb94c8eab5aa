"""The hub's CPU per fort-groups reconciliation pass, with N hub users in one study group and a
few new members at every pass (researchers arriving), side by side in one run:

- "full listing": every pass lists all of the hub's users (what fort-groups did before #13's
  change; here ``GroupsService.hub_users_listing_interval`` set to a millisecond);
- "new users only": the default (a full listing every 600 s, in between only the users created
  since the last pass, newest first).

The passes alternate on one fort-groups app (its ``HubUsers.listing_interval`` switched before
each pass), so both kinds see the same hub. The hub's CPU (user + system, of its process) is read around each pass; the clock
ticks at 10 ms, so the figures are medians over many passes.

    python benchmarks/bench_groups_pass.py --users 1000 --passes 15 --new 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import psutil
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fort_hub import scopes  # noqa: E402
from fort_hub.services.groups import GroupsService  # noqa: E402
from tests.fortsvc import ServiceSlot, ServiceThread, hub_config  # noqa: E402
from tests.hubproc import RunningHub  # noqa: E402

EXAMPLE = ROOT / "fort_hub" / "dev" / "data" / "example-policy.yaml"


def write_policy(path: Path, members: list[str]) -> None:
    policy = yaml.safe_load(EXAMPLE.read_text())
    for g in policy["groups"]:
        if g["name"] == "urls-study":
            g["members"] = list(g["members"]) + members
    path.write_text(yaml.safe_dump(policy, sort_keys=False))


def make_users(hub: RunningHub, names: list[str]) -> None:
    for i in range(0, len(names), 500):
        r = requests.post(hub.hub_api_url + "/users", json={"usernames": names[i : i + 500]},
                          headers=hub.admin_headers, timeout=300)  # fmt: skip
        assert r.status_code == 201, r.text


def start_groups(hub: RunningHub, slot: ServiceSlot, policy: Path, store_url: str):
    """fort-groups for *hub* on a thread, running a pass only when asked: (app, thread)."""
    cfg = slot.config(hub, policy, store_url)
    cfg.GroupsService.reconcile_interval = 3600
    cfg.FortSettings.hub_groups = True  # what is measured: the passes that keep the hub's copy
    app = GroupsService(config=cfg)
    app.initialize([])
    return app, ServiceThread(app).start()


INTERVAL = {"full": 0.001, "new": 600.0}  # seconds between full listings


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=1000, help="hub users, all in urls-study")
    p.add_argument("--passes", type=int, default=15, help="passes of each kind")
    p.add_argument("--new", type=int, default=20, help="new hub users (members) per pass")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-groups-"))
    total = args.users + 2 * args.passes * args.new
    names = [f"r{i:05d}" for i in range(total)]
    policy = work / "policy.yaml"
    write_policy(policy, names)
    slot = ServiceSlot(scopes.GROUPS_SERVICE)
    hub = RunningHub(work / "hub", timeout=120)
    hub.extra_config = hub_config([slot], hub.url) + "\nc.JupyterHub.log_level = 'WARN'\n"
    app, svc = start_groups(hub, slot, policy, f"sqlite:///{work / 'fort.sqlite'}")
    try:
        hub.start()
        make_users(hub, names[: args.users])
        svc.call(app.reconcile, "warm-up")
        proc = psutil.Process(hub.proc.pid)

        def cpu() -> float:
            t = proc.cpu_times()
            return t.user + t.system

        figures: dict[str, list[float]] = {"full": [], "new": []}
        created = args.users
        for i in range(2 * args.passes):
            kind = ("full", "new")[i % 2]
            make_users(hub, names[created : created + args.new])
            created += args.new
            app.reconciler.hub_users.listing_interval = INTERVAL[kind]
            c0 = cpu()
            changes = svc.call(app.reconcile, "bench", timeout=300)
            figures[kind].append((cpu() - c0) * 1000)
            assert len([c for c in changes if c.action == "groups.add"]) == args.new, changes
        print(f"hub CPU per reconciliation pass, {args.users}..{created} hub users in urls-study, "
              f"{args.new} new members per pass, {args.passes} passes each:")  # fmt: skip
        for kind, label in (("full", "full listing"), ("new", "new users only")):
            v = figures[kind]
            q = statistics.quantiles(v, n=4)
            print(f"  {label:15s} median {statistics.median(v):7.1f} ms  "
                  f"(quartiles {q[0]:.1f}..{q[2]:.1f}, min {min(v):.1f}, max {max(v):.1f})")  # fmt: skip
        ratio = statistics.median(figures["new"]) / max(statistics.median(figures["full"]), 1e-9)
        print(f"  new users only / full listing: {ratio:.2f}")
    finally:
        svc.stop()
        hub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
