"""``%load_ext fort_hub.client`` / ``%%fort_sql`` in a real IPython kernel (jupyter_client),
against a real hub with fort-query (tests/clientstack.py), as alice's notebook runs it."""

from __future__ import annotations

import os

import pytest
from jupyter_client.manager import start_new_kernel

from fort_hub.client.magic import guess_dataset
from tests.clientstack import SLOW_SQL

pytestmark = pytest.mark.hub

DATASETS = [
    {"name": "url_shares", "tables": [{"name": "url_shares", "columns": []}]},
    {"name": "ads_targeting", "tables": [{"name": "ads_targeting", "columns": []}]},
]


def test_guess_dataset_from_the_tables_the_sql_names():
    from IPython.core.error import UsageError

    assert guess_dataset(DATASETS[:1], "SELECT 1") == "url_shares"
    assert guess_dataset(DATASETS, "select * from URL_SHARES where x > 1") == "url_shares"
    assert guess_dataset(DATASETS, "SELECT * FROM ads_targeting.ads_targeting") == "ads_targeting"
    # a column or a longer name that merely contains a table's name does not count
    assert guess_dataset(DATASETS, "SELECT url_shares_x FROM ads_targeting") == "ads_targeting"
    with pytest.raises(UsageError, match=r"several datasets \(yours: url_shares, ads_targeting\)"):
        guess_dataset(DATASETS, "SELECT * FROM url_shares JOIN ads_targeting USING (x)")
    with pytest.raises(UsageError, match="none of your datasets"):
        guess_dataset(DATASETS, "SELECT * FROM elsewhere")


class Kernel:
    """A kernel client that collects each execution's outputs."""

    def __init__(self, kc):
        self.kc = kc

    def run(self, code: str, timeout: float = 60) -> tuple[dict, list[dict]]:
        outputs: list[dict] = []

        def hook(msg):
            if msg["msg_type"] in ("stream", "display_data", "update_display_data",
                                   "execute_result", "error"):  # fmt: skip
                outputs.append({"type": msg["msg_type"], **msg["content"]})

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        return reply["content"], outputs

    def ok(self, code: str) -> str:
        reply, outputs = self.run(code)
        assert reply["status"] == "ok", (reply, outputs)
        return "".join(o.get("text", "") for o in outputs if o["type"] == "stream")


@pytest.fixture(scope="module")
def kernel(fort_stack):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("FORT_", "JUPYTERHUB_", "PYTEST_"))
    }
    env.update(
        JUPYTERHUB_API_TOKEN=fort_stack.tokens["alice"],
        FORT_SERVICES_URL=fort_stack.services_url,
    )
    km, kc = start_new_kernel(kernel_name="python3", env=env, startup_timeout=60)
    try:
        k = Kernel(kc)
        k.ok("%load_ext fort_hub.client")
        yield k
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_fort_sql_assigns_a_dataframe(kernel):
    out = kernel.ok(
        "%%fort_sql shares\nSELECT country, count(*) AS n FROM url_shares GROUP BY 1 ORDER BY 1\n"
    )
    assert out == "shares: 4 rows x 2 columns\n"
    out = kernel.ok("print(type(shares).__name__, shares.to_dict('list'))")
    assert out == "DataFrame {'country': ['BR', 'DE', 'IN', 'US'], 'n': [50, 50, 50, 50]}\n"


def test_fort_sql_without_a_name_returns_the_dataframe(kernel):
    reply, outputs = kernel.run(
        "%%fort_sql --dataset url_shares\nSELECT url, views FROM url_shares WHERE views < 3\n"
    )
    assert reply["status"] == "ok", outputs
    results = [o for o in outputs if o["type"] == "execute_result"]
    assert len(results) == 1 and "text/html" in results[0]["data"]
    assert kernel.ok("print(_.to_dict('list'))") == (
        "{'url': ['https://example.org/0', 'https://example.org/1'], 'views': [0.0, 1.5]}\n"
    )


def test_refused_query_shows_the_message_without_a_traceback(kernel):
    reply, outputs = kernel.run("%%fort_sql -d ads_targeting\nSELECT * FROM ads_targeting\n")
    assert reply["status"] == "error"
    assert reply["ename"] == "FortSQLError"
    assert "you may not query dataset 'ads_targeting'" in reply["evalue"]
    errors = [o for o in outputs if o["type"] == "error"]
    assert [e["traceback"] for e in errors] == [[f"FortSQLError (HTTP 403): {reply['evalue']}"]]
    out = kernel.ok(
        "from fort_hub.client import FortQueryError\n"
        "try:\n"
        "    get_ipython().run_cell_magic('fort_sql', '', 'SELECT * FROM ads_targeting')\n"
        "except FortQueryError as e:\n"
        "    print(e.status, e.message)"
    )
    assert out.startswith("403 ") and "'ads_targeting'" in out


