"""fort-query throughput and latency, side by side in one run on the same Parquet file.

    .venv/bin/python benchmarks/bench_query.py [--rows 10000000] [--rounds 3]

(1) in-process DuckDB ``.to_arrow_table()`` (DuckDB 2.0's name for fetch_arrow_table),
(2) through fort-query as an Arrow IPC stream the way ``FortClient.query`` did before #13
    (submit, long-poll, download, parse), (2f) ``FortClient.query`` now (#13): one waiting
    submit whose answer is the result, streamed while the query runs, (3) through fort-query as 1,000-row JSON pages (the shape of Athena's
    GetQueryResults), time-bounded and extrapolated to all pages, (2s) submit and download at
    once with ``results(follow=True)``, the stream following the query while it still runs,
    and the added latency of a
    1-row query through fort-query (p50 over repeated runs).
Each is measured twice where the engine matters, side by side: with fort-query's DuckDB
engine (queries in isolated worker processes, issue #10) and with the engine as it was before
(queries on a thread of the service process; :class:`InThreadDuckDBEngine` below, kept here
for the comparison only): (2t) and the in-thread 1-row latency.
fort-query runs in its own process (one per engine) on its own thread and event loop, reached
over loopback HTTP (no configurable-http-proxy in between); tokens are checked by a stand-in
hub API. ``--latency-only`` measures the 1-row latency alone; with ``--rows 1000`` as well, over
a table whose in-process scan takes about 2 ms (on the default 10 M-row table the in-process
query reads a 1 M-row row group: 16-18 ms p50 with a 20 ms p5..p95 spread, most of the added
latency's spread).
Targets: (2f) >= 0.6 x (1) throughput; (2) >= 20 x faster than (3); added latency of a 1-row
``FortClient.query`` <= 10 ms p50 (#13; the old path's next to it).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from concurrent.futures import ThreadPoolExecutor

from fort_hub.client import FortClient
from fort_hub.services.query.engines.base import Outcome
from fort_hub.services.query.engines.duckdb import DuckDBEngine
from fort_hub.services.query.engines.worker import HardenedDatabases
from tests.conftest import EXAMPLE_POLICY
from tests.query_support import QueryEnv, make_datasets


class InThreadDuckDBEngine(DuckDBEngine):
    """fort-query's DuckDB engine before issue #10, for this comparison only: each query runs
    on a hardened cursor in a thread of the service process (no worker process, no limits
    beyond DuckDB's own; cancel is not needed here). ``idle_workers = 0``: no worker starts."""

    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "idle_workers": 0})
        self.dbs = HardenedDatabases(self.memory_limit, self.threads, self.base_max_age)
        self.pool = ThreadPoolExecutor(self.max_running)

    def run_here(self, job, sink):
        d = job.dataset
        con = self.dbs.cursor(d.name, list(d.tables), dict(d.location))
        try:
            reader = con.sql(job.sql).to_arrow_reader(self.batch_rows)
            sink.set_schema(reader.schema)
            for batch in reader:
                sink.write(batch)
            return Outcome(rows=sink.rows)
        finally:
            con.close()

    async def run(self, job, sink):
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.run_here, job, sink)


def med(xs):
    return statistics.median(xs), min(xs), max(xs)


def serve(tmp: Path, engine: str) -> None:
    """The fort-query service in its own process (as in a deployment: not the client's)."""
    policy = EXAMPLE_POLICY.read_text().replace(
        "max_result_rows: 1000000", "max_result_rows: 100000000"
    )
    settings = {
        "DuckDBEngine__batch_rows": 1_000_000, "QueryService__max_result_bytes": 8 * 1024**3,
        "QueryService__results_dir": str(tmp / f"results-{engine}"),
    }  # fmt: skip
    if engine == "thread":
        settings["QueryService__duckdb_engine_class"] = "__main__.InThreadDuckDBEngine"
    env = QueryEnv(tmp, f"sqlite:///{tmp / f'fort-{engine}.sqlite'}", policy, False, **settings)
    env.start()
    print(env.base, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    env.stop()


def start_server(tmp: Path, engine: str):
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(tmp), engine], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    base = server.stdout.readline().strip()
    if not base.startswith("http"):
        raise SystemExit(f"the fort-query server ({engine}) did not start: {base!r}")
    return server, FortClient(url=base.removesuffix("api/v1/"), token="alice-token")


