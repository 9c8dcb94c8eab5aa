"""#14: what the fort-groups admin page shows (fort_hub.services.groups.view), as data: dates as
the last valid day, the policy's row where decisions use it, and every difference between the
hub group and fort-groups explained (drift, never-signed-in users, unmanaged groups)."""

from __future__ import annotations

import datetime as dt

from fort_hub.policy import parse_policy
from fort_hub.services.groups.reconcile import OWNER_KEY, member_reason, policy_rows
from fort_hub.services.groups.view import (
    EXPIRED,
    EXTRA,
    MISSING,
    NOT_HUB_USER,
    group_views,
)
from fort_hub.store.memberships import Membership

UTC = dt.UTC
NOW = dt.datetime(2026, 12, 2, 12, tzinfo=UTC)
POLICY = parse_policy(
    """
version: 1
groups:
  - name: study
    members:
      - alice
      - {user: carol, expires: 2031-12-31}
      - {user: old, expires: 2026-11-30}
  - name: other
""",
    "p.yaml",
)
MANAGED = {"properties": {OWNER_KEY: {"managed": True}}}


def row(user, expires, source="api", group="study"):
    return Membership(group, user, expires, source, "admin", NOW)


def test_members_dates_sources_and_why_not_in_the_hub_group():
    rows = [
        row("dave", dt.datetime(2027, 1, 1, tzinfo=UTC)),
        # a run-time row for a policy member (possible before #14): the policy's row counts
        row("carol", dt.datetime(2040, 1, 1, tzinfo=UTC)),
        row("erin", None),
    ]
    hub_groups = {"study": {**MANAGED, "users": ["alice", "old", "mallory"]}}
    hub_users = {"alice", "old", "mallory", "dave", "carol"}
    [study, other] = group_views(POLICY, rows, hub_groups, hub_users, NOW)
    shown = [(m.user, m.shown, m.last_day, m.source, m.active, m.in_hub, m.note)
             for m in study.members]  # fmt: skip
    assert shown == [
        ("alice", "never", "", "policy", True, "yes", ""),
        ("carol", "2031-12-31", "2031-12-31", "policy", True, "no", MISSING),
        ("dave", "2026-12-31", "2026-12-31", "api", True, "no", MISSING),
        ("erin", "never", "", "api", True, "no", NOT_HUB_USER),
        ("old", "2026-11-30", "2026-11-30", "policy", False, "yes", EXPIRED),
    ]
    # what decisions use: the first instant no longer valid
    assert study.members[1].expires == dt.datetime(2032, 1, 1, tzinfo=UTC)
    assert study.drift == (("mallory", EXTRA),)
    assert study.hub_note == ""
    assert other.members == () and "does not exist yet" in other.hub_note


def test_an_unmanaged_hub_group_is_named_and_not_explained_as_drift():
    hub_groups = {"study": {"properties": {}, "users": ["alice", "mallory"]}}
    [study, _] = group_views(POLICY, [], hub_groups, {"alice", "mallory"}, NOW)
    assert "not managed by fort-groups" in study.hub_note
    assert study.drift == ()
    assert [(m.user, m.in_hub, m.note) for m in study.members][:2] == [
        ("alice", "yes", ""),
        ("carol", "no", ""),
    ]


def test_hub_unreachable_says_nothing_about_the_hub():
    [study, other] = group_views(POLICY, [], None, None, NOW)
    assert {m.in_hub for m in study.members} == {"?"}
    assert {m.note for m in study.members} == {""}
    assert study.drift == () and study.hub_note == "" and other.hub_note == ""


def test_reconciliation_audits_the_day_entered():
    """The reconciler's audit reason said 'member until 2030-07-01T00:00:00+00:00' for a policy
    date of 2030-06-30."""
    [carol] = [m for m in POLICY.groups["study"].members if m.username == "carol"]
    assert member_reason(carol.expires, POLICY) == "member through 2031-12-31"
    assert member_reason(None, POLICY) == "member"
    odd = dt.datetime(2031, 1, 1, 14, 30, tzinfo=UTC)
    assert member_reason(odd, POLICY) == "member until 2031-01-01 14:30 UTC"


def test_a_run_time_row_for_a_policy_member_is_replaced_by_the_policys():
    """Before #14 re-adding a policy member wrote an ``api`` row the decisions never used;
    reconciliation now rewrites it to the policy's membership, so the store agrees."""
    stale = [row("carol", dt.datetime(2040, 1, 1, tzinfo=UTC)), row("dave", None)]
    upserts, removals = policy_rows(POLICY, stale)
    assert ("study", "carol", dt.datetime(2032, 1, 1, tzinfo=UTC)) in upserts
    assert not [u for u in upserts if u[1] == "dave"] and removals == []
