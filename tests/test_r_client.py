"""The R package (clients/r/fortclient): its testthat suite runs with Rscript against a real hub
with fort-query, fort-credentials and fort-groups (tests/clientstack.py), and its functions are
compared with fort-query's OpenAPI document so the two cannot drift apart.

Needs Debian's R (`make r-deps`, which `make test` runs): without it these tests skip with a
message, and under CI=true they fail."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from fort_hub.services.query.handlers import OPENAPI
from tests.clientstack import SLOW_SQL, require_r
from tests.conftest import ROOT

PACKAGE = ROOT / "clients" / "r" / "fortclient"


@pytest.fixture(scope="module")
def r_lib(tmp_path_factory) -> Path:
    """The package installed (R CMD INSTALL) into a private library."""
    exe = require_r()
    lib = tmp_path_factory.mktemp("rlib")
    r = subprocess.run(
        [str(Path(exe).with_name("R")), "CMD", "INSTALL", "--no-docs", "--no-multiarch",
         "-l", str(lib), str(PACKAGE)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return lib


def run_r(r_lib: Path, code: str, env: dict | None = None, timeout: float = 120):
    return subprocess.run(
        [require_r(), "-e", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "R_LIBS": str(r_lib), **(env or {})},
    )


# ----- the package against the OpenAPI document ------------------------------------------------


def r_signatures(r_lib: Path) -> dict:
    """{"exports": [...], "operations": {operationId: function}, "formals": {fn: [args]}}"""
    code = """
    ns <- asNamespace("fortclient")
    ex <- getNamespaceExports(ns)
    cat(jsonlite::toJSON(list(
      exports = ex,
      operations = as.list(get("OPERATIONS", ns)),
      formals = sapply(ex, function(f) names(formals(get(f, ns))), simplify = FALSE)
    ), auto_unbox = FALSE))
    """
    r = run_r(r_lib, code)
    assert r.returncode == 0, r.stderr
    sig = json.loads(r.stdout)
    sig["operations"] = {k: v[0] for k, v in sig["operations"].items()}
    return sig


def operation_parameters(doc: dict) -> dict[str, set[str]]:
    """operationId -> its parameter names (path, query, and the JSON body's properties)."""
    schemas = doc.get("components", {}).get("schemas", {})
    out = {}
    for item in doc["paths"].values():
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method == "parameters":
                continue
            names = {p["name"] for p in [*shared, *op.get("parameters", [])]}
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            schema = body.get("schema", {})
            if "$ref" in schema:
                schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
            names |= set(schema.get("properties", {}))
            out[op["operationId"]] = names
    return out


def drift(doc: dict, sig: dict) -> list[str]:
    """Every way the R package and the OpenAPI document disagree."""
    problems = []
    ops = operation_parameters(doc)
    for op, params in sorted(ops.items()):
        fn = sig["operations"].get(op)
        if fn is None:
            problems.append(f"operation {op} has no R function (R/operations.R)")
        elif fn not in sig["exports"]:
            problems.append(f"{fn} (for {op}) is not exported (NAMESPACE)")
        else:
            missing = sorted(params - set(sig["formals"][fn]))
            if missing:
                problems.append(f"{fn} (for {op}) lacks the parameter(s) {', '.join(missing)}")
    for op in sorted(set(sig["operations"]) - set(ops)):
        problems.append(f"R/operations.R names {op}, which the OpenAPI document does not have")
    return problems


@pytest.fixture(scope="module")
def signatures(r_lib):
    return r_signatures(r_lib)


@pytest.mark.hub
def test_every_operation_has_an_r_function_with_its_parameters(signatures, fort_stack):
    doc = json.loads(Path(OPENAPI).read_text())
    served = requests.get(fort_stack.services_url + "fort-query/api/v1/openapi.json", timeout=30)
    assert served.json() == doc  # what clients read is the document in the package
    assert drift(doc, signatures) == []
    assert len(signatures["operations"]) == len(operation_parameters(doc)) == 8


def test_drift_is_detected(signatures):
    doc = json.loads(Path(OPENAPI).read_text())
    doc["paths"]["/queries/{query_id}"]["get"]["parameters"].append(
        {"name": "verbose", "in": "query", "schema": {"type": "string"}}
    )
    doc["paths"]["/queries/{query_id}/export"] = {
        "post": {"operationId": "exportQuery", "responses": {}}
    }
    doc["components"]["schemas"]["QueryRequest"]["properties"]["engine"] = {"type": "string"}
    del doc["paths"]["/usage"]
    assert drift(doc, signatures) == [
        "operation exportQuery has no R function (R/operations.R)",
        "fort_status (for getQuery) lacks the parameter(s) verbose",
        "fort_submit (for submitQuery) lacks the parameter(s) engine",
        "R/operations.R names getUsage, which the OpenAPI document does not have",
    ]


def test_man_pages_and_namespace_are_generated_from_the_roxygen_comments(tmp_path):
    """man/ and NAMESPACE are roxygen2's output for R/ (regenerate: roxygen2::roxygenise())."""
    exe = require_r(("roxygen2",))
    copy = tmp_path / "fortclient"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("man", "NAMESPACE"))
    note = re.search(r"^RoxygenNote: (\S+)$", (PACKAGE / "DESCRIPTION").read_text(), re.M)[1]
    code = f"""
    if (as.character(packageVersion("roxygen2")) != {note!r}) {{
      cat("roxygen2", as.character(packageVersion("roxygen2"))); quit(status = 3)
    }}
    suppressMessages(roxygen2::roxygenise({str(copy)!r}))
    """
    r = subprocess.run([exe, "-e", code], capture_output=True, text=True, timeout=120)
    if r.returncode == 3:
        pytest.skip(f"{r.stdout} is not the RoxygenNote {note}: its output may differ")
    assert r.returncode == 0, r.stderr
    generated = {p.relative_to(copy): p.read_text() for p in (copy / "man").iterdir()}
    committed = {p.relative_to(PACKAGE): p.read_text() for p in (PACKAGE / "man").iterdir()}
    assert generated == committed, "run roxygen2::roxygenise('clients/r/fortclient')"
    assert (copy / "NAMESPACE").read_text() == (PACKAGE / "NAMESPACE").read_text()