def make_table(tmp: Path, n: int) -> Path:
    """The sample datasets, url_shares replaced by an *n*-row table (same name, 4 columns)."""
    make_datasets(tmp)
    rng = np.random.default_rng(1)
    path = tmp / "data" / "url_shares.parquet"
    pq.write_table(
        pa.table({
            "id": np.arange(n, dtype=np.int64), "shares": rng.integers(0, 1000, n),
            "views": rng.random(n), "country": rng.integers(0, 250, n).astype(np.int32),
        }),
        path,
    )  # fmt: skip
    return path


def line(label: str, xs: list[float], n: int) -> None:
    m, lo, hi = med(xs)
    print(f"{label}: median {m:.2f}s (min {lo:.2f}, max {hi:.2f}) = {n / m / 1e6:.1f} Mrows/s")


def ratio_line(label: str, xs: list[float], ys: list[float], target: str = "") -> None:
    r = sorted(x / y for x, y in zip(xs, ys, strict=True))
    print(f"ratio {label} throughput per round: median {statistics.median(r):.2f} "
          f"(min {r[0]:.2f}, max {r[-1]:.2f}){target}")  # fmt: skip


def throughput(a, tmp: Path, path: Path, fort: FortClient, fort_thread: FortClient) -> None:
    """(1), (2), (2t), (2s) in rotated rounds, then (3) time-bounded."""
    n, sql = a.rows, "SELECT * FROM url_shares"
    times = {k: [] for k in ("1", "2", "2t", "2s", "2f")}
    big_phases = []

    def drop_results():
        # each 320 MB result would stay for result_ttl; removed after use so that every
        # round starts with the same page cache and disk (not the dirty pages of the last)
        for f in tmp.glob("results-*/*.arrows*"):
            f.unlink()

    def in_process():
        t = time.perf_counter()
        con = duckdb.connect()
        tbl = con.sql(f"SELECT * FROM read_parquet('{path}')").to_arrow_table()
        times["1"].append(time.perf_counter() - t)
        assert tbl.num_rows == n
        con.close()

    def proxied(client, key):
        t = time.perf_counter()
        qid = client.submit(sql, "url_shares")
        client.wait(qid, progress=False)
        t1 = time.perf_counter()
        got = client.results(qid)
        times[key].append(time.perf_counter() - t)
        if key == "2":
            big_phases.append((t1 - t, time.perf_counter() - t1))
        assert got.num_rows == n and got.num_columns == 4
        drop_results()

    def followed():
        # submit, then download at once with ?follow=true (the stream follows the query)
        t = time.perf_counter()
        got = fort.results(fort.submit(sql, "url_shares"), follow=True)
        times["2s"].append(time.perf_counter() - t)
        assert got.num_rows == n and got.num_columns == 4
        drop_results()

    def fast():
        # FortClient.query now: one waiting submit, the result streamed in its answer
        t = time.perf_counter()
        got = fort.query(sql, "url_shares", progress=False)
        times["2f"].append(time.perf_counter() - t)
        assert got.num_rows == n and got.num_columns == 4
        drop_results()

    steps = [in_process, lambda: proxied(fort, "2"), lambda: proxied(fort_thread, "2t"), followed,
             fast]  # fmt: skip
    for r in range(a.rounds):  # rotate which goes first
        k = r % len(steps)
        for step in steps[k:] + steps[:k]:
            step()
    # (3) JSON pages of 1,000 rows from one stored result, for --json-seconds
    qid = fort.submit(sql, "url_shares")
    fort.wait(qid, progress=False)
    sess, url = fort.session, f"{fort.api}queries/{qid}/results"
    pages, rows, token = 0, 0, None
    t = time.perf_counter()
    while time.perf_counter() - t < a.json_seconds:
        params = {"max_rows": 1000, **({"page_token": token} if token else {})}
        page = sess.get(url, params=params, timeout=60).json()
        pages, rows, token = pages + 1, rows + len(page["rows"]), page["next_page_token"]
        if token is None:
            break
    json_elapsed = time.perf_counter() - t
    json_total = json_elapsed * (n / rows)
    print(f"rows={n:,} columns=4 (~{n * 4 * 8 / 1e6:.0f} MB), rounds={a.rounds}")
    line("(1) in-process DuckDB to_arrow_table ", times["1"], n)
    line("(2) old path: submit, poll, download  ", times["2"], n)
    line("(2f) FortClient.query: waiting submit ", times["2f"], n)
    line("(2t) the same, in-thread engine       ", times["2t"], n)
    print(
        f"(3) fort-query JSON 1,000-row pages: {pages} pages / {rows:,} rows in {json_elapsed:.1f}s -> "
        f"{json_total:.0f}s for all rows (extrapolated) = {rows / json_elapsed / 1e6:.3f} Mrows/s"
    )
    line("(2s) followed download                ", times["2s"], n)
    ex, dl = (statistics.median(x) for x in zip(*big_phases, strict=True))
    print(f"  (2) phases median: run + store {ex:.2f}s, download + parse {dl:.2f}s")
    ratio_line("(2)/(1)", times["1"], times["2"])
    ratio_line("(2f)/(1)", times["1"], times["2f"], "  (target >= 0.6)")
    ratio_line("(2t)/(1)", times["1"], times["2t"])
    ratio_line("(2s)/(1)", times["1"], times["2s"])
    print(f"ratio (3)/(2) time      : {json_total / med(times['2'])[0]:.0f}x  (target >= 20)")


