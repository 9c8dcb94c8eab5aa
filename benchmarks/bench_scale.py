"""N researchers on one fort hub and, side by side with the same load, on a stock hub.

hubtraf-style, asyncio, bounded in count and time, everything on 127.0.0.1 (see
benchmarks/scale_stack.py for what runs). Researcher i arrives at ``ramp * i / N`` seconds and,
on each hub at the same moment:

- ``login``: the OAuth dance through the Facebook stand-in (hub /oauth_login -> the dialog's
  "Continue as" -> /oauth_callback) and the hub's home page (the browser's landing);
- ``spawn``: POST /hub/api/users/NAME/server, then poll the user model until the server is
  ready (the spawner creates the pod in the Kubernetes double, which runs it after
  ``--pod-delay`` seconds; the hub's readiness check reaches the notebook stand-in);
- ``server_api``: GET /user/NAME/api/status through the proxy with the server's own token
  (read from the pod's environment, as the kernel has it), which the notebook stand-in checks
  with the hub as jupyterhub-singleuser does (``--no-notebook-auth``: it does not);
- fort hub only: ``query`` (``--queries`` aggregate queries through fort-query with
  ``FortClient``, the kernel's token) and ``credentials`` (fort-credentials -> moto's STS);
- ``idle`` for ``--idle`` seconds, then ``stop``: DELETE the server, poll until it is gone.

Reported: per hub, completions and failures by cause, p50/p95/p99 of every step, hub CPU-seconds
per researcher (from /proc/PID/stat) and the fort/stock ratio, the fort services' CPU-seconds per
researcher (and separately their DuckDB worker processes'), the proxies' and stand-ins' CPU,
and the fort store's (PostgreSQL) commits per second and connections. Then the policy phase: a
generated policy of ``--policy-users`` users in
``--policy-groups`` groups (three groups each), its load time and two reconciliation passes
(first: the store and hub groups from nothing; second: nothing to change) against the stock hub,
which has no fort services to interfere.

    .venv/bin/python benchmarks/bench_scale.py --researchers 1000 --ramp 300
    .venv/bin/python benchmarks/bench_scale.py --researchers 50 --ramp 20 --json out.json
    .venv/bin/python benchmarks/bench_scale.py -n 300 --ramp 300 --policy-users 0 --replicas 2

``--replicas N`` (N >= 2) runs each fort service as N processes behind one round-robin front,
registered with the hub by url and token as on Kubernetes (benchmarks/scale_replicas.py); the
services' CPU is then summed over the replicas and also shown per replica.

Targets: 0 failures; fort hub CPU per researcher <= 1.10 x stock; fort services <= the fort
hub's own CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_stack import Stack, cpu_by_role

from fort_hub.client import FortClient

SQL = "SELECT country, count(*) AS n, CAST(sum(shares) AS BIGINT) AS shares FROM url_shares GROUP BY country"
STEPS = ("login", "spawn", "server_api", "query", "credentials", "stop")
CONFIRM_FIELDS = ("client_id", "redirect_uri", "state", "scope", "code_challenge",
                  "code_challenge_method")  # fmt: skip


class StepError(Exception):
    def __init__(self, step: str, cause: str):
        super().__init__(f"{step}: {cause}")
        self.step, self.cause = step, cause


class Researcher:
    """One simulated researcher on one hub (``kind`` "fort" or "stock")."""

    def __init__(self, run: Run, kind: str, name: str):
        self.run, self.kind, self.name = run, kind, name
        self.hub = run.hub_of(kind)
        self.times: dict[str, list[float]] = {}

    async def step(self, label: str, coro):
        t0 = time.perf_counter()
        try:
            out = await coro
        except StepError:
            raise
        except Exception as e:  # a failure is a result: reported by cause
            raise StepError(label, _cause(e)) from e
        self.times.setdefault(label, []).append(time.perf_counter() - t0)
        return out

    async def go(self) -> None:
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        async with aiohttp.ClientSession(
            connector=self.run.connector, connector_owner=False, cookie_jar=jar,
            timeout=aiohttp.ClientTimeout(total=120),
        ) as s:  # fmt: skip
            self.s = s
            await self.step("login", self.login())
            await self.step("spawn", self.spawn())
            token = await self.server_token()
            await self.step("server_api", self.server_api(token))
            if self.kind == "fort":
                for _ in range(self.run.args.queries):
                    await self.step("query", self.query(token))
                await self.step("credentials", self.credentials(token))
            await asyncio.sleep(self.run.args.idle)
            await self.step("stop", self.stop())

    def xsrf(self) -> dict:
        for c in self.s.cookie_jar:
            if c.key == "_xsrf":
                return {"X-XSRFToken": c.value}
        return {}

    async def login(self) -> None:
        hub = self.hub.url
        async with self.s.get(f"{hub}/hub/oauth_login", allow_redirects=False) as r:
            _expect(r, 302)
            dialog = r.headers["Location"]
        # the dialog page lists every identity; a browser shows it and posts the choice: post it
        q = {k: v[0] for k, v in parse_qs(urlparse(dialog).query).items()}
        form = {k: q.get(k, "") for k in CONFIRM_FIELDS}
        form["identity"] = self.name
        confirm = dialog.split("?", 1)[0] + "/confirm"
        async with self.s.post(confirm, data=form, allow_redirects=False) as r:
            _expect(r, 302)
            callback = r.headers["Location"].split("#", 1)[0]
        async with self.s.get(callback, allow_redirects=False) as r:
            await _expect_read(r, 302)
        async with self.s.get(f"{hub}/hub/home") as r:
            await _expect_read(r, 200)

    def user_api(self) -> str:
        return f"{self.hub.url}/hub/api/users/{self.name}"

    async def spawn(self) -> None:
        # over the hub's concurrent_spawn_limit it answers 429 "try again in N seconds": a
        # researcher does, up to --spawn-retries times (counted in the report)
        for attempt in range(self.run.args.spawn_retries + 1):
            async with self.s.post(self.user_api() + "/server", json={},
                                   headers=self.xsrf()) as r:  # fmt: skip
                if r.status != 429 or attempt == self.run.args.spawn_retries:
                    await _expect_read(r, 201, 202)
                    break
                await r.read()
                self.run.retries[self.kind] += 1
                await asyncio.sleep(float(r.headers.get("Retry-After") or 10))
        await self.poll("spawn")

    async def poll(self, what: str) -> None:
        """Poll the user model until the server is ready (``spawn``) or gone (``stop``)."""
        deadline = time.monotonic() + self.run.args.step_timeout
        while time.monotonic() < deadline:
            async with self.s.get(self.user_api()) as r:
                model = await _expect_json(r, 200)
            srv = model.get("servers", {}).get("")
            if what == "stop" and not srv:
                return
            if what == "spawn" and not srv:
                raise RuntimeError("the server is gone (spawn failed)")
            if what == "spawn" and srv.get("ready"):
                return
            await asyncio.sleep(self.run.args.poll)
        raise TimeoutError(f"{what} not done in {self.run.args.step_timeout}s")

    async def server_token(self) -> str:
        ns = self.kind
        url = f"{self.run.stack.k8s_url}/api/v1/namespaces/{ns}/pods"
        sel = {"labelSelector": f"hub.jupyter.org/username={self.name}"}
        async with self.s.get(url, params=sel) as r:
            pods = (await _expect_json(r, 200))["items"]
        if not pods:
            raise StepError("spawn", "no pod in the Kubernetes double")
        env = pods[0]["spec"]["containers"][0].get("env") or []
        return next(e["value"] for e in env if e["name"] == "JUPYTERHUB_API_TOKEN")

    async def server_api(self, token: str) -> None:
        url = f"{self.hub.url}/user/{self.name}/api/status"
        async with self.s.get(url, headers={"Authorization": f"token {token}"}) as r:
            await _expect_json(r, 200)

    async def query(self, token: str) -> None:
        def run():
            client = FortClient(url=f"{self.hub.url}/services/fort-query/", token=token,
                                timeout=120)  # fmt: skip
            table = client.query(SQL, dataset="url_shares", progress=False)
            if table.num_rows == 0:
                raise RuntimeError("empty result")

        await asyncio.get_running_loop().run_in_executor(self.run.pool, run)

    async def credentials(self, token: str) -> None:
        # as the kernel asks (boto3's credential process, FortClient): its token, none of the
        # browser's cookies (the hub's session id among them)
        url = f"{self.hub.url}/services/fort-credentials/api/v1/aws/credentials"
        async with aiohttp.ClientSession(
            connector=self.run.connector, connector_owner=False,
            cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=120),
        ) as kernel, kernel.get(url, params={"role": "fort-urls-study"},
                                headers={"Authorization": f"token {token}"}) as r:  # fmt: skip
            if not (await _expect_json(r, 200)).get("AccessKeyId"):
                raise RuntimeError("no AccessKeyId")

    async def stop(self) -> None:
        async with self.s.delete(self.user_api() + "/server", headers=self.xsrf()) as r:
            await _expect_read(r, 202, 204)
        await self.poll("stop")


def _expect(r, *codes) -> None:
    if r.status not in codes:
        raise RuntimeError(f"HTTP {r.status} from {r.url.path}")


async def _expect_read(r, *codes) -> bytes:
    body = await r.read()
    if r.status not in codes:
        raise RuntimeError(f"HTTP {r.status} from {_path(r)}: {_readable(body)}")
    return body


async def _expect_json(r, *codes) -> dict:
    return json.loads(await _expect_read(r, *codes))


def _path(r) -> str:
    return re.sub(r"/r\d{5}", "/NAME", r.url.path)


def _readable(body: bytes) -> str:
    text = body.decode(errors="replace")
    if "<html" in text:
        text = re.sub(r"<[^>]+>", " ", text.split("<body", 1)[-1])
    return " ".join(text.split())[:160]


def _cause(e: BaseException) -> str:
    text = re.sub(r"r\d{5}", "NAME", str(e))
    text = re.sub(r"[0-9a-f]{16,}", "ID", text)
    return f"{type(e).__name__}: {text[:200]}"


class Run:
    def __init__(self, stack: Stack, args):
        self.stack, self.args = stack, args
        self.pool = ThreadPoolExecutor(args.threads)
        self.results: dict[str, list[Researcher]] = {"fort": [], "stock": []}
        self.failures: dict[str, Counter] = {"fort": Counter(), "stock": Counter()}
        self.done: Counter = Counter()
        self.retries: Counter = Counter()
        self.pg_samples: list[int] = []

    async def one(self, kind: str, name: str, deadline: float) -> None:
        r = Researcher(self, kind, name)
        self.results[kind].append(r)
        try:
            await asyncio.wait_for(r.go(), max(1.0, deadline - time.monotonic()))
            self.done[kind] += 1
        except StepError as e:
            self.failures[kind][f"{e.step}: {e.cause}"] += 1
        except TimeoutError:
            self.failures[kind]["run time over (--duration)"] += 1

    async def sample_pg(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            stats = await loop.run_in_executor(None, self.stack.pg.stats)
            self.pg_samples.append(stats["connections"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2)

    async def main(self) -> dict:
        args, names = self.args, self.stack.names
        self.connector = aiohttp.TCPConnector(limit=0, force_close=False)
        procs = self.stack.processes()
        profilers = start_profilers(args.profile_dir, procs, args.profile_gil)
        cpu0 = cpu_by_role(procs)
        logs0 = {kind: log_size(self.hub_of(kind)) for kind in ("fort", "stock")}
        pg0 = self.stack.pg.stats()
        t0 = time.monotonic()
        deadline = t0 + args.ramp + args.duration
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(self.sample_pg(stop))
        tasks = []
        for i, name in enumerate(names):
            delay = t0 + args.ramp * i / max(1, len(names)) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for kind in ("fort", "stock"):
                tasks.append(asyncio.ensure_future(self.one(kind, name, deadline)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
        stop.set()
        await sampler
        cpu = {k: v - cpu0[k] for k, v in cpu_by_role(procs).items()}
        stop_profilers(profilers)
        pg1 = self.stack.pg.stats()
        await self.connector.close()
        self.pool.shutdown()
        out = self.summary(elapsed, cpu, pg0, pg1)
        for kind in ("fort", "stock"):
            counts = hub_api_requests(self.hub_of(kind).log_path, logs0[kind])
            out["hubs"][kind]["api_requests_per_researcher"] = {
                k: v / len(names) for k, v in counts.most_common()
            }
        return out

    def hub_of(self, kind: str):
        return self.stack.fort if kind == "fort" else self.stack.stock

    def summary(self, elapsed, cpu, pg0, pg1) -> dict:
        n = len(self.stack.names)
        out = {"researchers": n, "elapsed_s": elapsed, "cpu_s": cpu, "hubs": {}}
        for kind in ("fort", "stock"):
            steps = {}
            for st in STEPS:
                vals = [v for r in self.results[kind] for v in r.times.get(st, [])]
                if vals:
                    steps[st] = {"n": len(vals), **{f"p{q}": pct(vals, q) for q in (50, 95, 99)}}
            out["hubs"][kind] = {
                "completed": self.done[kind],
                "failed": sum(self.failures[kind].values()),
                "failures": dict(self.failures[kind].most_common()),
                "spawn_429_retries": self.retries[kind],
                "steps": steps,
                "hub_cpu_per_researcher": cpu[f"{kind}_hub"] / n,
                "proxy_cpu_per_researcher": cpu[f"{kind}_proxy"] / n,
            }
        out["ratio_hub_cpu_fort_over_stock"] = cpu["fort_hub"] / max(cpu["stock_hub"], 1e-9)
        out["fort_services_cpu_per_researcher"] = cpu["fort_services"] / n
        out["services_over_fort_hub_cpu"] = cpu["fort_services"] / max(cpu["fort_hub"], 1e-9)
        out["fort_query_workers_cpu_per_researcher"] = cpu["fort_query_workers"] / n
        out["service_fronts_cpu_per_researcher"] = cpu["service_fronts"] / n
        commits = pg1["xact_commit"] - pg0["xact_commit"]
        out["store"] = {
            "commits": commits,
            "commits_per_s": commits / elapsed,
            "commits_per_researcher": commits / n,
            "connections_max": max(self.pg_samples, default=0),
            "connections_median": statistics.median(self.pg_samples) if self.pg_samples else 0,
        }
        return out


def log_size(hub) -> int:
    return hub.log_path.stat().st_size if hub.log_path.exists() else 0


_API_LINE = re.compile(r"\] \d{3} (GET|POST|PUT|PATCH|DELETE) (/hub/api/[^\s?]*)")
_NAMED = re.compile(r"^(/hub/api/(?:users|groups|services)/)[^/]+")


def hub_api_requests(log_path: Path, offset: int) -> Counter:
    """The hub's REST API requests logged after *offset* bytes of its log, by method and path
    (a user's, group's or service's name as ``*``): e.g. the token checks, ``GET /hub/api/user``
    (JupyterHub logs every API request, at info or above)."""
    counts: Counter = Counter()
    with open(log_path, "rb") as f:
        f.seek(offset)
        for line in f.read().decode("utf8", "replace").splitlines():
            m = _API_LINE.search(line)
            if m:
                path = _NAMED.sub(lambda n: n[1] + "*", m[2])
                counts[f"{m[1]} {path}"] += 1
    return counts


def start_profilers(profile_dir: str | None, procs: dict, gil: bool = False) -> list:
    """py-spy attached to both hubs (non-blocking sampling, on-CPU stacks only) while the
    researchers run; each writes DIR/{fort,stock}_hub.txt in collapsed-stack ("raw") format,
    which speedscope.app and flamegraph.pl read. *gil*: only the thread holding the GIL is
    sampled, so a thread waiting for PostgreSQL or an fsync (which py-spy counts as running)
    is left out and the samples follow the Python CPU time."""
    if not profile_dir:
        return []
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    Path(profile_dir).mkdir(parents=True, exist_ok=True)
    out = []
    for kind in ("fort_hub", "stock_hub"):
        cmd = [spy, "record", "--nonblocking", "--format", "raw", "--rate", "100",
               "--pid", str(procs[kind][0]), "-o", str(Path(profile_dir) / f"{kind}.txt")]  # fmt: skip
        cmd += ["--gil"] if gil else []
        out.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return out


def stop_profilers(profilers: list) -> None:
    for p in profilers:
        p.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    for p in profilers:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def report(out: dict) -> None:
    n = out["researchers"]
    print(f"\n== {n} researchers on each hub, {out['elapsed_s']:.0f}s "
          f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}); proxy: {out['chp']}; "
          f"fort services: {out['services']}; notebook stand-in: "
          f"{'checks tokens (HubAuth)' if out['args']['notebook_auth'] else 'no auth'}; stock "
          f"hub's researchers in a hub group: {'yes' if out['args'].get('stock_groups') else 'no'}; "
          f"fort hub's: {'yes' if out['args'].get('hub_groups') else 'no'}")  # fmt: skip
    for kind, h in out["hubs"].items():
        print(f"\n{kind} hub: {h['completed']} completed, {h['failed']} failed "
              f"({h['spawn_429_retries']} spawn retries after a 429)")  # fmt: skip
        for st, v in h["steps"].items():
            print(f"   {st:<12} n={v['n']:>5}  p50 {v['p50']:7.3f}s  p95 {v['p95']:7.3f}s"
                  f"  p99 {v['p99']:7.3f}s")  # fmt: skip
        for cause, count in h["failures"].items():
            print(f"   failed {count:>4} x {cause}")
        print(f"   hub CPU {h['hub_cpu_per_researcher'] * 1000:.1f} ms/researcher; proxy "
              f"{h['proxy_cpu_per_researcher'] * 1000:.1f} ms/researcher")  # fmt: skip
        api = h.get("api_requests_per_researcher") or {}
        print("   hub API requests per researcher: "
              + ", ".join(f"{k} {v:.2f}" for k, v in list(api.items())[:8]))  # fmt: skip
    print(f"\nhub CPU fort/stock: {out['ratio_hub_cpu_fort_over_stock']:.3f} (target <= 1.10)")
    print(f"fort services CPU: {out['fort_services_cpu_per_researcher'] * 1000:.1f} ms/researcher"
          f" = {out['services_over_fort_hub_cpu']:.2f} x the fort hub's (target <= 1); their "
          f"DuckDB workers {out['fort_query_workers_cpu_per_researcher'] * 1000:.1f} ms/researcher"
          f"; round-robin fronts {out['service_fronts_cpu_per_researcher'] * 1000:.1f}")  # fmt: skip
    print("CPU seconds by process: " + ", ".join(f"{k} {v:.1f}" for k, v in out["cpu_s"].items()))
    s = out["store"]
    print(f"store: {s['commits']} commits ({s['commits_per_s']:.1f}/s, "
          f"{s['commits_per_researcher']:.1f}/researcher); connections median "
          f"{s['connections_median']}, max {s['connections_max']}")  # fmt: skip


def services_label(replicas: int) -> str:
    if replicas == 1:
        return "hub-managed, one process each"
    return f"{replicas} processes each behind a round-robin front, S3 result store (moto)"


def report_policy(p: dict) -> None:
    first = f"{p['reconcile_first_s']:.1f}s ({p['first_changes']} changes)"
    if p.get("first_error"):
        first = f"not done: {p['first_error']}"
    print(f"\npolicy of {p['users']} users / {p['groups']} groups ({p['memberships']} "
          f"memberships, {p['hub_users']} of the users in the hub): load p50 "
          f"{p['load_s']['p50']:.2f}s (min {p['load_s']['min']:.2f}, max {p['load_s']['max']:.2f})"
          f"; first reconciliation {first}; second {p['reconcile_second_s']:.1f}s "
          f"({p['second_changes']} changes)")  # fmt: skip


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--researchers", "-n", type=int, default=1000)
    p.add_argument("--ramp", type=float, default=300, help="seconds over which they arrive")
    p.add_argument(
        "--duration",
        type=float,
        default=600,
        help="seconds after the ramp before an unfinished researcher counts as failed",
    )
    p.add_argument("--pod-delay", type=float, default=1.0, help="seconds a pod takes to run")
    p.add_argument("--queries", type=int, default=3)
    p.add_argument("--idle", type=float, default=5.0)
    p.add_argument("--poll", type=float, default=2.0, help="seconds between status polls")
    p.add_argument("--spawn-retries", type=int, default=3, help="after a 429 (spawn limit)")
    p.add_argument("--step-timeout", type=float, default=300)
    p.add_argument("--threads", type=int, default=16, help="threads running FortClient calls")
    p.add_argument("--policy-users", type=int, default=10_000)
    p.add_argument("--policy-groups", type=int, default=1_000)
    p.add_argument("--policy-timeout", type=float, default=600)
    p.add_argument("--chp-prefix", help="npm prefix holding configurable-http-proxy")
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="processes per fort service: 1 hub-managed; N >= 2 external, behind a round-robin "
        "front each, fort-query's sharing the S3 result store on moto (scale_replicas.py)",
    )
    p.add_argument(
        "--notebook-auth",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the notebook stand-in checks each API request's token with its hub, cached 300 s "
        "per token, as jupyterhub-singleuser (HubAuth) does; --no-notebook-auth: it answers "
        "every request with 200 (the harness before #13's fidelity fix; the stock hub then "
        "checks no server token at all)",
    )
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--profile-dir", help="record both hubs with py-spy into this directory")
    p.add_argument(
        "--profile-gil", action="store_true",
        help="with --profile-dir: sample only the thread holding the GIL (py-spy --gil), "
        "which leaves out threads waiting for PostgreSQL or an fsync",
    )  # fmt: skip
    p.add_argument(
        "--stock-groups", action="store_true",
        help="put the stock hub's researchers in one hub group at login (oauthenticator's "
        "manage_groups), as fort-groups puts the fort hub's in urls-study: JupyterHub then loads "
        "the group, its roles and its shares with every user it looks up, on both hubs alike",
    )  # fmt: skip
    p.add_argument(
        "--hub-groups", action=argparse.BooleanOptionalAction, default=False,
        help="run fort with FORT_HUB_GROUPS=true (c.FortSettings.hub_groups = True): the study "
        "memberships copied into hub groups, which JupyterHub loads with each user it looks up; "
        "--no-hub-groups (the default, as fort's) runs it without the copy",
    )  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the work directory (hub logs)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="fort-scale-"))
    if args.replicas < 1:
        raise SystemExit("--replicas must be at least 1")
    stack = Stack(work, args.researchers, args.pod_delay, args.chp_prefix, args.replicas,
                  args.notebook_auth, args.stock_groups,
                  args.hub_groups)  # fmt: skip
    t0 = time.monotonic()
    try:
        stack.start()
        print(f"stack ready in {time.monotonic() - t0:.0f}s ({work})", flush=True)
        out = asyncio.run(Run(stack, args).main())
        out["chp"] = stack.chp_name
        out["services"] = services_label(args.replicas)
        out["args"] = vars(args)
        report(out)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        if args.policy_users:
            from scale_policy import policy_phase

            out["policy"] = policy_phase(stack, work, args)
            report_policy(out["policy"])
            if args.json:
                Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
