"""fort-query's SQL check (``sqlcheck.check_sql``: parse, refuse, qualify, render), per query,
with sqlglot as installed and, side by side, in other Python environments.

    .venv/bin/python benchmarks/bench_sqlcheck.py [--python /path/to/other/python ...] [--rounds 5]

Each environment runs the same check in its own process, rounds alternating; the check's
module is loaded by its path, so another environment needs only sqlglot (e.g. the
mypyc-compiled build, ``pip install 'sqlglot[c]==X'``, next to the pure-Python one fort-hub
installs: measured 2.2-2.5x faster, and not adopted, because it crashes the process on deeply
nested SQL; docs/benchmarks.md). Prints, per environment and query, the median over rounds of
each round's p50 (min..max of the rounds' p50s), and the ratio to the first environment.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHECK = Path(__file__).resolve().parent.parent / "fort_hub/services/query/sqlcheck.py"
QUERIES = {
    "1-row": "SELECT * FROM url_shares LIMIT 1",
    "aggregate with a CTE": (
        "WITH t AS (SELECT country, count(*) AS n, avg(views) AS v FROM url_shares "
        "WHERE shares > 10 GROUP BY 1) SELECT * FROM t WHERE n > 3 ORDER BY n DESC LIMIT 100"
    ),
    "join of two tables": (
        "SELECT a.country, sum(b.clicks) FROM url_shares a JOIN url_clicks b ON a.id = b.id "
        "GROUP BY 1"
    ),
}
ROUND = r"""
import importlib.util, json, statistics, sys, time
spec = importlib.util.spec_from_file_location("fort_sqlcheck", sys.argv[1])
m = importlib.util.module_from_spec(spec); sys.modules["fort_sqlcheck"] = m
spec.loader.exec_module(m)
import sqlglot, sqlglot.parser
tables = {"url_shares": ["url_shares", "url_clicks"]}
out = {"sqlglot": sqlglot.__version__, "compiled": not sqlglot.parser.__file__.endswith(".py")}
for name, sql in json.loads(sys.argv[2]).items():
    times = []
    for i in range(int(sys.argv[3])):
        t = time.perf_counter()
        m.check_sql(sql, dataset="url_shares", tables=tables, granted=["url_shares"],
                    target=(None, "url_shares"))
        times.append(time.perf_counter() - t)
    out[name] = statistics.median(times[len(times) // 10:]) * 1000
print(json.dumps(out))
"""


def one_round(python: str, runs: int) -> dict:
    done = subprocess.run(
        [python, "-c", ROUND, str(CHECK), json.dumps(QUERIES), str(runs)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", action="append", default=[], help="another environment")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=2000, help="checks per query per round")
    a = p.parse_args()
    envs = [sys.executable, *a.python]
    results: dict[str, list[dict]] = {e: [] for e in envs}
    for r in range(a.rounds):
        for e in envs if r % 2 == 0 else reversed(envs):
            results[e].append(one_round(e, a.runs))
    first = {}
    for e in envs:
        info = results[e][0]
        build = "compiled (sqlglotc)" if info["compiled"] else "pure Python"
        print(f"{e}: sqlglot {info['sqlglot']}, {build}")
        for q in QUERIES:
            p50s = [res[q] for res in results[e]]
            med = statistics.median(p50s)
            first.setdefault(q, med)
            print(f"  {q:22s} p50 {med:.3f} ms ({min(p50s):.3f}..{max(p50s):.3f}), "
                  f"x{med / first[q]:.2f} of the first")  # fmt: skip


if __name__ == "__main__":
    main()
