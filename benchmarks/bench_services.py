"""fort-credentials and fort-groups throughput and latency behind real hub auth.

    .venv/bin/python benchmarks/bench_services.py [--rounds 5] [--seconds 3] [--clients 32]

A real JupyterHub (tests/hubproc.py) runs both services hub-managed (their own processes, as in
a deployment); moto's server (its own process) stands in for STS. Each service process also
serves a *bare* handler: a FortHandler that only writes ``{"ok": true}``, behind the same hub
auth (token lookup with HubAuth's cache), so each pair is measured side by side in one run.
32 keep-alive clients (raw asyncio HTTP/1.1, one real hub token per user) talk to the services
over loopback, not through configurable-http-proxy.

1. cached credentials: ``GET api/v1/aws/credentials?role=…`` (after one warm-up call per
   user) vs the bare GET. Targets: >= 1,500 req/s and ratio >= 0.5.
2. ``POST api/v1/authorize`` with a service token vs a bare POST. Same targets.
3. cold burst: 500 users at once, each their first credentials request (one audit record and
   one STS AssumeRole each). Target: none lost (500 x 200, 500 distinct sessions).
Rounds alternate the pair, each figure is the median with min..max over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fort_hub import scopes
from fort_hub.services.base import FortHandler
from tests.hubproc import RunningHub, free_port, wait_http

N_USERS = 500
N_ROLES = 3


# ----- the services, with a bare handler each (run as hub-managed processes) ---------------------


class BareHandler(FortHandler):
    async def get(self):
        self.write_json({"ok": True})

    async def post(self):
        self.json_body()
        self.write_json({"ok": True})


def serve(which: str, argv: list[str]) -> None:
    if which == "credentials":
        from fort_hub.services.credentials import CredentialsService as Base
    else:
        from fort_hub.services.groups import GroupsService as Base

    class Bench(Base):
        def handlers(self):
            return [*super().handlers(), ("bench/bare", BareHandler)]

    Bench.launch_instance(argv)


# ----- load generation --------------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return status, body


def _request(method: str, host: str, path: str, token: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: token {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _client(port, raw: bytes, until: float, lat: list, bad: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            writer.write(raw)
            status, _ = await _read_response(reader)
            lat.append(time.perf_counter() - t0)
            if status != 200:
                bad.append(status)
    finally:
        writer.close()


async def closed_loop(port: int, raws: list[bytes], seconds: float) -> dict:
    lat: list[float] = []
    bad: list[int] = []
    t0 = time.perf_counter()
    until = t0 + seconds
    await asyncio.gather(*(_client(port, raw, until, lat, bad) for raw in raws))
    elapsed = time.perf_counter() - t0
    lat.sort()
    return {
        "rps": len(lat) / elapsed,
        "p50": 1000 * lat[len(lat) // 2],
        "p99": 1000 * lat[int(len(lat) * 0.99)],
        "errors": len(bad),
        "statuses": sorted(set(bad)),
    }


async def one_shot(port: int, raw: bytes) -> tuple[int, bytes, float]:
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    status, body = await _read_response(reader)
    writer.close()
    return status, body, time.perf_counter() - t0


# ----- setup ------------------------------------------------------------------------------------


def bench_policy(path: Path) -> None:
    users = ", ".join(f"u{i}" for i in range(N_USERS))
    groups = "\n".join(f"  - {{name: bench{r}, members: [{users}]}}" for r in range(N_ROLES))
    roles = "\n".join(
        f"    bench{r}: arn:aws:iam::123456789012:role/bench-{r}" for r in range(N_ROLES)
    )
    path.write_text(
        f"""version: 1
