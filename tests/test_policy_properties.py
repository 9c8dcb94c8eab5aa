"""Property tests: ``authorize`` never allows what no (unexpired) grant allows."""

from __future__ import annotations

import datetime as dt

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fort_hub.policy import (
    DATASET_ACTIONS,
    AwsSettings,
    Dataset,
    Grant,
    Group,
    Member,
    Policy,
    parse_policy,
)

UTC = dt.UTC
BASE = dt.datetime(2026, 11, 25, tzinfo=UTC)
GROUPS = [f"g{i}" for i in range(5)]
DATASETS = [f"d{i}" for i in range(4)]
USERS = ["alice", "bob", "carol"]
ACTIONS = [*DATASET_ACTIONS, "spawn", "assume-role", "bogus"]

days = st.integers(min_value=-5, max_value=5)
maybe_expiry = st.one_of(st.none(), days.map(lambda d: (BASE + dt.timedelta(days=d)).date()))


@st.composite
def policies(draw):
    groups = {}
    for g in GROUPS:
        members = draw(st.lists(st.tuples(st.sampled_from(USERS), maybe_expiry), max_size=3,
                                unique_by=lambda m: m[0]))  # fmt: skip
        groups[g] = Group(g, members=tuple(Member(u, _expiry(e)) for u, e in members))
    datasets = {
        d: Dataset(d, "duckdb", tables=("t1", "t2"), s3_prefixes=(f"s3://data/{d}/",))
        for d in DATASETS
    }
    grants = tuple(
        Grant(
            draw(st.sampled_from(GROUPS)),
            tuple(draw(st.lists(st.sampled_from(DATASETS), min_size=1, max_size=3))),
            tuple(draw(st.lists(st.sampled_from(DATASET_ACTIONS), min_size=1, max_size=3))),
            i,
        )
        for i in range(draw(st.integers(0, 6)))
    )
    return Policy(groups=groups, datasets=datasets, grants=grants,
                  aws=AwsSettings(bucket="home", roles={}))  # fmt: skip


def _expiry(date):
    return (
        None if date is None else dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), UTC)
    )


resources = st.one_of(
    st.sampled_from(DATASETS + ["nope"]),
    st.tuples(st.sampled_from(DATASETS), st.sampled_from(["t1", "t2", "t3"])).map(".".join),
    st.tuples(st.sampled_from(DATASETS + ["other"]), st.text("abc/", max_size=5)).map(
        lambda t: f"s3://data/{t[0]}/{t[1]}"
    ),
    st.sampled_from(USERS).map(lambda u: f"s3://home/users/{u}/x"),
)
memberships = st.one_of(
    st.lists(st.sampled_from(GROUPS + ["undeclared"]), max_size=4),
    st.dictionaries(st.sampled_from(GROUPS + ["undeclared"]), maybe_expiry, max_size=4),
)


def oracle(policy, user, groups, action, resource, now):
    """An independent, brute-force reading of the policy: which grants apply?"""
    items = groups.items() if isinstance(groups, dict) else [(g, None) for g in groups]
    live = set()
    for g, exp in items:
        if g not in policy.groups:
            continue
        if exp is not None and _expiry(exp) <= now:
            continue
        static = [m for m in policy.groups[g].members if m.username == user]
        if static and static[0].expires is not None and static[0].expires <= now:
            continue
        live.add(g)
    if action not in DATASET_ACTIONS:
        return None  # not a dataset decision
    if resource.startswith("s3://"):
        if action == "query":
            return False
        if resource.startswith(f"s3://home/users/{user}/"):
            return True
        ds = resource.split("/")[3]
        if not resource.startswith(f"s3://data/{ds}/") or ds not in policy.datasets:
            return False
    else:
        ds, _, table = resource.partition(".")
        if ds not in policy.datasets or (table and table not in policy.datasets[ds].tables):
            return False
    return any(g.group in live and ds in g.datasets and action in g.actions for g in policy.grants)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policies(), st.sampled_from(USERS), memberships, st.sampled_from(ACTIONS), resources,
    st.tuples(days, st.sampled_from([0, 12])).map(
        lambda t: BASE + dt.timedelta(days=t[0], hours=t[1])  # midnight: the expiry boundary
    ),
)  # fmt: skip
def test_authorize_allows_exactly_what_a_live_grant_allows(
    policy, user, groups, action, resource, now
):
    decision = policy.authorize(user, groups, action, resource, now=now)
    expected = oracle(policy, user, groups, action, resource, now)
    if expected is None:  # spawn / assume-role / unknown: no profile or role is declared here
        assert not decision.allowed, decision.reason
        return
    assert decision.allowed == expected, decision.reason


@settings(max_examples=300, deadline=None)
@given(
    policies(), st.sampled_from(USERS), st.sampled_from(DATASET_ACTIONS), resources,
    st.lists(st.sampled_from(GROUPS), min_size=1, max_size=5),
    st.integers(0, 5), st.booleans(),
)  # fmt: skip
def test_expired_memberships_are_never_used(policy, user, action, resource, groups, ago, static):
    """Every membership expired (by the groups mapping, or by the policy's own member list):
    nothing is allowed except the user's own storage prefix."""
    now = BASE + dt.timedelta(hours=1)
    expired_on = (now - dt.timedelta(days=ago + 1)).date()
    if static:
        gs = {
            name: Group(name, members=(Member(user, _expiry(expired_on)),))
            for name in policy.groups
        }
        policy = Policy(groups=gs, datasets=policy.datasets, grants=policy.grants, aws=policy.aws)
        arg = groups
    else:
        arg = dict.fromkeys(groups, expired_on)
    decision = policy.authorize(user, arg, action, resource, now=now)
    own = resource.startswith(f"s3://home/users/{user}/") and action != "query"
    assert decision.allowed == own, decision.reason
    assert policy.effective_groups(user, arg, now) == []
    assert policy.profiles_for(arg, user=user, now=now) == [
        p for p in policy.profiles if not p.groups
    ]


@settings(max_examples=60, deadline=None)
@given(policies(), st.sampled_from(USERS), memberships, st.sampled_from(DATASET_ACTIONS), resources)
def test_the_loader_builds_the_same_decisions(policy, user, groups, action, resource):
    """The same policy written as YAML and loaded decides the same."""
    doc = {
        "version": 1,
        "groups": [
            {"name": g.name, "members": [
                {"user": m.username,
                 **({"expires": (m.expires - dt.timedelta(days=1)).date()} if m.expires else {})}
                for m in g.members
            ]}
            for g in policy.groups.values()
        ],
        "datasets": [
            {"name": d.name, "engine": "duckdb", "tables": list(d.tables),
             "location": {"database": "x.duckdb"}, "s3_prefixes": list(d.s3_prefixes)}
            for d in policy.datasets.values()
        ],
        "grants": [
            {"group": g.group, "datasets": list(g.datasets), "actions": list(g.actions)}
            for g in policy.grants
        ],
        "aws": {"bucket": "home"},
    }  # fmt: skip
    loaded = parse_policy(yaml.safe_dump(doc), "gen.yaml")
    now = BASE + dt.timedelta(hours=6)
    assert loaded.authorize(user, groups, action, resource, now=now) == policy.authorize(
        user, groups, action, resource, now=now
    )
