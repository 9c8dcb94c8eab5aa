"""Shared fixtures.

- ``store_url`` / ``store``: parametrized over SQLite and PostgreSQL, for contract suites.
  PostgreSQL comes from ``FORT_TEST_POSTGRES_URL`` (default: the local server,
  ``postgresql://postgres@127.0.0.1:5432/test``). Locally an unreachable server skips those
  tests; under CI (``CI=true``) it fails them, so a silent skip cannot pass CI.
- ``pg_url``: a fresh PostgreSQL schema for one test (each test gets its own ``search_path``).
- ``example_policy`` / ``example_policy_path``: the example policy shipped in fort_hub/dev/data.

The processes a session starts (hubs, their proxies and services, demos) are killed however
it ends: at its finish, at exit, on SIGTERM, SIGINT and SIGHUP (tests/children.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest

from fort_hub.policy import load_policy
from tests import children
from tests.browser import browser, page  # noqa: F401 - fixtures of the browser tests

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_POLICY = ROOT / "fort_hub" / "dev" / "data" / "example-policy.yaml"
PG_URL = os.environ.get("FORT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


#: settings a developer's shell may export (a benchmark's, a demo's) that would change what the
#: tests see as fort's defaults: the session and every process it starts run without them
SHELL_SETTINGS = ("FORT_HUB_GROUPS", "FORT_ADMIN_GROUP")


def pytest_configure(config):
    for name in SHELL_SETTINGS:
        os.environ.pop(name, None)
    children.install()


def pytest_runtest_teardown(item, nextitem):
    children.reinstall()


def pytest_sessionfinish(session, exitstatus):
    children.kill_all()


def _pg_reachable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return None
    except Exception as e:  # any failure means "not reachable"
        return str(e).splitlines()[0] if str(e) else type(e).__name__


def require_postgres() -> None:
    problem = _pg_reachable()
    if problem:
        msg = f"PostgreSQL at {PG_URL} is not reachable: {problem}"
        if IN_CI:
            pytest.fail(msg + " (CI must run the PostgreSQL tests)")
        pytest.skip(msg)


@pytest.fixture
def pg_url():
    """A PostgreSQL URL whose default schema is fresh and dropped afterwards."""
    require_postgres()
    import psycopg

    schema_name = "t_" + secrets.token_hex(6)
    raw = PG_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema_name}"')
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema_name}"
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema_name}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'fort.sqlite'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fort.sqlite'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url):
    from fort_hub.store import Store

    s = Store(store_url)
    yield s
    s.dispose()


@pytest.fixture
def example_policy_path(tmp_path) -> Path:
    """A copy of the example policy in a temp dir (safe to edit)."""
    dst = tmp_path / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, dst)
    return dst


@pytest.fixture
def example_policy(example_policy_path):
    return load_policy(example_policy_path)


@pytest.fixture
def artifacts_dir() -> Path:
    d = ROOT / "tests" / "artifacts"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def fort_demo(tmp_path_factory):
    """One running ``fort-hub demo`` shared by the end-to-end modules (tests/demoproc.py)."""
    from tests.demoproc import RunningDemo

    # named as in the repository, so README's commands run as written from its parent
    demo = RunningDemo(tmp_path_factory.mktemp("fort-demo") / ".fort-demo")
    demo.start()
    yield demo
    assert demo.stop() == 0, demo.output[-3000:]
    assert "fort-hub demo: stopped" in demo.output
    assert demo.leftover_processes() == []  # Ctrl-C / SIGTERM stops everything


@pytest.fixture(scope="session")
def fort_stack(tmp_path_factory):
    """A real hub with fort-query, fort-credentials and fort-groups for the client tests (R
    package, IPython magic), shared by their modules (tests/clientstack.py)."""
    from tests.clientstack import FortStack

    with FortStack(tmp_path_factory.mktemp("fort-stack")) as stack:
        yield stack


@pytest.fixture(scope="module")
def moto_url():
    """moto's server on a free port of 127.0.0.1 (STS, S3, IAM, Athena), one per test module."""
    from moto.server import ThreadedMotoServer

    from tests.hubproc import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
