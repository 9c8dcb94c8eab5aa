"""The services' logs never print an OAuth ``code`` or ``state`` in clear: a reloaded (or
forged) ``oauth_callback`` is refused and logged by path only, as every other request."""

from __future__ import annotations

import contextlib
import logging

import pytest
import requests

from fort_hub import scopes
from fort_hub.redaction import redact
from tests.fortstack import services_behind_hub, url

SECRETS = ("c0de5ecretvalue", "5tate5ecretvalue")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from services_behind_hub(tmp_path_factory.mktemp("logs"))


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def captured(env):
    """Every line the services (and tornado, in this process) log meanwhile."""
    handler = Lines()
    loggers = [app.log for app in env["apps"].values()]
    loggers += [logging.getLogger(n) for n in ("", "tornado.access", "tornado.general",
                                               "tornado.application")]  # fmt: skip
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield handler.lines
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


@pytest.mark.parametrize("service", [scopes.GROUPS_SERVICE, scopes.QUERY_SERVICE])
def test_a_replayed_oauth_callback_logs_no_code_or_state(env, service):
    with captured(env) as lines:
        r = requests.get(
            url(env, service, f"oauth_callback?code={SECRETS[0]}&state={SECRETS[1]}"), timeout=30
        )
    assert r.status_code == 403  # no state cookie: "oauth state does not match"
    text = "\n".join(lines)
    assert f"/services/{service}/oauth_callback" in text  # the refusal is logged...
    assert not [s for s in SECRETS if s in text], text  # ...without the secrets


@pytest.mark.parametrize(
    "line",
    [  # the lines JupyterHub, OAuthenticator and tornado print, with the secrets in them
        f"oauth state argument '{SECRETS[1]}' != cookie service-x-oauth-state='{SECRETS[0]}'",
        f"OAuth state mismatch: {SECRETS[0]} != {SECRETS[1]}",
        f"Failed to b64-decode state: b'{SECRETS[1]}'",
        f"400 GET /hub/oauth_callback?code={SECRETS[0]}&state={SECRETS[1]} (127.0.0.1): missing",
    ],
)
def test_redaction_removes_oauth_secrets_from_library_messages(line):
    redacted = redact(line)
    assert "[redacted]" in redacted
    assert not [s for s in SECRETS if s in redacted], redacted
