"""schemathesis against fort-query's OpenAPI document: generated requests (with a user's token)
never get a 5xx and every response conforms to the document. Bounded to stay well under 60 s."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from fort_hub.services.query.handlers import OPENAPI
from tests.query_support import QueryEnv

with open(OPENAPI) as f:
    DOC = json.load(f)

schema = schemathesis.openapi.from_dict(DOC)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openapi")
    e = QueryEnv(tmp, f"sqlite:///{tmp / 'fort.sqlite'}").start()
    # some real ids for the {query_id} operations to hit besides random ones
    e.run("SELECT url, shares FROM url_shares LIMIT 5")
    yield e
    e.stop()


def test_document_is_openapi_3_1():
    assert DOC["openapi"] == "3.1.0"
    ops = {(m.upper(), p) for p, item in DOC["paths"].items() for m in item}
    assert {
        ("POST", "/queries"),
        ("GET", "/queries"),
        ("GET", "/queries/{query_id}"),
        ("DELETE", "/queries/{query_id}"),
        ("GET", "/queries/{query_id}/results"),
        ("GET", "/datasets"),
        ("GET", "/usage"),
        ("GET", "/openapi.json"),
    } <= ops


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms(case, env):
    base = env.base.rstrip("/")
    # every check but "schema-valid data must be accepted": a schema cannot say which strings are
    # valid, permitted SQL, so a schema-valid body may rightly get 400/403 (tested elsewhere)
    case.call_and_validate(
        base_url=base,
        headers={"Authorization": "token alice-token"},
        excluded_checks=[positive_data_acceptance],
    )


def test_the_waiting_submit_is_described_and_answers_as_described(env):
    """POST /queries?wait= (#13): the document names the parameter and the 200 answers (the
    result as Arrow, or the query's record), and the service's answers match them."""
    import requests

    post = DOC["paths"]["/queries"]["post"]
    wait = {p["name"]: p for p in post["parameters"]}["wait"]
    assert wait["in"] == "query" and wait["schema"]["maximum"] == 60
    described = post["responses"]["200"]["content"]
    assert set(described) == {"application/json", "application/vnd.apache.arrow.stream"}
    assert "X-Fort-Query-Id" in post["responses"]["200"]["headers"]
    for accept in described:
        r = requests.post(
            env.base + "queries", params={"wait": "2.5"},
            json={"sql": "SELECT url FROM url_shares LIMIT 2", "dataset": "url_shares"},
            headers={"Authorization": "token alice-token", "Accept": accept}, timeout=30,
        )  # fmt: skip
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(accept)
        assert r.headers["X-Fort-Query-Id"]
