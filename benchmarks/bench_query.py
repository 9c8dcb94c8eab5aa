"""fort-query throughput and latency, side by side in one run on the same Parquet file.

    .venv/bin/python benchmarks/bench_query.py [--rows 10000000] [--rounds 3]

(1) in-process DuckDB ``.to_arrow_table()`` (DuckDB 2.0's name for fetch_arrow_table),
(2) through fort-query as an Arrow IPC stream (submit, long-poll, download, parse; the
    FortClient path), (3) through fort-query as 1,000-row JSON pages (the shape of Athena's
    GetQueryResults), time-bounded and extrapolated to all pages, (2s) submit and download at
    once with ``results(follow=True)``, the stream following the query while it still runs,
    and the added latency of a
    1-row query through fort-query (p50 over repeated runs).
The service runs in this process on its own thread and event loop, reached over loopback
HTTP (no configurable-http-proxy in between); tokens are checked by a stand-in hub API.
Targets: (2) >= 0.5 x (1) throughput; (2) >= 20 x faster than (3); added latency <= 15 ms p50.
"""

from __future__ import annotations

import argparse
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

from fort_hub.client import FortClient
from tests.conftest import EXAMPLE_POLICY
from tests.query_support import QueryEnv, make_datasets


def med(xs):
    return statistics.median(xs), min(xs), max(xs)


