"""The hub's CPU for each kind of request a fort researcher adds to a stock hub's work, so the
fort hub's extra in ``bench_scale.py`` can be accounted for operation by operation:

- a service's token check (``GET /hub/api/user`` with a kernel's token, what HubAuth in
  fort-query and fort-credentials asks once per token and process): the token's first use,
  when JupyterHub records its ``last_activity`` and commits, and a use within
  ``JupyterHub.activity_resolution`` (30 s) of the last, which commits nothing;
- the same checks for users who are members of a hub group (JupyterHub loads the group's roles
  and shares with every user it loads);
- adding members to a hub group the way fort-groups' pass does, one request with *new* names
  (``--per-round`` of them) into a group that grows from 0 to ``2 * rounds * per_round``
  members (the request loads and returns the whole group, so it costs more as it grows).

A real hub (SQLite, the Python proxy, dummy authenticator) with N users; each operation runs on
fresh users in rounds, and the hub's CPU (user + system of its process, 10 ms ticks) is read
around each round: the figures are per operation, median (quartiles) over the rounds.

    python benchmarks/bench_hub_ops.py --users 1000 --rounds 8 --per-round 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hubproc import RunningHub  # noqa: E402


class Ops:
    def __init__(self, hub: RunningHub, names: list[str]):
        self.hub, self.s = hub, requests.Session()
        self.proc = psutil.Process(hub.proc.pid)
        self.tokens = {}
        h = hub.admin_headers
        for i in range(0, len(names), 500):
            r = self.s.post(hub.api("users"), json={"usernames": names[i : i + 500]}, headers=h)
            assert r.status_code == 201, r.text
        for n in names:
            r = self.s.post(hub.api(f"users/{n}/tokens"), json={"expires_in": 7200}, headers=h)
            self.tokens[n] = r.json()["token"]
        assert self.s.post(hub.api("groups/study"), headers=h).status_code == 201

    def cpu(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system

    def check(self, names):
        for n in names:
            r = self.s.get(
                self.hub.api("user"), headers={"Authorization": f"token {self.tokens[n]}"}
            )
            assert r.status_code == 200, r.text

    def add(self, names):
        r = self.s.post(self.hub.api("groups/study/users"), json={"users": list(names)},
                        headers=self.hub.admin_headers)  # fmt: skip
        assert r.status_code == 200, r.text

    def per_op(self, fn, names) -> float:
        c0 = self.cpu()
        fn(names)
        return (self.cpu() - c0) * 1000 / len(names)


def line(label: str, v: list[float]) -> str:
    q = statistics.quantiles(v, n=4)
    return f"  {label:52s} {statistics.median(v):5.2f} ms  ({q[0]:.2f}..{q[2]:.2f})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=1000,
                   help="hub users (at least 4 * rounds * per_round are made)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--per-round", type=int, default=50, help="operations per round and kind")
    args = p.parse_args(argv)
    if args.rounds < 2 or args.per_round < 1:
        p.error("--rounds must be at least 2 and --per-round at least 1")
    n = max(args.users, 4 * args.rounds * args.per_round)
    names = [f"u{i:05d}" for i in range(n)]
    hub = RunningHub(Path(tempfile.mkdtemp(prefix="bench-hub-ops-")) / "hub", timeout=120)
    hub.extra_config = (
        "c.JupyterHub.authenticator_class = 'dummy'\nc.JupyterHub.log_level = 'WARN'\n"
    )
    hub.start()
    try:
        ops = Ops(hub, names)
        k, fig = args.per_round, {key: [] for key in ("first", "reuse", "gfirst", "greuse", "add")}
        for r in range(args.rounds):
            plain = names[2 * r * k : (2 * r + 1) * k]
            grouped = names[(2 * r + 1) * k : (2 * r + 2) * k]
            fig["first"].append(ops.per_op(ops.check, plain))
            fig["reuse"].append(ops.per_op(ops.check, plain))
            fig["add"].append(ops.per_op(ops.add, grouped))
            fig["gfirst"].append(ops.per_op(ops.check, grouped))
            fig["greuse"].append(ops.per_op(ops.check, grouped))
        print(
            f"hub CPU per operation, {n} hub users, {args.rounds} rounds of {k} (median, quartiles):"
        )
        print(line("token check, first use (last_activity committed)", fig["first"]))
        print(line("token check, again within activity_resolution", fig["reuse"]))
        print(line("token check, first use, user in a hub group", fig["gfirst"]))
        print(line("token check, again, user in a hub group", fig["greuse"]))
        print(line(f"group add, per name ({k} new names in one request)", fig["add"]))
        print(line("group add, the whole request", [v * k for v in fig["add"]]))
        print(f"  (the group grew to {2 * args.rounds * k} members)")
    finally:
        hub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
