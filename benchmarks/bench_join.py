"""The hub's CPU per arriving researcher for joining their study's hub group, the two ways:

- "at sign-in": the hub adds a user it creates to their fort-managed study groups
  (``FacebookOAuthenticator.join_study_groups``, the default since #13);
- "at the pass": fort-groups adds the new members at its next reconciliation pass
  (``join_study_groups = False``, as before), ``POST /hub/api/groups/{name}/users``.

One run starts a hub (the Facebook authenticator against the local stand-in, SQLite), its
fort-groups and N existing researchers in urls-study, then for each round: R new researchers
sign in (the Facebook flow) and fort-groups runs a pass. The hub's CPU (user + system of its
process) is read around the sign-ins and around the pass (fort-groups' own CPU is not
counted; a pass's cost is shared by ``--new`` arrivals, so fewer arrivals per pass make the
pass way dearer per researcher). Run it once each way, alternating:

    python benchmarks/bench_join.py --users 1000 --rounds 10 --new 20 --way sign-in
    python benchmarks/bench_join.py --users 1000 --rounds 10 --new 20 --way pass
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import psutil
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_groups_pass import make_users, start_groups, write_policy  # noqa: E402

from fort_hub import scopes  # noqa: E402
from fort_hub.dev.facebook import Standin, StandinServer  # noqa: E402
from tests.fbflow import login  # noqa: E402
from tests.fortsvc import ServiceSlot, hub_config  # noqa: E402
from tests.hubproc import RunningHub  # noqa: E402

APP_ID, SECRET = "1234567890123456", "dev-facebook-app-secret"


def facebook_config(url: str, policy: Path, store_url: str, join: bool) -> str:
    return f"""
c.JupyterHub.authenticator_class = "facebook"
c.FacebookOAuthenticator.client_id = {APP_ID!r}
c.FacebookOAuthenticator.client_secret = {SECRET!r}
c.FacebookOAuthenticator.dialog_url = {url!r}
c.FacebookOAuthenticator.graph_url = {url!r}
c.FacebookOAuthenticator.strip_email_domains = {{"example.org"}}
c.FacebookOAuthenticator.join_study_groups = {join!r}
c.FortSettings.policy_file = {str(policy)!r}
c.FortSettings.store_url = {store_url!r}
c.FortSettings.hub_groups = True  # the join at sign-in is part of the hub-group copy
c.JupyterHub.log_level = "WARN"
"""


def summary(label: str, v: list[float]) -> str:
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0], v[0], v[0]]
    return (
        f"  {label:34s} median {statistics.median(v):6.2f} ms  (quartiles {q[0]:.2f}..{q[2]:.2f})"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=1000, help="existing researchers in urls-study")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--new", type=int, default=20, help="researchers signing in per round")
    p.add_argument("--way", choices=("sign-in", "pass"), required=True)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-join-"))
    names = [f"r{i:05d}" for i in range(args.users + args.rounds * args.new)]
    policy, store_url = work / "policy.yaml", f"sqlite:///{work / 'fort.sqlite'}"
    write_policy(policy, names)
    idents = {n: {"id": str(10**16 + i), "name": n, "email": f"{n}@example.org"}
              for i, n in enumerate(names)}  # fmt: skip
    standin = StandinServer(Standin(idents, APP_ID, SECRET)).start()
    slot = ServiceSlot(scopes.GROUPS_SERVICE)
    hub = RunningHub(work / "hub", timeout=120,
                     env={"JUPYTERHUB_CRYPT_KEY": Fernet.generate_key().decode()})  # fmt: skip
    hub.extra_config = hub_config([slot], hub.url) + facebook_config(
        standin.url, policy, store_url, args.way == "sign-in"
    )
    app, svc = start_groups(hub, slot, policy, store_url)
    try:
        hub.start()
        make_users(hub, names[: args.users])
        svc.call(app.reconcile, "warm-up", timeout=600)
        proc = psutil.Process(hub.proc.pid)

        def cpu() -> float:
            t = proc.cpu_times()
            return t.user + t.system

        signin, passes = [], []
        for r in range(args.rounds):
            batch = names[args.users + r * args.new : args.users + (r + 1) * args.new]
            c0 = cpu()
            for n in batch:
                assert login(hub.url, n)[1].status_code == 302, hub.log()[-2000:]
            c1 = cpu()
            changes = svc.call(app.reconcile, "bench", timeout=300)
            passes.append((cpu() - c1) * 1000 / args.new)
            signin.append((c1 - c0) * 1000 / args.new)
            added = len([c for c in changes if c.action == "groups.add"])
            assert added == (0 if args.way == "sign-in" else args.new), changes
        total = [a + b for a, b in zip(signin, passes, strict=True)]
        print(f"hub CPU per arriving researcher, joined {args.way}, {args.users}.."
              f"{len(names)} researchers in urls-study, {args.new} per round, "
              f"{args.rounds} rounds (median of the rounds):")  # fmt: skip
        print(summary("sign-in (Facebook flow)", signin))
        print(summary("the next pass (per new researcher)", passes))
        print(summary("the next pass (whole pass)", [v * args.new for v in passes]))
        print(summary("together", total))
        print("  (the hub's CPU only: fort-groups' own work, its audit records in the pass way, "
              "is not counted)")  # fmt: skip
    finally:
        svc.stop()
        hub.stop()
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
