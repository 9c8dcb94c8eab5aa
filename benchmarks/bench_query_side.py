"""Large results of two versions of fort-query side by side: wall time and CPU seconds.

    git archive <commit> | tar -x -C /tmp/before
    .venv/bin/python benchmarks/bench_query_side.py --before /tmp/before --after . [--rounds 5]

Starts one fort-query server from each source tree (``benchmarks/bench_query.py --serve``, the
same settings: SQLite store, ``batch_rows`` 1 M), then per round, the order rotated, fetches the
10 M-row table of bench_query.py (1) in process with DuckDB, (A) with ``FortClient.query`` from
the *before* server, (B) from the *after* server. Reports the wall time, the ratio to (1) per
round, and the CPU seconds per query of the client (this process), the service and its worker
processes (``/proc/<pid>/stat``, children of the service), which separate the versions better
than the wall time on a loaded machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_query import make_table
from fort_hub.client import FortClient

TICK = os.sysconf("SC_CLK_TCK")
SQL = "SELECT * FROM url_shares"


def start(code: Path, folder: Path):
    folder.mkdir()
    (folder / "data").symlink_to(folder.parent / "data")
    server = subprocess.Popen(
        [sys.executable, str(code / "benchmarks" / "bench_query.py"), "--serve", str(folder),
         "workers"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, env={**os.environ, "PYTHONPATH": str(code)}, cwd=code,
    )  # fmt: skip
    base = server.stdout.readline().strip()
    if not base.startswith("http"):
        raise SystemExit(f"the fort-query server of {code} did not start: {base!r}")
    return server, FortClient(url=base.removesuffix("api/v1/"), token="alice-token"), folder


def cpu_of(pid: int) -> tuple[float, float]:
    """CPU seconds used so far by the service *pid* and by its children (the workers)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    out = [0.0, 0.0]
    for i, p in enumerate([pid, *map(int, children.stdout.split())]):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a worker that ended meanwhile
            continue
        out[min(i, 1)] += (int(fields[11]) + int(fields[12])) / TICK
    return out[0], out[1]


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}..{max(xs):.3f})"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--before", type=Path, required=True)
    p.add_argument("--after", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rows", type=int, default=10_000_000)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-side-"))
    path = make_table(tmp, a.rows)
    servers = {"A": start(a.before.resolve(), tmp / "A"), "B": start(a.after.resolve(), tmp / "B")}
    wall: dict[str, list[float]] = {k: [] for k in "1AB"}
    cpu: dict[str, list[tuple[float, float, float]]] = {k: [] for k in "AB"}
    try:
        for _, fort, _ in servers.values():  # warm: the dataset's database in the worker
            fort.query(SQL + " LIMIT 1", "url_shares", progress=False)
        for r in range(a.rounds):
            order = ["1", "A", "B"][r % 3 :] + ["1", "A", "B"][: r % 3]
            for k in order:
                t, own = time.perf_counter(), own_cpu()
                if k == "1":
                    con = duckdb.connect()
                    got = con.sql(f"SELECT * FROM read_parquet('{path}')").to_arrow_table()
                    wall[k].append(time.perf_counter() - t)
                    con.close()
                else:
                    server, fort, folder = servers[k]
                    service, workers = cpu_of(server.pid)
                    got = fort.query(SQL, "url_shares", progress=False)
                    wall[k].append(time.perf_counter() - t)
                    time.sleep(0.3)  # the final state and records after the stream's end
                    s2, w2 = cpu_of(server.pid)
                    cpu[k].append((own_cpu() - own, s2 - service, w2 - workers))
                    for f in folder.glob("results-*/*.arrows*"):
                        f.unlink()
                assert got.num_rows == a.rows
                del got
        print(f"rows={a.rows:,}, rounds={a.rounds}, load {os.getloadavg()}")
        print(f"(1) in-process: {spread(wall['1'])} s")
        for k, name in (("A", "before"), ("B", "after")):
            ratios = [x / y for x, y in zip(wall["1"], wall[k], strict=True)]
            c, s, w = (statistics.median(x) for x in zip(*cpu[k], strict=True))
            print(f"({k}) {name}: {spread(wall[k])} s, ratio to (1) per round {spread(ratios)}; "
                  f"CPU s: client {c:.2f}, service {s:.2f}, workers {w:.2f}")  # fmt: skip
        print("per round:", {k: [round(x, 2) for x in v] for k, v in wall.items()})
    finally:
        for server, _, _ in servers.values():
            server.stdin.close()
            server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
