"""Durable audit records per second on SQLite and PostgreSQL.

Every figure counts records for which ``store.audit.record()`` returned, i.e. that were
committed durably (SQLite WAL with synchronous=FULL; PostgreSQL with the server's
synchronous_commit, ``on`` here). Scenarios, each over several rounds (median and spread):

- ``1 writer, sequential``: one thread calling record() in a loop (one commit per record);
- ``1 process, 16 threads``: 16 threads of one process calling record() at once; the
  in-process group commit appends whatever is queued in one transaction;
- ``4 processes, sequential``: four writer processes, each one thread, one shared chain.

Afterwards the chain is verified. It also measures this machine's fdatasync latency, the floor
under any durable commit. Target: >= 1,000 records/s for one writer on both databases.

    .venv/bin/python benchmarks/bench_audit.py [--records 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fort_hub.store import Store

TARGET = 1_000
PG_URL = os.environ.get("FORT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

WRITER = """
import os, sys, time
from fort_hub.store import Store
url, n, go, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
store = Store(url, create=False)
store.audit.record(name, "bench.warmup", "-")
while not os.path.exists(go):
    time.sleep(0.002)
for i in range(n):
    store.audit.record(name, "bench.write", str(i), "allow", "benchmark", {"i": i})
store.dispose()
"""


def fdatasync_latency(directory: str, n: int = 300) -> tuple[float, float, float]:
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    lat = []
    try:
        for i in range(n):
            os.pwrite(fd, b"x" * 4096, (i % 8) * 4096)
            start = time.perf_counter()
            os.fdatasync(fd)
            lat.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    return statistics.median(lat), lat[int(n * 0.05)], lat[int(n * 0.95)]


def sequential(store: Store, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        store.audit.record("alice", "bench.write", str(i), "allow", "benchmark", {"i": i})
    return n / (time.perf_counter() - start)


def first_implementation(store: Store, n: int) -> float:
    """The first implementation's per-record path, for a side-by-side ratio: SQLAlchemy Core,
    one transaction of lock + read head + insert + update head per record."""
    import json
    import uuid

    from sqlalchemy import select

    from fort_hub.store import compute_hash, isoformat, schema, utcnow
    from fort_hub.store.audit import AUDIT_LOCK_KEY

    start = time.perf_counter()
    for i in range(n):
        fields = {
            "ts": isoformat(utcnow()), "actor": "alice", "action": "bench.write",
            "resource": str(i), "decision": "allow", "reason": "benchmark",
            "details": {"i": i}, "request_id": uuid.uuid4().hex, "client": "",
        }  # fmt: skip
        with store.transaction() as conn:
            store.lock_exclusive(conn, AUDIT_LOCK_KEY)
            head = conn.execute(
                select(schema.audit_head.c.seq, schema.audit_head.c.hash).where(
                    schema.audit_head.c.id == 1
                )
            ).first()
            seq, prev = head[0] + 1, head[1]
            full = {"seq": seq, **fields, "prev_hash": prev}
            digest = compute_hash(full)
            row = {**full, "details": json.dumps(fields["details"], sort_keys=True), "hash": digest}
            conn.execute(schema.audit_log.insert().values(**row))
            conn.execute(
                schema.audit_head.update()
                .where(schema.audit_head.c.id == 1)
                .values(seq=seq, hash=digest)
            )
    return n / (time.perf_counter() - start)


def threaded(store: Store, n: int, threads: int = 16) -> float:
    per = n // threads
    barrier = threading.Barrier(threads + 1)

    def work(t):
        barrier.wait()
        for i in range(per):
            store.audit.record(f"user{t}", "bench.write", str(i), "allow", "benchmark", {"i": i})

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    barrier.wait()
    start = time.perf_counter()
    for th in pool:
        th.join()
    return per * threads / (time.perf_counter() - start)


def processes(url: str, n: int, workdir: str, count: int = 4) -> float:
    per = n // count
    go = Path(workdir) / f"go-{secrets.token_hex(4)}"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, str(per), str(go), f"w{p}"])
        for p in range(count)
    ]
    try:
        time.sleep(2.0)  # imports, connections, warm-up records
        start = time.perf_counter()
        go.touch()
        codes = [p.wait(timeout=600) for p in procs]
        elapsed = time.perf_counter() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if codes != [0] * count:
        raise SystemExit(f"a writer process failed: {codes}")
    return per * count / elapsed


def summary(label: str, rates: list[float], target: float | None = None) -> str:
    med = statistics.median(rates)
    line = f"  {label:<26} median {med:8,.0f}/s  (min {min(rates):,.0f}, max {max(rates):,.0f}, n={len(rates)})"
    if target:
        line += f"  {med / target:.2f}x target"
    return line


def run_backend(name: str, url: str, workdir: str, args) -> None:
    store = Store(url)
    store.audit.record("bench", "bench.warmup", "-")
    seq, first = [], []
    for _ in range(args.rounds):  # alternate, so both see the same machine
        seq.append(sequential(store, args.records))
        first.append(first_implementation(store, args.records))
    thr = [threaded(store, args.records * 2) for _ in range(args.rounds)]
    procs = [processes(url, args.records * 2, workdir) for _ in range(max(1, args.rounds - 1))]
    print(f"{name}:")
    print(summary("1 writer, sequential", seq, TARGET))
    print(summary("  first implementation", first, TARGET))
    ratios = [a / b for a, b in zip(seq, first, strict=True)]
    print(f"  {'  ratio now / first':<26} median {statistics.median(ratios):8.2f}x  "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")  # fmt: skip
    print(summary("1 process, 16 threads", thr, TARGET))
    print(summary("4 processes, sequential", procs))
    start = time.perf_counter()
    result = store.audit.verify()
    print(f"  verify: {result} in {time.perf_counter() - start:.1f}s")
    store.dispose()
    if not result.ok:
        raise SystemExit(1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1000, help="records per round and scenario")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-postgres", action="store_true")
    args = ap.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="fort-bench-") as tmp:
        med, p5, p95 = fdatasync_latency(tmp)
        print(f"fdatasync latency (4 KiB, {tmp}): median {med * 1e3:.3f} ms (p5 {p5 * 1e3:.3f}, "
              f"p95 {p95 * 1e3:.3f}) -> at most ~{1 / med:,.0f} dependent durable commits/s")  # fmt: skip
        run_backend("SQLite (WAL, synchronous=FULL)", f"sqlite:///{tmp}/audit.sqlite", tmp, args)
        if args.skip_postgres:
            return 0
        import psycopg

        schema = "bench_" + secrets.token_hex(4)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
            sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
        try:
            url = f"{PG_URL}?options=-csearch_path%3D{schema}"
            run_backend(f"PostgreSQL (synchronous_commit={sync})", url, tmp, args)
        finally:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