def serve(tmp: Path) -> None:
    """The fort-query service in its own process (as in a deployment: not the client's)."""
    policy = EXAMPLE_POLICY.read_text().replace(
        "max_result_rows: 1000000", "max_result_rows: 100000000"
    )
    env = QueryEnv(tmp, f"sqlite:///{tmp / 'fort.sqlite'}", policy, False, DuckDBEngine__batch_rows=1_000_000,
                   QueryService__max_result_bytes=8 * 1024**3)  # fmt: skip
    env.start()
    print(env.base, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    env.stop()


def main(argv=None):
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        return serve(Path(sys.argv[2]))
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json-seconds", type=float, default=6.0)
    p.add_argument("--latency-runs", type=int, default=60)
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-query-"))
    make_datasets(tmp)
    # the benchmark table replaces the sample url_shares file (same name, 4 columns)
    rng = np.random.default_rng(1)
    n = a.rows
    path = tmp / "data" / "url_shares.parquet"
    pq.write_table(
        pa.table({
            "id": np.arange(n, dtype=np.int64), "shares": rng.integers(0, 1000, n),
            "views": rng.random(n), "country": rng.integers(0, 250, n).astype(np.int32),
        }),
        path,
    )  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(tmp)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    base = server.stdout.readline().strip()
    if not base.startswith("http"):
        raise SystemExit(f"the fort-query server did not start: {base!r}")
    fort = FortClient(url=base.removesuffix("api/v1/"), token="alice-token")
    sql = "SELECT * FROM url_shares"
    try:
        inproc, proxied, big_phases = [], [], []

        def drop_results():
            # each 320 MB result would stay for result_ttl; removed after use so that every
            # round starts with the same page cache and disk (not the dirty pages of the last)
            for f in (tmp / "results").glob("*.arrows*"):
                f.unlink()

        def in_process():
            t = time.perf_counter()
            con = duckdb.connect()
            tbl = con.sql(f"SELECT * FROM read_parquet('{path}')").to_arrow_table()
            inproc.append(time.perf_counter() - t)
            assert tbl.num_rows == n
            con.close()

        def through_proxy():
            t = time.perf_counter()
            qid = fort.submit(sql, "url_shares")
            fort.wait(qid, progress=False)
            t1 = time.perf_counter()
            got = fort.results(qid)
            proxied.append(time.perf_counter() - t)
            big_phases.append((t1 - t, time.perf_counter() - t1))
            assert got.num_rows == n and got.num_columns == 4
            drop_results()

        followed = []

        def through_proxy_streamed():
            # submit, then download at once with ?follow=true (the stream follows the query)
            t = time.perf_counter()
            got = fort.results(fort.submit(sql, "url_shares"), follow=True)
            followed.append(time.perf_counter() - t)
            assert got.num_rows == n and got.num_columns == 4
            drop_results()

        steps = [in_process, through_proxy, through_proxy_streamed]
        for r in range(a.rounds):  # rotate which goes first
            for step in steps[r % 3 :] + steps[: r % 3]:
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
        # 1-row latency: fort-query end to end (submit, long-poll, Arrow download) vs the same
        # query in-process on an open connection (the strict baseline)
        one_sql = "SELECT * FROM url_shares LIMIT 1"
        direct, proxy, phases = [], [], []
        con = duckdb.connect()
        one_direct = f"SELECT * FROM read_parquet('{path}') LIMIT 1"
        for _ in range(a.latency_runs):
            t = time.perf_counter()
            con.sql(one_direct).to_arrow_table()
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            qid = fort.submit(one_sql, "url_shares")
            t1 = time.perf_counter()
            fort.wait(qid, progress=False)
            t2 = time.perf_counter()
            assert fort.results(qid).num_rows == 1
            t3 = time.perf_counter()
            proxy.append(t3 - t)
            phases.append((t1 - t, t2 - t1, t3 - t2))
    finally:
        server.stdin.close()
        server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    mb = n * 4 * 8 / 1e6  # ~uncompressed size (3x8B + 4B, rounded up)
    i, p_ = med(inproc), med(proxied)
    print(f"rows={n:,} columns=4 (~{mb:.0f} MB), rounds={a.rounds}")
    print(
        f"(1) in-process DuckDB to_arrow_table: median {i[0]:.2f}s (min {i[1]:.2f}, max {i[2]:.2f}) = {n / i[0] / 1e6:.1f} Mrows/s"
    )
    print(
        f"(2) fort-query Arrow stream        : median {p_[0]:.2f}s (min {p_[1]:.2f}, max {p_[2]:.2f}) = {n / p_[0] / 1e6:.1f} Mrows/s"
    )
    print(
        f"(3) fort-query JSON 1,000-row pages: {pages} pages / {rows:,} rows in {json_elapsed:.1f}s -> "
        f"{json_total:.0f}s for all rows (extrapolated) = {rows / json_elapsed / 1e6:.3f} Mrows/s"
    )
    f_ = med(followed)
    print(
        f"(2s) followed download            : median {f_[0]:.2f}s (min {f_[1]:.2f}, max {f_[2]:.2f}) = {n / f_[0] / 1e6:.1f} Mrows/s"
    )
    ex, dl = (statistics.median(x) for x in zip(*big_phases, strict=True))
    print(f"  (2) phases median: run + store {ex:.2f}s, download + parse {dl:.2f}s")
    ratios = sorted(x / y for x, y in zip(inproc, proxied, strict=True))
    print(
        f"ratio (2)/(1) throughput per round: median {statistics.median(ratios):.2f} "
        f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f})  (target >= 0.5)"
    )
    ratios_s = sorted(x / y for x, y in zip(inproc, followed, strict=True))
    print(
        f"ratio (2s)/(1) throughput per round: median {statistics.median(ratios_s):.2f} "
        f"(min {ratios_s[0]:.2f}, max {ratios_s[-1]:.2f})"
    )
    print(f"ratio (3)/(2) time      : {json_total / p_[0]:.0f}x  (target >= 20)")
    added = [px - d for px, d in zip(proxy, direct, strict=True)]
    q = statistics.quantiles(added, n=20)
    print(
        f"1-row query: proxy p50 {statistics.median(proxy) * 1e3:.1f} ms, in-process p50 "
        f"{statistics.median(direct) * 1e3:.1f} ms, added p50 {statistics.median(added) * 1e3:.1f} ms "
        f"(p5 {q[0] * 1e3:.1f}, p95 {q[-1] * 1e3:.1f}) (target <= 15 ms)"
    )
    sub, wt, res = (statistics.median(x) * 1e3 for x in zip(*phases, strict=True))
    print(f"  proxy phases p50: submit {sub:.1f} ms, wait {wt:.1f} ms, results {res:.1f} ms")


if __name__ == "__main__":
    main()