groups:
{groups}
datasets:
  - {{name: ds, engine: duckdb, location: {{database: x.db}}, s3_prefixes: [s3://bench-data/ds/]}}
grants:
  - {{group: bench0, datasets: [ds], actions: [query, s3:read]}}
aws:
  bucket: bench-users
  roles:
{roles}
quotas:
  defaults: {{credential_requests_per_minute: 100000000}}
"""
    )


def start(tmp: Path):
    policy = tmp / "policy.yaml"
    bench_policy(policy)
    moto_port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{moto_port}/moto-api/", timeout=60)
    env = {
        "FORT_POLICY_FILE": str(policy), "FORT_STORE_URL": f"sqlite:///{tmp / 'fort.sqlite'}",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}", "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    }  # fmt: skip
    ports = {"credentials": free_port(), "groups": free_port()}
    me = str(Path(__file__).resolve())
    services = [
        {"name": f"fort-{k}", "url": f"http://127.0.0.1:{p}",
         "command": [sys.executable, me, "--serve", k, "--log-level=WARN"], "environment": env}
        for k, p in ports.items()
    ]  # fmt: skip
    services.append({"name": "fort-query", "api_token": "bench-query-token-" + "0" * 32})
    hub = RunningHub(tmp / "hub")
    hub.extra_config = f"""
from fort_hub import scopes
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.log_level = "WARN"
c.JupyterHub.custom_scopes = scopes.CUSTOM_SCOPES
c.JupyterHub.load_roles = c.JupyterHub.load_roles + scopes.load_roles()
c.JupyterHub.services = c.JupyterHub.services + {services!r}
"""
    hub.start()
    for k, p in ports.items():
        wait_http(f"http://127.0.0.1:{p}/services/fort-{k}/bench/bare", timeout=60,
                  ok=lambda r: r.status_code == 401)  # fmt: skip
    return hub, moto, ports


def make_tokens(hub: RunningHub) -> list[str]:
    names = [f"u{i}" for i in range(N_USERS)]
    for i in range(0, len(names), 50):
        r = requests.post(hub.api("users"), json={"usernames": names[i : i + 50]},
                          headers=hub.admin_headers, timeout=120)  # fmt: skip
        assert r.status_code == 201, (r.status_code, hub.log()[-2000:])
    want = [scopes.access("fort-credentials"), scopes.access("fort-groups"),
            scopes.CREDENTIALS_AWS, scopes.GROUPS_READ]  # fmt: skip

    def token(name):
        r = requests.post(hub.api(f"users/{name}/tokens"), json={"scopes": want},
                          headers=hub.admin_headers, timeout=120)  # fmt: skip
        assert r.status_code == 201, r.text
        return r.json()["token"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(token, names))


def fmt(values: list[float], unit: str = "") -> str:
    return f"{statistics.median(values):,.1f}{unit} ({min(values):,.1f}..{max(values):,.1f})"


async def pair(label, port, real: list[bytes], bare: list[bytes], rounds, seconds) -> dict:
    await closed_loop(port, real, 1.0)  # warm-up (hub token cache, connections)
    await closed_loop(port, bare, 1.0)
    res: dict[str, list[dict]] = {"real": [], "bare": []}
    for _ in range(rounds):
        res["real"].append(await closed_loop(port, real, seconds))
        res["bare"].append(await closed_loop(port, bare, seconds))
    ratios = [r["rps"] / b["rps"] for r, b in zip(res["real"], res["bare"], strict=True)]
    errors = sum(x["errors"] for k in res for x in res[k])
    print(f"\n{label}  ({len(real)} clients, {rounds} rounds x {seconds:g}s)")
    for k in ("real", "bare"):
        rs = res[k]
        print(f"  {k:5s} req/s {fmt([x['rps'] for x in rs])}  p50 {fmt([x['p50'] for x in rs], ' ms')}"
              f"  p99 {fmt([x['p99'] for x in rs], ' ms')}")  # fmt: skip
    print(f"  ratio real/bare {fmt(ratios)}   non-200 answers: {errors}")
    return {"res": res, "ratios": ratios, "errors": errors}


async def cold_burst(port: int, tokens: list[str], role: str) -> dict:
    path = f"/services/fort-credentials/api/v1/aws/credentials?role={role}"
    host = f"127.0.0.1:{port}"
    t0 = time.perf_counter()
    out = await asyncio.gather(
        *(one_shot(port, _request("GET", host, path, t)) for t in tokens), return_exceptions=True
    )
    wall = time.perf_counter() - t0
    ok = [o for o in out if not isinstance(o, BaseException) and o[0] == 200]
    keys = {json.loads(o[1])["AccessKeyId"] for o in ok}
    lat = sorted(o[2] for o in ok) or [0.0]
    return {"ok": len(ok), "distinct": len(keys), "wall": wall, "p50": 1000 * lat[len(lat) // 2],
            "p99": 1000 * lat[int(len(lat) * 0.99)], "lost": len(tokens) - len(ok)}  # fmt: skip


async def run(args, hub, ports, tokens) -> None:
    cport, gport = ports["credentials"], ports["groups"]
    chost, ghost = f"127.0.0.1:{cport}", f"127.0.0.1:{gport}"
    users = tokens[: args.clients]
    role = "bench-0"
    # cold burst first (every user's first request), one role per round
    print(f"cold burst: {N_USERS} users at once, each one STS AssumeRole (moto)")
    bursts = []
    for r in range(N_ROLES):
        b = await cold_burst(cport, tokens, f"bench-{r}")
        bursts.append(b)
        print(f"  round {r}: {b['ok']} x 200, {b['distinct']} distinct sessions, lost {b['lost']}, "
              f"wall {b['wall']:.2f}s, p50 {b['p50']:.0f} ms, p99 {b['p99']:.0f} ms")  # fmt: skip
    cpath = f"/services/fort-credentials/api/v1/aws/credentials?role={role}"
    real = [_request("GET", chost, cpath, t) for t in users]
    bare = [_request("GET", chost, "/services/fort-credentials/bench/bare", t) for t in users]
    await pair("cached credentials", cport, real, bare, args.rounds, args.seconds)
    qtok = "bench-query-token-" + "0" * 32
    body = [json.dumps({"user": f"u{i}", "action": "query", "resource": "ds"}).encode()
            for i in range(args.clients)]  # fmt: skip
    real = [
        _request("POST", ghost, "/services/fort-groups/api/v1/authorize", qtok, b) for b in body
    ]
    bare = [_request("POST", ghost, "/services/fort-groups/bench/bare", qtok, b) for b in body]
    await pair("authorize", gport, real, bare, args.rounds, args.seconds)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--clients", type=int, default=32)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        hub, moto, ports = start(tmp)
        try:
            tokens = make_tokens(hub)
            print(f"setup: hub, 2 services, moto, {N_USERS} users and tokens in "
                  f"{time.perf_counter() - t0:.0f}s  (cpu count {os.cpu_count()})")  # fmt: skip
            asyncio.run(run(args, hub, ports, tokens))
        finally:
            hub.stop()
            moto.terminate()
            moto.wait(10)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(main())
