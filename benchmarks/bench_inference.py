"""fort_hub.inference on 10 million url_shares-shaped rows, three ways, side by side in one run.

    .venv/bin/python benchmarks/bench_inference.py [--rows 10000000] [--rounds 3]

(1) in memory: the columns already loaded as a pyarrow Table; (2) in the warehouse: a
``SQLSource`` on a ``FortClient``, every pass an aggregate query through fort-query (DuckDB on
the Parquet file); (3) download then fit: ``FortClient.query`` of the used columns, then the
in-memory fit. Each for a linear fit (views on shares and reactions, the declared noise, 500
draws) and a logistic fit (a 0/1 "viral" column on the same covariates). fort-query runs in its
own process (as in benchmarks/bench_query.py); bytes are counted on the client's HTTP
connections (request and response lines, headers and bodies).
Targets: (2) linear <= 1.5 x (1); (2) linear >= 10 x faster than (3); < 100 KB moved per fit.
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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import requests

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT.parent), str(ROOT)]

import bench_query  # noqa: E402  (its --serve mode runs fort-query in a process)

from fort_hub.client import FortClient  # noqa: E402
from fort_hub.dev.datasets import NOISE_SD  # noqa: E402
from fort_hub.inference import LinearRegression, LogisticRegression, SQLSource  # noqa: E402
from tests.query_support import make_datasets  # noqa: E402

X = ["shares", "reactions"]


def table(rows: int, seed: int = 1) -> pa.Table:
    """The numeric columns of fort_hub.dev.datasets.url_shares_table, generated the same way."""
    rng = np.random.default_rng(seed)
    popularity = rng.lognormal(3.0, 1.4, rows)
    out = {}
    for col, (lo, hi) in {
        "views": (30, 120),
        "shares": (0.2, 1.0),
        "reactions": (0.5, 2.5),
    }.items():
        true = np.floor(popularity * rng.uniform(lo, hi, rows))
        out[col] = np.rint(true + rng.normal(0.0, NOISE_SD[col], rows)).astype(np.int64)
    out["viral"] = (out["views"] > np.median(out["views"])).astype(np.int64)
    return pa.table(out)


class CountingAdapter(requests.adapters.HTTPAdapter):
    """Counts the bytes of every request and response (line, headers, body) on its session."""

    def __init__(self):
        super().__init__()
        self.sent, self.responses = 0, []

    def send(self, request, **kw):
        head = f"{request.method} {request.path_url} HTTP/1.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in request.headers.items()) + "\r\n"
        body = request.body or b""
        self.sent += len(head) + len(body if isinstance(body, bytes) else body.encode())
        r = super().send(request, **kw)
        self.responses.append(r)
        return r

    def total(self) -> int:
        received = 0
        for r in self.responses:
            head = sum(len(k) + len(v) + 4 for k, v in r.headers.items()) + 17
            received += head + r.raw.tell()  # urllib3: body bytes read from the wire
        return self.sent + received

    def reset(self):
        self.sent, self.responses = 0, []


def fits(data, counter: CountingAdapter):
    """(seconds, bytes) of the linear and of the logistic fit, and the fitted models."""
    noise = [NOISE_SD[c] ** 2 for c in X]
    counter.reset()
    t = time.perf_counter()
    lin = LinearRegression(X, "views", x_s2=noise, random_state=0).fit(data)
    t_lin, b_lin = time.perf_counter() - t, counter.total()
    counter.reset()
    t = time.perf_counter()
    logit = LogisticRegression(X, "viral", x_s2=noise).fit(data)
    return (t_lin, time.perf_counter() - t), (b_lin, counter.total()), (lin, logit)


def med(xs):
    return f"{statistics.median(xs):.2f} s ({min(xs):.2f}..{max(xs):.2f})"


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    make_datasets(tmp)
    data = table(a.rows)
    pq.write_table(data, tmp / "data" / "url_shares.parquet")
    server = subprocess.Popen(
        [sys.executable, bench_query.__file__, "--serve", str(tmp)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    base = server.stdout.readline().strip()
    if not base.startswith("http"):
        raise SystemExit(f"the fort-query server did not start: {base!r}")
    counter = CountingAdapter()
    session = requests.Session()
    session.mount("http://", counter)
    fort = FortClient(url=base.removesuffix("api/v1/"), token="alice-token", session=session)
    times = {k: ([], []) for k in ("memory", "warehouse", "download")}
    moved = {k: ([], []) for k in ("memory", "warehouse", "download")}
    results = {}

    def memory():
        return fits(data, counter)

    def warehouse():
        return fits(SQLSource(fort, "url_shares"), counter)

    def download():
        sql = f"SELECT {', '.join(X)}, views, viral FROM url_shares"
        counter.reset()
        t = time.perf_counter()
        got = fort.query(sql, dataset="url_shares", progress=False)
        fetch, fetched = time.perf_counter() - t, counter.total()
        (lin, logit), (b_lin, b_logit), models = fits(got, counter)
        # the download is counted once, with the linear fit (the logistic fit reuses it)
        return (lin + fetch, logit), (b_lin + fetched, b_logit), models

    steps = {"memory": memory, "warehouse": warehouse, "download": download}
    names = list(steps)
    try:
        for r in range(a.rounds):  # rotate which goes first
            for name in names[r % 3 :] + names[: r % 3]:
                (t_lin, t_logit), (b_lin, b_logit), models = steps[name]()
                times[name][0].append(t_lin)
                times[name][1].append(t_logit)
                moved[name][0].append(b_lin)
                moved[name][1].append(b_logit)
                for f in (tmp / "results").glob("*.arrows*"):
                    f.unlink()
                results[name] = models
    finally:
        server.stdin.close()
        server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    report(a, times, moved, results)


def report(a, times, moved, results):
    print(f"rows={a.rows:,}, rounds={a.rounds}; fits: linear (views ~ shares + reactions) and "
          "logistic (viral ~ shares + reactions), declared noise")  # fmt: skip
    for name, label in (("memory", "(1) in memory"), ("warehouse", "(2) in the warehouse"),
                        ("download", "(3) download, then fit")):  # fmt: skip
        lin, logit = times[name]
        print(f"{label:24}: linear {med(lin)}, logistic {med(logit)}")
    lin_m, lin_w, lin_d = (times[k][0] for k in ("memory", "warehouse", "download"))
    r1 = sorted(w / m for w, m in zip(lin_w, lin_m, strict=True))
    r2 = sorted(d / w for d, w in zip(lin_d, lin_w, strict=True))
    print(f"linear (2)/(1) per round: median {statistics.median(r1):.2f} "
          f"({r1[0]:.2f}..{r1[-1]:.2f})  (target <= 1.5)")  # fmt: skip
    print(f"linear (3)/(2) per round: median {statistics.median(r2):.1f} "
          f"({r2[0]:.1f}..{r2[-1]:.1f})  (target >= 10)")  # fmt: skip
    for name in ("warehouse", "download"):
        lin, logit = (statistics.median(b) / 1e3 for b in moved[name])
        print(f"bytes moved, {name:9}: linear fit {lin:,.1f} KB, logistic fit {logit:,.1f} KB "
              "(target for (2): < 100 KB per fit)")  # fmt: skip
    lin_mem, logit_mem = results["memory"]
    lin_wh, logit_wh = results["warehouse"]
    print(f"same estimates (max relative difference): linear "
          f"{np.max(np.abs(lin_wh.beta / lin_mem.beta - 1)):.1e}, logistic "
          f"{np.max(np.abs(logit_wh.beta / logit_mem.beta - 1)):.1e}; logistic Newton steps "
          f"{logit_mem.n_iter}")  # fmt: skip


if __name__ == "__main__":
    main()
