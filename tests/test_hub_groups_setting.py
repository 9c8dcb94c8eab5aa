"""``FortSettings.hub_groups`` (``$FORT_HUB_GROUPS``, ``custom.fort.hubGroups``): whether fort
keeps study memberships in hub groups. Parsing and start-up errors, what the hub passes to its
services, the admin page's data for a group kept in the store only, and the sign-in's join.
The services' side against a real hub is in tests/test_groups_copy_off.py."""

from __future__ import annotations

import datetime as dt
import sys

import pytest
from traitlets import TraitError
from traitlets.config import Config

from fort_hub import deploy
from fort_hub.config import FortSettings
from fort_hub.services.groups.view import NOT_COPIED, group_views
from tests.test_deploy_values import run_snippets, z2jh_module
from tests.test_groups_view import MANAGED, NOW, POLICY, row


@pytest.mark.parametrize(("value", "expected"), [
    ("", False), ("true", True), ("False", False), (" 0 ", False), ("yes", True), ("off", False),
])  # fmt: skip
def test_the_variable_sets_the_default(monkeypatch, value, expected):
    monkeypatch.setenv("FORT_HUB_GROUPS", value)
    assert FortSettings().hub_groups is expected


def test_a_variable_that_is_not_yes_or_no_is_an_error_naming_it(monkeypatch):
    monkeypatch.setenv("FORT_HUB_GROUPS", "maybe")
    with pytest.raises(TraitError, match=r"\$FORT_HUB_GROUPS must be true or false, not 'maybe'"):
        FortSettings().hub_groups  # noqa: B018


def test_with_the_copy_off_only_the_admin_group_is_copied():
    on, off = FortSettings(hub_groups=True), FortSettings(admin_group="staff")  # off: default
    assert on.copies_to_hub("urls-study") and on.copies_to_hub("staff")
    assert not off.copies_to_hub("urls-study") and off.copies_to_hub("staff")


def services_env(c: Config) -> dict[str, str]:
    return {s["name"]: s["environment"].get("FORT_HUB_GROUPS") for s in c.JupyterHub.services}


def test_the_hub_passes_its_setting_to_the_services_it_runs(monkeypatch):
    monkeypatch.setattr(deploy, "_z2jh_get_config", lambda: None)
    monkeypatch.delenv("FORT_HUB_GROUPS", raising=False)
    c = run_snippets(Config(), check=False)
    assert c.FortSettings.hub_groups is False  # the default: no hub copy
    assert set(services_env(c).values()) == {"false"}
    monkeypatch.setenv("FORT_HUB_GROUPS", "true")
    c = run_snippets(Config(), check=False)
    assert c.FortSettings.hub_groups is True
    assert set(services_env(c).values()) == {"true"}


def test_the_hubs_own_config_wins_and_reaches_the_services(monkeypatch):
    monkeypatch.setattr(deploy, "_z2jh_get_config", lambda: None)
    monkeypatch.setenv("FORT_HUB_GROUPS", "false")  # the variable, overridden by hub.config
    c = Config()
    c.FortSettings.hub_groups = True
    run_snippets(c, check=False)
    assert c.FortSettings.hub_groups is True
    assert set(services_env(c).values()) == {"true"}


def test_chart_values_turn_the_copy_on(monkeypatch):
    values = {"custom": {"fort": {"hubGroups": True}}}
    monkeypatch.setitem(sys.modules, "z2jh", z2jh_module(values))
    monkeypatch.setattr(deploy, "_z2jh_get_config", lambda: z2jh_module(values).get_config)
    c = run_snippets(Config(), check=False)
    assert c.FortSettings.hub_groups is True
    assert set(services_env(c).values()) == {"true"}


def test_a_chart_value_that_is_not_yes_or_no_stops_the_hub_naming_it(monkeypatch):
    values = {"custom": {"fort": {"hubGroups": "sometimes"}}}
    monkeypatch.setattr(deploy, "_z2jh_get_config", lambda: z2jh_module(values).get_config)
    with pytest.raises(ValueError, match=r"custom\.fort\.hubGroups \(\$FORT_HUB_GROUPS\) must be"):
        run_snippets(Config(), check=False)


def test_a_group_kept_in_the_store_only_shows_its_members_and_says_so():
    rows = [row("dave", dt.datetime(2027, 1, 1, tzinfo=dt.UTC)), row("erin", None)]
    # a leftover hub group with a member: nothing of it is shown as drift or as missing
    hub_groups = {"study": {**MANAGED, "users": ["alice", "mallory"]}}
    views = group_views(POLICY, rows, hub_groups, {"alice", "dave"}, NOW,
                        copies=lambda group: group == "other")  # fmt: skip
    study, other = views
    assert study.hub_note == NOT_COPIED and study.drift == ()
    assert (study.hub_note_kind, other.hub_note_kind) == ("info", "warning")  # a setting, a fault
    assert [(m.user, m.source, m.active, m.in_hub, m.note) for m in study.members] == [
        ("alice", "policy", True, "—", ""),
        ("carol", "policy", True, "—", ""),
        ("dave", "api", True, "—", ""),
        ("erin", "api", True, "—", ""),
        ("old", "policy", False, "—", ""),
    ]
    assert other.hub_note != NOT_COPIED  # the copied group: as before (it does not exist yet)


def test_the_chart_admin_group_reaches_the_hub_role_and_the_services(monkeypatch):
    """``custom.fort.adminGroup`` named the fort-admin role's group for the hub only; the
    services kept `admins`, so with the copy off fort-groups emptied the role's real group and
    locked the admins out (found in review)."""
    values = {"custom": {"fort": {"adminGroup": "platform-admins", "hubGroups": False}}}
    monkeypatch.setattr(deploy, "_z2jh_get_config", lambda: z2jh_module(values).get_config)
    c = run_snippets(Config(), check=False)
    assert c.FortSettings.admin_group == "platform-admins"
    envs = [s["environment"] for s in c.JupyterHub.services]
    assert {e["FORT_ADMIN_GROUP"] for e in envs} == {"platform-admins"}
    [role] = [r for r in c.JupyterHub.load_roles if r["name"] == "fort-admin"]
    assert role["groups"] == ["platform-admins"]
    monkeypatch.setenv("FORT_ADMIN_GROUP", envs[0]["FORT_ADMIN_GROUP"])  # as a service starts
    service = FortSettings(hub_groups=False)
    assert service.copies_to_hub("platform-admins") and not service.copies_to_hub("admins")


def test_a_deployments_own_service_entry_follows_the_hubs_shared_settings(monkeypatch):
    """Run again after the hub's config changed (Z2JH's extraConfig): fort's entries keep
    their environment but take the hub's current hub_groups and admin group."""
    monkeypatch.setattr(deploy, "_z2jh_get_config", lambda: None)
    monkeypatch.delenv("FORT_HUB_GROUPS", raising=False)
    c = run_snippets(Config(), check=False)
    assert set(services_env(c).values()) == {"false"}
    c.JupyterHub.services[0]["environment"]["MINE"] = "kept"
    c.FortSettings.hub_groups = True
    run_snippets(c, check=False)
    assert set(services_env(c).values()) == {"true"}
    assert c.JupyterHub.services[0]["environment"]["MINE"] == "kept"