def latency(a, path: Path, fort: FortClient, fort_thread: FortClient) -> None:
    """1-row latency: fort-query end to end (submit, long-poll, Arrow download) with each
    engine, next to the same query in-process on an open connection (the strict baseline);
    the three interleaved in every run, the engines' order alternating."""
    one_sql = "SELECT * FROM url_shares LIMIT 1"
    direct, proxy, phases = [], {"workers": [], "thread": [], "query()": []}, []
    con = duckdb.connect()
    one_direct = f"SELECT * FROM read_parquet('{path}') LIMIT 1"
    clients = [("workers", fort), ("thread", fort_thread)]
    for client in (fort, fort_thread):  # warm: the datasets' hardened databases are built
        for _ in range(3):
            assert client.results(client.submit(one_sql, "url_shares"), follow=True).num_rows == 1
    for i in range(a.latency_runs):
        t = time.perf_counter()
        con.sql(one_direct).to_arrow_table()
        direct.append(time.perf_counter() - t)
        order = clients[i % 2 :] + clients[: i % 2]
        for name, client in order[:1] + [("query()", fort)] + order[1:]:
            t = time.perf_counter()
            if name == "query()":  # FortClient.query now: one waiting submit (#13)
                assert client.query(one_sql, "url_shares", progress=False).num_rows == 1
                proxy[name].append(time.perf_counter() - t)
                continue
            qid = client.submit(one_sql, "url_shares")
            t1 = time.perf_counter()
            client.wait(qid, progress=False)
            t2 = time.perf_counter()
            assert client.results(qid).num_rows == 1
            t3 = time.perf_counter()
            proxy[name].append(t3 - t)
            if name == "workers":
                phases.append((t1 - t, t2 - t1, t3 - t2))
    ms = 1e3
    print(
        f"1-row query, {a.latency_runs} runs; in-process p50 {statistics.median(direct) * ms:.1f} ms"
    )
    labels = {"workers": "old path, workers", "thread": "old path, in-thread",
              "query()": "FortClient.query"}  # fmt: skip
    for name, xs in proxy.items():
        added = [px - d for px, d in zip(xs, direct, strict=True)]
        q = statistics.quantiles(added, n=20)
        print(
            f"  {labels[name]:19}: p50 {statistics.median(xs) * ms:.1f} ms, added p50 "
            f"{statistics.median(added) * ms:.1f} ms (p5 {q[0] * ms:.1f}, p95 {q[-1] * ms:.1f})"
            + ("  (target <= 10 ms)" if name == "query()" else "")
        )
    diff = sorted(f - o for f, o in zip(proxy["query()"], proxy["workers"], strict=True))
    q = statistics.quantiles(diff, n=20)
    print(f"  FortClient.query - old path, per run: p50 {statistics.median(diff) * ms:+.1f} ms "
          f"(p5 {q[0] * ms:+.1f}, p95 {q[-1] * ms:+.1f})")  # fmt: skip
    diff = sorted(w - t for w, t in zip(proxy["workers"], proxy["thread"], strict=True))
    q = statistics.quantiles(diff, n=20)
    print(f"  workers - thread, per run: p50 {statistics.median(diff) * ms:+.1f} ms "
          f"(p5 {q[0] * ms:+.1f}, p95 {q[-1] * ms:+.1f})")  # fmt: skip
    sub, wt, res = (statistics.median(x) * ms for x in zip(*phases, strict=True))
    print(f"  workers phases p50: submit {sub:.1f} ms, wait {wt:.1f} ms, results {res:.1f} ms")