def test_long_query_shows_progress_then_its_failure(kernel):
    reply, outputs = kernel.run(f"%%fort_sql slow\n{SLOW_SQL}\n", timeout=60)
    assert reply["status"] == "error" and reply["ename"] == "FortSQLError"
    assert "time" in reply["evalue"]
    shown = [
        o["data"].get("text/plain", "")
        for o in outputs
        if o["type"] in ("display_data", "update_display_data")
    ]
    assert any(": running " in s for s in shown), outputs
    assert kernel.ok("print('slow' in globals())") == "False\n"


def test_notebook_shows_one_progress_line_and_no_stray_output(kernel):
    """FortClient in a notebook: a fast query prints nothing (there was an empty '' line), a
    slow one one progress line updated in place (text, not a quoted string), and a failure is
    one line of error, without the client's frames."""
    kernel.ok("from fort_hub.client import FortClient\nfort = FortClient()")
    reply, outputs = kernel.run('t = fort.query("SELECT 1 AS x", dataset="url_shares")')
    assert reply["status"] == "ok" and outputs == []
    reply, outputs = kernel.run(f"fort.query({SLOW_SQL!r}, dataset='url_shares')", timeout=60)
    assert reply["status"] == "error" and reply["ename"] == "FortQueryFailed"
    shown = [o for o in outputs if o["type"] in ("display_data", "update_display_data")]
    assert [o["type"] for o in shown[:1]] == ["display_data"]
    assert all(o["type"] == "update_display_data" for o in shown[1:])
    assert len({o["transient"]["display_id"] for o in shown}) == 1  # one line, updated
    texts = [o["data"]["text/plain"] for o in shown]
    assert all(t.startswith("fort-query ") and "'" not in t for t in texts), texts
    assert ": running " in texts[0] and texts[-1].endswith(": failed")
    (error,) = [o for o in outputs if o["type"] == "error"]
    assert error["traceback"] == [f"FortQueryFailed: {reply['evalue']}"]
    assert "query_timeout" in reply["evalue"]
    assert [o for o in outputs if o["type"] == "stream"] == []  # nothing on stdout/stderr
    reply, outputs = kernel.run('fort.query("SELECT * FROM ads_targeting", "url_shares")')
    assert reply["ename"] == "FortRefused" and len(outputs) == 1
    assert outputs[0]["traceback"] == [f"FortRefused (HTTP 403): {reply['evalue']}"]
    reply, outputs = kernel.run("fort.usage()")
    (result,) = [o for o in outputs if o["type"] == "execute_result"]
    assert "<table>" in result["data"]["text/html"]
    assert result["data"]["text/plain"].startswith("fort-query usage of alice:")


def test_bad_input_is_a_usage_error(kernel):
    for cell, message in [
        ("%%fort_sql\n\n", "the cell is empty"),
        ("%%fort_sql 1x\nSELECT 1\n", "'1x' is not a valid Python variable name"),
        ("%%fort_sql class\nSELECT 1\n", "'class' is not a valid Python variable name"),
        ("%%fort_sql --bogus\nSELECT 1\n", "unrecognized arguments: --bogus"),
        ("%%fort_sql\nSELECT * FROM nowhere\n", None),  # alice has one dataset: it is used
    ]:
        reply, outputs = kernel.run(cell)
        assert reply["status"] == "error", (cell, outputs)
        if message is None:
            assert reply["ename"] == "FortSQLError" and "nowhere" in reply["evalue"]
        else:
            assert reply["ename"] == "UsageError" and message in reply["evalue"], reply


def test_without_the_notebook_environment_the_magic_says_what_is_missing(kernel):
    kernel.ok("import os\nsaved = os.environ.pop('FORT_SERVICES_URL')\n%reload_ext fort_hub.client")
    try:
        reply, _ = kernel.run("%%fort_sql\nSELECT 1\n")
        assert reply["ename"] == "UsageError"
        assert (
            "fort-query is not configured: set FORT_QUERY_URL or FORT_SERVICES_URL"
            in (reply["evalue"])
        )
    finally:
        kernel.ok("os.environ['FORT_SERVICES_URL'] = saved\n%reload_ext fort_hub.client")
    kernel.ok("%%fort_sql counted\nSELECT count(*) AS n FROM url_shares\n")
    assert kernel.ok("print(counted.n[0])") == "200\n"
