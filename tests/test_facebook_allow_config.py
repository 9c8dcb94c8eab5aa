"""fort's study-membership check is JupyterHub allow config (finding 8 of issue 12): the hub's
"No allow config found" check sees it, and turning it off leaves only JupyterHub's own allow
rules, on JupyterHub 5.5 and 6."""

from __future__ import annotations

import logging

import pytest

from fort_hub.authenticators.facebook import FacebookLoginError, FacebookOAuthenticator

NO_ALLOW = "No allow config found"


@pytest.fixture
def make_auth(sqlite_url, example_policy_path):
    def make(**kw):
        kw.setdefault("policy_file", str(example_policy_path))
        return FacebookOAuthenticator(
            client_id="1", client_secret="s", store_url=sqlite_url, strip_email_domains={"x"}, **kw
        )

    return make


def warnings_of(auth, caplog) -> str:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        auth.log = logging.getLogger("test-allow-config")
        auth.check_allow_config()
    return caplog.text


def test_membership_check_is_allow_config(make_auth, caplog):
    auth = make_auth()
    assert "allow_study_members" in auth.traits(allow_config=True)
    assert auth.any_allow_config is True
    assert NO_ALLOW not in warnings_of(auth, caplog)


def test_without_it_jupyterhub_warns_and_members_are_refused(make_auth, caplog):
    auth = make_auth(allow_study_members=False)
    assert auth.any_allow_config is False
    assert NO_ALLOW in warnings_of(auth, caplog)


def test_on_without_a_policy_file_says_nobody_can_log_in(make_auth, caplog):
    text = warnings_of(make_auth(policy_file=""), caplog)
    assert "policy_file is not set" in text and "no study member can log in" in text


async def test_allow_study_members_decides_for_a_policy_member(make_auth):
    model = {"name": "alice", "admin": False, "auth_state": {}}
    assert await make_auth().check_allowed("alice", model) is True  # urls-study in the policy
    with pytest.raises(FacebookLoginError, match="no study membership"):
        await make_auth(allow_study_members=False).check_allowed("alice", model)
    # JupyterHub's own allow rules still admit, in addition
    auth = make_auth(allow_study_members=False, allowed_users={"alice"})
    assert await auth.check_allowed("alice", model) is True
