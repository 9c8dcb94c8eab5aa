"""The scale harness (benchmarks/bench_scale.py) with five researchers, so it cannot rot: the
whole stack comes up (Facebook stand-in, Kubernetes double, notebook stand-in, both hubs with
their proxies, the fort services on PostgreSQL, moto's STS), every researcher completes on both
hubs, and every figure the docs quote is in its report. No timing is asserted; the hub's token
checks per researcher, which do not depend on timing, are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_postgres

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.postgres, pytest.mark.hub]


def run_harness(tmp_path, *options: str) -> dict:
    """bench_scale.py with 5 researchers, quickly, and *options*: its figures (--json)."""
    require_postgres()
    out = tmp_path / "scale.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--researchers", "5",
           "--ramp", "2", "--idle", "0.5", "--queries", "2", "--pod-delay", "0.2",
           "--step-timeout", "90", "--duration", "120", *options, "--json", str(out)]  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text())


def test_five_researchers_complete_on_both_hubs_and_every_figure_is_reported(tmp_path):
    figures = run_harness(tmp_path, "--policy-users", "30", "--policy-groups", "5")
    for kind, steps in (("fort", {"login", "spawn", "server_api", "query", "credentials",
                                  "stop"}), ("stock", {"login", "spawn", "server_api", "stop"})):  # fmt: skip
        hub = figures["hubs"][kind]
        assert (hub["completed"], hub["failed"], hub["failures"]) == (5, 0, {}), hub
        assert set(hub["steps"]) == steps
        for st in steps:
            assert set(hub["steps"][st]) == {"n", "p50", "p95", "p99"}
        assert hub["steps"]["spawn"]["n"] == 5
        assert hub["hub_cpu_per_researcher"] > 0
    assert figures["hubs"]["fort"]["steps"]["query"]["n"] == 10
    # the hub's token checks: the notebook's one, and on the fort hub one for both fort
    # services (the second reads the first's answer from the store)
    checks = {k: figures["hubs"][k]["api_requests_per_researcher"].get("GET /hub/api/user")
              for k in ("fort", "stock")}  # fmt: skip
    assert checks == {"fort": 2.0, "stock": 1.0}
    for key in ("ratio_hub_cpu_fort_over_stock", "fort_services_cpu_per_researcher",
                "services_over_fort_hub_cpu"):  # fmt: skip
        assert figures[key] > 0
    store = figures["store"]
    assert store["commits"] > 0 and store["connections_max"] > 0
    policy = figures["policy"]
    assert (policy["users"], policy["groups"], policy["second_changes"]) == (30, 5, 0)
    assert policy["first_changes"] > 0
    assert "configurable-http-proxy" in figures["chp"]


def test_two_replicas_of_each_service_behind_fronts(tmp_path):
    """``--replicas 2``: the hub knows each fort service by the url of a round-robin front and
    starts none; two processes of each serve the researchers (fort-query's on the S3 result
    store), and their CPU is reported, summed and per replica."""
    figures = run_harness(tmp_path, "--policy-users", "0", "--replicas", "2")
    fort = figures["hubs"]["fort"]
    assert (fort["completed"], fort["failed"]) == (5, 0), fort
    assert fort["steps"]["query"]["n"] == 10 and fort["steps"]["credentials"]["n"] == 5
    # each researcher's token reaches up to four service processes; the hub is asked by one
    assert fort["api_requests_per_researcher"]["GET /hub/api/user"] == 2.0
    assert figures["services"].startswith("2 processes each")
    replicas = [f"{s}-{i}" for s in ("fort-groups", "fort-credentials", "fort-query")
                for i in (0, 1)]  # fmt: skip
    assert set(replicas) <= set(figures["cpu_s"])
    assert figures["cpu_s"]["fort_services"] > 0 and "service_fronts" in figures["cpu_s"]
    assert "policy" not in figures


def exec_config(text: str):
    from traitlets.config import Config

    c = Config()
    exec(text, {"c": c, "get_config": lambda: c})
    return c


def test_stock_groups_put_the_stock_hubs_researchers_in_one_hub_group():
    """``--stock-groups``: oauthenticator's manage_groups gives every stock researcher the hub
    group urls-study at login (as fort-groups gives the fort hub's with ``--hub-groups``); without
    it, none."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scale_stack import stock_config

    plain = exec_config(stock_config(["chp"], 9999, "http://standin")).GenericOAuthenticator
    grouped = exec_config(stock_config(["chp"], 9999, "http://standin", groups=True))
    g = grouped.GenericOAuthenticator
    assert "manage_groups" not in plain and g.manage_groups is True
    assert g.auth_state_groups_key({"access_token": "x"}) == ["urls-study"]
