"""The notebook client ``fort_hub.client.FortClient`` against a running fort-query."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pyarrow as pa
import pytest

from fort_hub.client import (
    FortClient,
    FortQueryError,
    FortQueryFailed,
    FortQuotaExceeded,
    FortRefused,
)
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


def test_queries_and_downloads_reuse_one_connection(notebook_env, monkeypatch):
    """An Arrow answer read to its end hands its connection back to the session's pool: a
    notebook's queries do not each open a new connection (and leave one in TIME_WAIT)."""
    import urllib3.connection

    opened = []
    connect = urllib3.connection.HTTPConnection.connect
    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect",
                        lambda self: opened.append(self) or connect(self))  # fmt: skip
    fort = FortClient()
    for _ in range(3):  # the result in the submit's answer
        assert fort.query("SELECT 1 AS x", dataset="url_shares").num_rows == 1
    qid = fort.submit("SELECT * FROM url_shares", "url_shares")
    assert fort.results(qid, follow=True).num_rows == 200  # streamed as the query runs
    assert fort.results(qid).num_rows == 200  # the stored copy
    assert fort.usage()["queries_per_day"]["used"] == 4
    assert len(opened) == 1


def test_specific_url_wins(notebook_env, monkeypatch):
    monkeypatch.setenv("FORT_QUERY_URL", notebook_env.base.removesuffix("api/v1/"))
    monkeypatch.setenv("FORT_SERVICES_URL", "http://127.0.0.1:9/nowhere/")
    assert FortClient().query("SELECT 1 AS x", dataset="url_shares").num_rows == 1


def test_errors_carry_the_server_message(notebook_env):
    fort = FortClient()
    with pytest.raises(FortRefused) as info:
        fort.query("SELECT * FROM ads_targeting", dataset="url_shares")
    assert info.value.status == 403 and "ads_targeting" in str(info.value)
    with pytest.raises(FortRefused, match="exactly one statement") as info:
        fort.query("SELECT 1; SELECT 2", dataset="url_shares")
    assert info.value.status == 400
    with pytest.raises(FortRefused, match=r"fort\.datasets\(\)") as info:
        fort.query("DESCRIBE url_shares", dataset="url_shares")
    with pytest.raises(FortQueryFailed) as info:
        fort.query("SELECT nope FROM url_shares", dataset="url_shares")
    assert str(info.value).startswith('no column "nope" in the tables of this query')
    assert info.value.detail.startswith("Binder Error:") and info.value.state == "failed"
    assert isinstance(info.value, FortQueryError)  # code catching the base class still works
    # IPython shows each as one line: the class, the status, the server's message
    assert info.value._render_traceback_() == [f"FortQueryFailed: {info.value.message}"]


def test_quota_refusal_is_a_quota_error(notebook_env, monkeypatch):
    fort = FortClient()
    body = {"error": {"status": 429, "message": "quota queries_per_day reached: 2 of 2 used",
                      "quota": {"limit": "queries_per_day", "used": 2, "max": 2,
                                "resets": "2030-01-02T00:00:00+00:00"}}}  # fmt: skip

    class Answer:
        status_code, headers, text = 429, {"Retry-After": "3600"}, ""

        def json(self):
            return body

    monkeypatch.setattr(fort.session, "request", lambda *a, **k: Answer())
    with pytest.raises(FortQuotaExceeded) as info:
        fort.submit("SELECT 1", "url_shares")
    e = info.value
    assert (e.status, e.retry_after, e.quota["limit"]) == (429, 3600, "queries_per_day")
    assert isinstance(e, FortRefused) and str(e) == body["error"]["message"]
    assert e._render_traceback_() == [f"FortQuotaExceeded (HTTP 429): {e.message}"]


def test_usage_and_datasets_read_as_tables(notebook_env):
    fort = FortClient()
    fort.query("SELECT sum(shares) AS s FROM url_shares", dataset="url_shares")
    usage = fort.usage()
    assert usage["queries_per_day"]["used"] == 1  # still the API's dict
    scanned = usage["bytes_scanned_per_day"]["used"]
    assert scanned > 0
    text = repr(usage)
    assert text.startswith("fort-query usage of alice:\nlimit")
    assert any(line.split()[-1:] == ["UTC"] for line in text.splitlines()[2:4])
    html = usage._repr_html_()
    assert "<table>" in html and "<td>bytes scanned today</td>" in html and "100.0 GB" in html
    datasets = fort.datasets()
    assert [d["name"] for d in datasets] == ["url_shares"]
    text = repr(datasets)
    assert text.splitlines()[0].startswith("url_shares")
    assert "url_shares  shares   BIGINT   gaussian (variance" in text
    assert "<td>views</td>" in datasets._repr_html_()


def test_cancel_and_progress(notebook_env, capsys):
    fort = FortClient()
    slow = (
        "SELECT count(*) FROM url_shares a, url_shares b, url_shares c, url_shares d, url_shares e"
    )
    qid = fort.submit(slow, "url_shares")
    time.sleep(0.3)
    assert fort.cancel(qid)["state"] == "cancelling"
    with pytest.raises(FortQueryFailed, match="cancelled") as info:
        fort.wait(qid)
    assert info.value.state == "cancelled" and info.value.query_id == qid
    assert capsys.readouterr().err == ""  # it ended within the first poll: no progress line
    # one that runs over a poll: a progress line on stderr (outside Jupyter), then the error
    qid = fort.submit(slow, "url_shares")
    timer = threading.Timer(1.5, fort.cancel, [qid])
    timer.start()
    try:
        with pytest.raises(FortQueryFailed, match="cancelled"):
            fort.wait(qid)
    finally:
        timer.join()
    err = capsys.readouterr().err
    assert f"\rfort-query {qid[:8]}: running" in err
    assert err.endswith(f"fort-query {qid[:8]}: cancelled".ljust(70) + "\n")


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


