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