def engine_latency(a, tmp: Path, path: Path) -> None:
    """The engines alone, in this process (no HTTP, no fort store): ``engine.run`` into a
    result file, of the 1-row query and of ``SELECT 1`` (no file read: the process hop alone),
    the two engines interleaved, their order alternating."""
    from fort_hub.policy.model import Dataset
    from fort_hub.services.query.engines.base import EngineJob
    from fort_hub.services.query.results import FileSink

    ds = Dataset("url_shares", "duckdb", tables=("url_shares",),
                 location={"paths": {"url_shares": str(path)}})  # fmt: skip
    engines = [("workers", DuckDBEngine()), ("thread", InThreadDuckDBEngine())]

    async def once(engine, sql, i):
        sink = FileSink(str(tmp / f"e{i}.arrows"), 10, 10**9)
        t = time.perf_counter()
        await engine.run(EngineJob(id=f"e{i}", sql=sql, dataset=ds, username="alice"), sink)
        sink.commit()
        return time.perf_counter() - t

    async def go(sql):
        times = {name: [] for name, _ in engines}
        for i in range(-3, a.latency_runs):  # 3 warm-up runs each
            for name, engine in engines[i % 2 :] + engines[: i % 2]:
                took = await once(engine, sql, i)
                if i >= 0:
                    times[name].append(took)
        return times

    try:
        for sql in ('SELECT * FROM "url_shares"."url_shares" LIMIT 1', "SELECT 1 AS x"):
            report_engines(f"engine.run of {sql!r} alone, {a.latency_runs} runs each:",
                           asyncio.run(go(sql)))  # fmt: skip
    finally:
        for _, engine in engines:
            engine.close()


def report_engines(title: str, times: dict[str, list[float]]) -> None:
    ms = 1e3
    print(title)
    for name, xs in times.items():
        q = statistics.quantiles(xs, n=20)
        print(f"  {name:8}: p50 {statistics.median(xs) * ms:.2f} ms "
              f"(p5 {q[0] * ms:.2f}, p95 {q[-1] * ms:.2f})")  # fmt: skip
    diff = [w - t for w, t in zip(times["workers"], times["thread"], strict=True)]
    q = statistics.quantiles(diff, n=20)
    print(f"  workers - thread, per run: p50 {statistics.median(diff) * ms:+.2f} ms "
          f"(p5 {q[0] * ms:+.2f}, p95 {q[-1] * ms:+.2f})")  # fmt: skip


def main(argv=None):
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        return serve(Path(sys.argv[2]), sys.argv[3])
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json-seconds", type=float, default=6.0)
    p.add_argument("--latency-runs", type=int, default=60)
    p.add_argument("--latency-only", action="store_true", help="only the 1-row latency")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-query-"))
    path = make_table(tmp, a.rows)
    (server, fort), (server_thread, fort_thread) = (
        start_server(tmp, "workers"),
        start_server(tmp, "thread"),
    )
    try:
        if not a.latency_only:
            throughput(a, tmp, path, fort, fort_thread)
        latency(a, path, fort, fort_thread)
        engine_latency(a, tmp, path)
    finally:
        for s in (server, server_thread):
            s.stdin.close()
            s.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
