"""Simulated researchers against a running ``fort-hub demo``, hubtraf-style.

Each simulated researcher: signs in through the Facebook stand-in (login), starts a server and
waits until it is ready (spawn), makes an API token and runs one aggregate query on url_shares
through fort-query (query), fetches AWS credentials from fort-credentials (credentials), and
stops the server (stop). Rounds of 10, 50 and 100 concurrent researchers, each round bounded in
time (a researcher not done by then counts as incomplete). Prints, per round: completions,
failures, p50/p95 of each step, and the CPU the hub process (and the hub plus its services)
used during the round.

    .venv/bin/python benchmarks/bench_demo.py                  # rounds 10, 50, 100
    .venv/bin/python benchmarks/bench_demo.py --users 10 --round-seconds 60
    .venv/bin/python benchmarks/bench_demo.py --fresh-clone    # time `make demo` from a clone

The demo runs in a temporary state directory with 100 extra Facebook test identities
(r001..r100) who are members of urls-study.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402

from fort_hub.client import FortClient  # noqa: E402
from fort_hub.dev import demo_setup  # noqa: E402
from tests.demoproc import RunningDemo  # noqa: E402

STEPS = ("login", "spawn", "token", "query", "credentials", "stop")
SQL = "SELECT country, count(*) AS n, CAST(sum(shares) AS BIGINT) AS shares FROM url_shares GROUP BY country"


def prepare(state: Path, n: int) -> list[str]:
    """The demo state with n extra researchers in urls-study (before the demo starts)."""
    demo_setup.prepare_state(state, reset=False)
    names = [f"r{i:03d}" for i in range(1, n + 1)]
    ids_path = state / "facebook-identities.yaml"
    ids = yaml.safe_load(ids_path.read_text())
    for i, name in enumerate(names):
        ids["identities"][name] = {
            "id": str(20000000000000000 + i),
            "name": f"Researcher {name}",
            "email": f"{name}@example.org",
        }
    ids_path.write_text(yaml.safe_dump(ids))
    policy_path = state / "policy.yaml"
    policy = yaml.safe_load(policy_path.read_text())
    for g in policy["groups"]:
        if g["name"] == "urls-study":
            g["members"] = list(g["members"]) + names
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return names


def researcher(demo: RunningDemo, name: str, deadline: float, times: dict) -> None:
    def step(label, fn):
        if time.monotonic() > deadline:
            e = TimeoutError(f"round time over before {label}")
            e.fort_step = label
            raise e
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as e:
            e.fort_step = label  # which step failed, for the report
            raise
        times[label] = time.perf_counter() - t0
        return out

    s = step("login", lambda: demo.login(name))
    step(
        "spawn", lambda: demo.spawn(s, name, "python", timeout=max(1, deadline - time.monotonic()))
    )

    def token():
        r = s.post(
            f"{demo.url}/hub/api/users/{name}/tokens",
            json={"note": "bench"},
            headers=demo.xsrf(s),
            timeout=60,
        )
        r.raise_for_status()
        return r.json()["token"]

    token = step("token", token)
    client = FortClient(url=f"{demo.url}/services/fort-query/", token=token, timeout=120)
    table = step("query", lambda: client.query(SQL, dataset="url_shares", progress=False))
    assert table.num_rows > 0

    def credentials():
        resp = requests.get(
            f"{demo.url}/services/fort-credentials/api/v1/aws/credentials",
            params={"role": "fort-urls-study"},
            headers={"Authorization": f"token {token}"},
            timeout=60,
        )
        resp.raise_for_status()
        assert resp.json()["AccessKeyId"]

    step("credentials", credentials)
    step("stop", lambda: demo.stop_server(s, name))


def hub_processes(state: Path) -> tuple[psutil.Process, list[psutil.Process], list]:
    pid = int((state / "hub" / "jupyterhub.pid").read_text())
    hub = psutil.Process(pid)
    children = hub.children()

    def named(*words):
        return [p for p in children if any(w in part for part in p.cmdline() or [] for w in words)]

    return hub, named("fort_hub.services"), named("configurable-http-proxy", "fort_hub.dev.proxy")


def cpu_seconds(procs) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def run_round(demo: RunningDemo, names: list[str], seconds: float, ramp: float) -> dict:
    hub, services, proxy = hub_processes(demo.state)
    cpu0_hub, cpu0_all = cpu_seconds([hub]), cpu_seconds([hub, *services])
    cpu0_proxy, machine0 = cpu_seconds(proxy), psutil.cpu_times()
    t0 = time.monotonic()
    deadline = t0 + seconds
    results: dict[str, dict] = {n: {} for n in names}
    errors: dict[str, str] = {}

    def one(i: int, name: str):
        time.sleep(ramp * i / max(1, len(names)))
        try:
            researcher(demo, name, deadline, results[name])
        except Exception as e:  # a failure is a result, reported below
            where = getattr(e, "fort_step", "?")
            errors[name] = f"{where}: {type(e).__name__}: {_readable(str(e))[:200]}"

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        futures = [pool.submit(one, i, n) for i, n in enumerate(names)]
        wait(futures, timeout=seconds + 90)
    elapsed = time.monotonic() - t0
    done = [n for n in names if n not in errors and "stop" in results[n]]
    return {
        "users": len(names),
        "completed": len(done),
        "failed": len(errors),
        "incomplete": len(names) - len(done) - len(errors),
        "elapsed": elapsed,
        "steps": {st: [results[n][st] for n in names if st in results[n]] for st in STEPS},
        "hub_cpu": cpu_seconds([hub]) - cpu0_hub,
        "all_cpu": cpu_seconds([hub, *services]) - cpu0_all,
        "proxy_cpu": cpu_seconds(proxy) - cpu0_proxy,
        "machine_busy": _busy(machine0, psutil.cpu_times()),
        "errors": sorted(set(errors.values()))[:8],
        "failed_steps": {
            st: sum(1 for e in errors.values() if e.startswith(st + ":"))
            for st in ("?", "login", "spawn", "token", "query", "credentials", "stop")
        },
    }


def _readable(text: str) -> str:
    """An error as one line: an HTML error page reduced to its message."""
    if "<html" in text:
        body = text.split("<body", 1)[-1]
        text = text[:12] + " " + re.sub(r"<[^>]+>", " ", body.split("</body>")[0])
    return " ".join(text.split())


def _busy(before, after) -> float:
    """Share of all cores busy between two psutil.cpu_times() readings."""
    idle = (after.idle + after.iowait) - (before.idle + before.iowait)
    total = sum(after) - sum(before)
    return 1 - idle / total if total > 0 else float("nan")


def clean_up(demo: RunningDemo, names: list[str], timeout: float = 180) -> int:
    """Stop every server of *names* that a failed researcher left running (as the admin), so
    the next round starts from none. Returns how many had to be stopped."""
    admin = demo.login("admin")
    left = []
    for name in names:
        r = admin.get(f"{demo.url}/hub/api/users/{name}", timeout=60)
        if r.status_code == 200 and r.json().get("servers"):
            admin.delete(
                f"{demo.url}/hub/api/users/{name}/server", headers=demo.xsrf(admin), timeout=60
            )
            left.append(name)
    deadline = time.monotonic() + timeout
    for name in left:
        while time.monotonic() < deadline:
            r = admin.get(f"{demo.url}/hub/api/users/{name}", timeout=60)
            if r.status_code != 200 or not r.json().get("servers"):
                break
            time.sleep(1)
    return len(left)


def report(r: dict) -> None:
    print(
        f"\n== {r['users']} researchers: {r['completed']} completed, {r['failed']} failed, "
        f"{r['incomplete']} incomplete, in {r['elapsed']:.0f}s"
    )
    for st in STEPS:
        v = r["steps"][st]
        print(
            f"   {st:<12} n={len(v):>3}  p50 {pct(v, 0.5):7.2f}s  p95 {pct(v, 0.95):7.2f}s"
            + (f"  max {max(v):7.2f}s" if v else "")
        )
    el = max(r["elapsed"], 1e-9)
    print(
        f"   hub CPU {r['hub_cpu']:.1f}s ({100 * r['hub_cpu'] / el:.0f}% of one core); "
        f"hub + services {r['all_cpu']:.1f}s ({100 * r['all_cpu'] / el:.0f}%); "
        f"proxy {r['proxy_cpu']:.1f}s ({100 * r['proxy_cpu'] / el:.0f}%); "
        f"machine busy {100 * r['machine_busy']:.0f}% of {os.cpu_count()} cores"
    )
    failed = {k: v for k, v in r.get("failed_steps", {}).items() if v}
    if failed:
        print("   failures by step: " + ", ".join(f"{k} {v}" for k, v in failed.items()))
    for e in r["errors"]:
        print(f"   error: {e}")


def fresh_clone(port: int, timeout: float) -> int:
    """Clone this repository and time `make demo` until the hub answers on 127.0.0.1:port."""
    work = Path(tempfile.mkdtemp(prefix="fort-fresh-"))
    clone = work / "fort-hub"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "DEMO_ARGS": f"--port {port}"}
    env.pop("VIRTUAL_ENV", None)
    log = open(work / "make-demo.log", "wb")  # noqa: SIM115
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["make", "demo"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    answered = None
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/hub/login", timeout=2).status_code == 200:
                answered = time.monotonic() - t0
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    installed = (clone / ".venv" / ".fort-hub-installed").exists()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()
    if answered is None:
        print(f"make demo did not answer within {timeout:.0f}s; log: {work / 'make-demo.log'}")
        return 1
    print(f"fresh clone: `make demo` answered on http://127.0.0.1:{port}/ after {answered:.0f}s")
    print(f"   (venv created and `pip install -e .[test,demo]` done: {installed})")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, nargs="+", default=[10, 50, 100])
    p.add_argument("--round-seconds", type=float, default=150)
    p.add_argument("--ramp", type=float, default=10, help="seconds over which a round starts")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--fresh-clone", action="store_true")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    if args.fresh_clone:
        return fresh_clone(args.port, timeout=1800)
    state_root = Path(tempfile.mkdtemp(prefix="fort-bench-demo-"))
    names = prepare(state_root / "state", max(args.users))
    demo = RunningDemo(state_root / "state", rows=args.rows, timeout=300)
    demo.start()
    print(
        f"demo ready in {demo.ready_seconds:.1f}s ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})"
    )
    try:
        for n in args.users:
            report(run_round(demo, names[:n], args.round_seconds, args.ramp))
            stopped = clean_up(demo, names[:n])
            if stopped:
                print(f"   (stopped {stopped} server(s) failed researchers left running)")
    finally:
        rc = demo.stop()
        print(f"\ndemo stopped (exit {rc})")
        shutil.rmtree(state_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