def test_usage_and_datasets_render_as_tables():
    from fort_hub.client.display import Datasets, Usage, human_bytes

    assert [human_bytes(n) for n in (0, 999, 4872, 100 * 10**9)] == [
        "0 B", "999 B", "4.9 kB", "100.0 GB",
    ]  # fmt: skip
    usage = Usage({
        "queries_per_day": {"used": 2, "max": 500, "resets": "2030-01-02T00:00:00+00:00"},
        "bytes_scanned_per_day": {"used": 4872, "max": 10**11, "resets": "2030-01-02T00:00:00+00:00"},
        "max_result_rows": {"used": None, "max": 1000000, "resets": None},
    }, user="alice")  # fmt: skip
    assert repr(usage).splitlines() == [
        "fort-query usage of alice:",
        "limit                used    max        resets",
        "queries today        2       500        2030-01-02 00:00 UTC",
        "bytes scanned today  4.9 kB  100.0 GB   2030-01-02 00:00 UTC",
        "rows per result              1,000,000",
    ]
    assert usage["bytes_scanned_per_day"]["used"] == 4872 and isinstance(usage, dict)
    assert "<td>4.9 kB</td>" in usage._repr_html_()
    datasets = Datasets([{
        "name": "urls", "description": "URL <shares>",
        "tables": [{"name": "t", "columns": [{"name": "age_bracket", "type": "VARCHAR"},
                                             {"name": "shares", "type": "BIGINT"}]}],
        "noise": {"shares": {"distribution": "gaussian", "variance": 196}},
    }])  # fmt: skip
    assert repr(datasets).splitlines() == [
        "urls: URL <shares>",
        "  table  column       type     noise",
        "  t      age_bracket  VARCHAR",
        "  t      shares       BIGINT   gaussian (variance 196)",
    ]
    assert "URL &lt;shares&gt;" in datasets._repr_html_()
    assert datasets[0]["name"] == "urls"
    assert repr(Datasets([])) == "(no datasets: your groups are granted none)"


def test_the_environment_is_read_once_for_the_service_url(monkeypatch, tmp_path):
    """Proxies, NO_PROXY and the CA bundle come from the environment when the client is made,
    for the service's URL, not again on every request (#13: requests re-reads them per call)."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxied = FortClient(url="http://query.fort.svc:8000/", token="t")
    assert proxied.session.proxies.get("http") == "http://proxy.example:3128"
    assert proxied.session.verify == str(bundle)
    monkeypatch.setenv("NO_PROXY", "query.fort.svc")
    direct = FortClient(url="http://query.fort.svc:8000/", token="t")
    assert "http" not in direct.session.proxies
    # later changes of the environment do not reach a client's requests
    monkeypatch.setenv("HTTP_PROXY", "http://elsewhere.example:1")
    settings = direct.session.merge_environment_settings(direct.api, {}, None, None, None)
    assert "http" not in settings["proxies"] and settings["verify"] == str(bundle)


def test_arrow_answers_are_read_into_arrow_buffers_and_encoded_ones_decoded():
    """The Arrow stream of a chunked answer is decoded by http.client straight into Arrow's
    buffers (no urllib3 copies); a content-encoded answer (gzip) still goes through urllib3's
    decoding; a stream cut off mid-body is an error, not a shorter table."""
    import gzip
    import http.client
    import http.server

    import requests

    from fort_hub.client import client as C

    table = pa.table({"x": list(range(50_000))})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=7_000)
    data = sink.getvalue().to_pybytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = gzip.compress(data) if self.path == "/gzip" else data
            cut = self.path == "/cut"
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            if self.path == "/gzip":
                self.send_header("Content-Encoding", "gzip")
            self.end_headers()
            for i in range(0, len(body) // 2 if cut else len(body), 100_000):
                piece = body[i : i + 100_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            if not cut:
                self.wfile.write(b"0\r\n\r\n")
            self.close_connection = cut
            peers.append(self.client_address)

        def log_message(self, *args):
            pass

    peers: list = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    session = requests.Session()
    try:
        for path in ("/plain", "/gzip", "/plain"):
            with session.get(url + path, stream=True, timeout=10) as r:
                body = C._arrow_body(r)
                assert isinstance(body, C._BodyReader) if path == "/plain" else body is r.raw
                assert pa.ipc.open_stream(body).read_all().equals(table)
                C._release_if_read(r)  # the chunked body's last chunk read: reused below
        assert len(peers) == 3 and len(set(peers)) == 1, peers
        broken = (pa.ArrowException, OSError, http.client.HTTPException)
        with session.get(url + "/cut", stream=True, timeout=10) as r, pytest.raises(broken):
            pa.ipc.open_stream(C._arrow_body(r)).read_all()
    finally:
        session.close()
        server.shutdown()
