"""The notebook client ``fort_hub.client.FortClient`` against a running fort-query."""

from __future__ import annotations

import subprocess
import sys
import time

import pyarrow as pa
import pytest

from fort_hub.client import FortClient, FortQueryError
from tests.query_support import QueryEnv


@pytest.fixture
def env(tmp_path, sqlite_url):
    e = QueryEnv(tmp_path, sqlite_url).start()
    yield e
    e.stop()


@pytest.fixture
def notebook_env(env, monkeypatch):
    """The environment the fort spawners give a notebook."""
    services = env.base.removesuffix("fort-query/api/v1/")
    monkeypatch.delenv("FORT_QUERY_URL", raising=False)
    monkeypatch.setenv("FORT_SERVICES_URL", services)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "alice-token")
    return env


def test_query_returns_an_arrow_table(notebook_env):
    fort = FortClient()
    assert fort.url == notebook_env.base.removesuffix("api/v1/")
    table = fort.query(
        "SELECT country, count(*) AS n FROM url_shares GROUP BY 1 ORDER BY 1", dataset="url_shares"
    )
    assert isinstance(table, pa.Table)
    assert table.to_pydict() == {"country": ["BR", "DE", "IN", "US"], "n": [50, 50, 50, 50]}
    assert list(table.to_pandas().columns) == ["country", "n"]
    hist = fort.history()
    assert hist[0]["state"] == "succeeded" and hist[0]["rows"] == 4
    assert [d["name"] for d in fort.datasets()] == ["url_shares"]
    assert fort.usage()["queries_per_day"]["used"] == 1


def test_specific_url_wins(notebook_env, monkeypatch):
    monkeypatch.setenv("FORT_QUERY_URL", notebook_env.base.removesuffix("api/v1/"))
    monkeypatch.setenv("FORT_SERVICES_URL", "http://127.0.0.1:9/nowhere/")
    assert FortClient().query("SELECT 1 AS x", dataset="url_shares").num_rows == 1


def test_errors_carry_the_server_message(notebook_env):
    fort = FortClient()
    with pytest.raises(FortQueryError) as info:
        fort.query("SELECT * FROM ads_targeting", dataset="url_shares")
    assert info.value.status == 403 and "ads_targeting" in str(info.value)
    with pytest.raises(FortQueryError, match="exactly one statement"):
        fort.query("SELECT 1; SELECT 2", dataset="url_shares")
    with pytest.raises(FortQueryError, match=r"Binder Error|not found|nope"):
        fort.query("SELECT nope FROM url_shares", dataset="url_shares")


def test_cancel_and_progress(notebook_env, capsys):
    fort = FortClient()
    slow = (
        "SELECT count(*) FROM url_shares a, url_shares b, url_shares c, url_shares d, url_shares e"
    )
    qid = fort.submit(slow, "url_shares")
    time.sleep(0.3)
    assert fort.cancel(qid)["state"] == "cancelling"
    with pytest.raises(FortQueryError, match="cancelled"):
        fort.wait(qid)
    assert "fort-query" in capsys.readouterr().err  # the progress line outside Jupyter


def test_missing_environment_is_named(monkeypatch):
    for var in ("FORT_QUERY_URL", "FORT_SERVICES_URL", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(FortQueryError, match="FORT_SERVICES_URL"):
        FortClient()
    monkeypatch.setenv("FORT_SERVICES_URL", "http://127.0.0.1:9/services/")
    with pytest.raises(FortQueryError, match="JUPYTERHUB_API_TOKEN"):
        FortClient()
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "x")
    with pytest.raises(FortQueryError, match="unreachable"):
        FortClient().datasets()


def test_client_imports_no_hub_code():
    code = (
        "import sys, fort_hub.client; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('jupyterhub', 'kubespawner', 'tornado', 'sqlalchemy', 'duckdb')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


HUB_SIDE = ("jupyterhub", "kubespawner", "oauthenticator", "tornado", "duckdb", "sqlglot",
            "sqlalchemy", "psycopg", "traitlets", "kubernetes_asyncio")  # fmt: skip
BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HUB_SIDE!r}:
            raise ImportError("hub-side package " + name + " imported by the client")
sys.meta_path.insert(0, Block())
"""


def test_client_needs_none_of_the_hub_side_packages():
    """What a notebook image gets (docker/client-requirements.txt) is enough for the client:
    with every hub-side package made unimportable, FortClient and fort-aws-credentials work."""
    code = BLOCKER + (
        "from fort_hub.client import FortClient, FortQueryError\n"
        "from fort_hub.client.credential_process import main\n"
        "import boto3\n"
        "print('exit', main(['--role', 'fort-urls-study']))\n"
    )
    env = {"PATH": "/usr/bin:/bin"}  # no JUPYTERHUB_API_TOKEN: the helper's own clear error
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "hub-side package" not in r.stderr
    assert r.stdout.strip() == "exit 1" and "JUPYTERHUB_API_TOKEN" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