# ----- the testthat suite against real services ------------------------------------------------


@pytest.mark.hub
def test_testthat_suite_against_a_real_hub(r_lib, fort_stack, tmp_path):
    stack = fort_stack
    out = tmp_path / "testthat.json"
    code = f"""
    library(fortclient)
    res <- testthat::test_dir({str(PACKAGE / "tests" / "testthat")!r}, package = "fortclient",
                              load_package = "installed", stop_on_failure = FALSE,
                              reporter = "summary")
    jsonlite::write_json(as.data.frame(res)[, c("file", "test", "nb", "failed", "skipped",
                                                "error", "passed")], {str(out)!r})
    """
    env = {
        "FORT_TEST_SERVICES": "1",
        "FORT_SERVICES_URL": stack.services_url,
        "JUPYTERHUB_API_TOKEN": stack.tokens["alice"],
        "FORT_TEST_QUOTA_TOKEN": stack.tokens["quinn"],
        "FORT_TEST_SLOW_SQL": SLOW_SQL,
    }
    for var in ("FORT_QUERY_URL", "FORT_CREDENTIALS_URL", "FORT_GROUPS_URL", "AWS_PROFILE"):
        env[var] = ""
    r = run_r(r_lib, code, env, timeout=180)
    assert out.exists(), r.stdout + r.stderr
    results = json.loads(out.read_text())
    bad = [t for t in results if t["failed"] or t["error"] or t["skipped"]]
    assert not bad, f"{bad}\n{r.stdout[-6000:]}\n{r.stderr[-2000:]}"
    assert {t["file"] for t in results} == {"test-credentials.R", "test-parsing.R", "test-query.R"}
    assert len(results) >= 13 and sum(t["passed"] for t in results) >= 60, results
