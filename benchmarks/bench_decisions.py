"""What deciding every request from the fort store costs (issue 10), before and after, side by side.

    .venv/bin/python benchmarks/bench_decisions.py [--baseline d245eb7] [--rounds 5]

Two copies of fort-query and fort-credentials run at once, each in its own process: one from
this checkout, one from ``--baseline`` (a git revision checked out into a temporary worktree:
by default the last commit before issue 10, where memberships came from a 5 s cache, cached
credentials were handed over unaudited and parsing ran on the event loop). Both use the
example policy, sample data, SQLite stores of their own, a stand-in for the hub's token API
and the stub STS backend (so only fort's own work is measured). Rounds alternate the two.

1. 1-row query: ``POST queries`` + ``GET queries/{id}?wait=30`` + Arrow download, p50 of the
   end-to-end time over ``--latency-runs`` per round.
2. cached credentials: ``GET api/v1/aws/credentials`` by 16 keep-alive clients (one user each,
   every answer from the STS cache), req/s and p50 per round.
Target (issue 10): the added cost per request stays under 2 ms p50.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(os.environ.get("FORT_BENCH_ROOT") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(Path(__file__).resolve().parent))

USERS = [f"u{i}" for i in range(16)]


def serve(tmp: Path) -> None:
    """In the child: both services on free ports; prints ``QUERY_URL CREDS_URL``."""
    from traitlets.config import Config

    from fort_hub import scopes
    from fort_hub.services.credentials import CredentialsService, StubStsBackend
    from tests.fortsvc import ServiceThread
    from tests.hubproc import free_port
    from tests.query_support import FakeHubApi, QueryEnv

    policy = (ROOT / "fort_hub/dev/data/example-policy.yaml").read_text()
    policy = policy.replace("members:\n      - alice\n", "members:\n      - alice\n" + "".join(
        f"      - {u}\n" for u in USERS), 1)  # fmt: skip
    for limit in ("credential_requests_per_minute: 60", "queries_per_day: 500"):
        name = limit.split(":")[0]
        policy = policy.replace(limit, f"{name}: 100000000")
    every = [scopes.access(s) for s in scopes.SERVICES] + [scopes.QUERY_USE, scopes.CREDENTIALS_AWS]
    hub = FakeHubApi({f"{u}-token": (u, every) for u in USERS})
    q = QueryEnv(tmp / "q", f"sqlite:///{tmp / 'q.sqlite'}", policy)
    q.hub = hub
    q.start()
    c = Config()
    c.FortSettings.policy_file = str(q.policy_path)
    c.FortSettings.store_url = f"sqlite:///{tmp / 'c.sqlite'}"
    port = free_port()
    c.FortServiceApp.bind_url = f"http://127.0.0.1:{port}"
    c.FortServiceApp.service_name = "fort-credentials"
    c.HubOAuth.api_token = "service-token"
    c.HubOAuth.api_url = hub.api_url
    c.HubOAuth.access_scopes = {scopes.access("fort-credentials")}
    c.CredentialsService.sts_backend_class = StubStsBackend
    creds = CredentialsService(config=c, log_level="ERROR")
    creds.initialize([])
    ServiceThread(creds).start()
    print(q.base, f"http://127.0.0.1:{port}/services/fort-credentials/api/v1/", flush=True)
    sys.stdin.read()


@contextlib.contextmanager
def variant(root: Path, tmp: Path):
    """Start the services from *root* (a checkout) in a child process; yield their URLs."""
    env = {**os.environ, "FORT_BENCH_ROOT": str(root), "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(tmp)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline().split()
        if len(line) != 2:
            raise RuntimeError(f"the services from {root} did not start")
        yield line
    finally:
        proc.stdin.close()
        proc.wait(30)


@contextlib.contextmanager
def worktree(rev: str):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), rev],
                       check=True)  # fmt: skip
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                           check=False)  # fmt: skip


def one_row(query_url: str, runs: int) -> list[float]:
    import requests

    s = requests.Session()
    s.headers["Authorization"] = "token u0-token"
    body = {"sql": "SELECT * FROM url_shares LIMIT 1", "dataset": "url_shares"}
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        qid = s.post(query_url + "queries", json=body, timeout=30).json()["id"]
        assert s.get(f"{query_url}queries/{qid}?wait=30", timeout=60).json()["state"] == "succeeded"
        r = s.get(f"{query_url}queries/{qid}/results?format=arrow", timeout=60)
        assert r.status_code == 200
        out.append(time.perf_counter() - t)
    return out


def cached_credentials(creds_url: str, seconds: float) -> dict:
    from urllib.parse import urlparse

    from bench_services import _request, closed_loop

    u = urlparse(creds_url)
    path = u.path + "aws/credentials?role=fort-urls-study"
    raws = [_request("GET", u.netloc, path, f"{name}-token") for name in USERS]
    asyncio.run(closed_loop(u.port, raws, 0.5))  # fill the STS cache and the token caches
    return asyncio.run(closed_loop(u.port, raws, seconds))


def decision_cost(tmp: Path, url: str, n: int = 2000) -> list[float]:
    """Seconds per :meth:`Access.effective` (one membership read + the policy), the decision
    every request now makes from the store instead of a cache."""
    import datetime as dt

    from fort_hub.access import Access
    from fort_hub.policy import load_policy
    from fort_hub.store import Store
    from fort_hub.store.memberships import Memberships

    policy = load_policy(ROOT / "fort_hub/dev/data/example-policy.yaml")
    store = Store(url)
    members = Memberships(store)
    for i in range(500):  # a store with some rows in it
        members.upsert("ads-study", f"x{i}", dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
    access = Access(store, lambda: policy, lambda: dt.datetime.now(dt.UTC))
    out = []
    for _ in range(n):
        t = time.perf_counter()
        access.effective("x7")
        out.append(time.perf_counter() - t)
    store.dispose()
    return out


@contextlib.contextmanager
def scratch_schema(url: str):
    """*url* itself for SQLite; for PostgreSQL a fresh schema, dropped afterwards."""
    if not url.startswith("postgres"):
        yield url
        return
    import secrets

    import psycopg

    name = "bench_" + secrets.token_hex(4)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def fmt(xs: list[float], scale: float = 1.0, unit: str = "") -> str:
    xs = [x * scale for x in xs]
    return f"{statistics.median(xs):,.2f}{unit} ({min(xs):,.2f}..{max(xs):,.2f})"


def main(argv=None) -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]))
        return 0
    p = argparse.ArgumentParser()
    p.add_argument("--baseline", default="d245eb7")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--latency-runs", type=int, default=40)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--postgres", default="", help="also time the decision on this store URL")
    a = p.parse_args(argv)
    res = {k: {"p50": [], "rps": [], "cp50": []} for k in ("baseline", "current")}
    with worktree(a.baseline) as base, tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with variant(base, tmp / "b") as b_urls, variant(ROOT, tmp / "c") as c_urls:
            urls = {"baseline": b_urls, "current": c_urls}
            for k in urls:  # warm-up
                one_row(urls[k][0], 5)
            for _ in range(a.rounds):
                for k, (qurl, curl) in urls.items():
                    res[k]["p50"].append(statistics.median(one_row(qurl, a.latency_runs)))
                    r = cached_credentials(curl, a.seconds)
                    if r["errors"]:
                        raise RuntimeError(f"{k}: {r['errors']} answers were not 200: {r}")
                    res[k]["rps"].append(r["rps"])
                    res[k]["cp50"].append(r["p50"])
    print(f"baseline {a.baseline} vs current, {a.rounds} rounds (median (min..max) of rounds), "
          f"cpu count {os.cpu_count()}")  # fmt: skip
    for k, r in res.items():
        print(f"  {k:8s} 1-row query p50 {fmt(r['p50'], 1e3, ' ms')}   cached credentials "
              f"{fmt(r['rps'])} req/s, p50 {fmt(r['cp50'], 1.0, ' ms')}")  # fmt: skip
    added_q = [c - b for c, b in zip(res["current"]["p50"], res["baseline"]["p50"], strict=True)]
    added_c = [c - b for c, b in zip(res["current"]["cp50"], res["baseline"]["cp50"], strict=True)]
    print(f"  added per request, current - baseline: 1-row query {fmt(added_q, 1e3, ' ms')}, "
          f"cached credentials p50 {fmt(added_c, 1.0, ' ms')}  (target < 2 ms)")  # fmt: skip
    ratio = [c / b for c, b in zip(res["current"]["rps"], res["baseline"]["rps"], strict=True)]
    print(f"  cached credentials throughput ratio current/baseline {fmt(ratio)}")
    with tempfile.TemporaryDirectory() as d:
        urls = {"sqlite": f"sqlite:///{d}/decide.sqlite"}
        if a.postgres:
            urls["postgresql"] = a.postgres
        for name, url in urls.items():
            with scratch_schema(url) as scratch:
                cost = decision_cost(Path(d), scratch)
            q = statistics.quantiles(cost, n=100)
            print(f"  the decision itself (Access.effective, {name}): p50 "
                  f"{statistics.median(cost) * 1e3:.3f} ms, p99 {q[98] * 1e3:.3f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
