"""Decisions over the example policy, compared as data."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest

from fort_hub.naming import UnsafeName
from fort_hub.policy import Decision, Quota, parse_policy

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 25, 12, tzinfo=UTC)
URLS = ["urls-study"]
ADS = ["ads-study"]


@pytest.mark.parametrize(
    "user, groups, action, resource, expected",
    [
        # query
        ("alice", URLS, "query", "url_shares",
         (True, "grants[0] gives 'query' on 'url_shares' to 'urls-study'")),
        ("alice", URLS, "query", "url_shares.url_shares",
         (True, "grants[0] gives 'query' on 'url_shares' to 'urls-study'")),
        ("alice", URLS, "query", "url_shares.secret", (False, "dataset 'url_shares' has no table 'secret'")),
        ("alice", URLS, "query", "ads_targeting",
         (False, "no grant gives 'query' on dataset 'ads_targeting' to groups ['urls-study']")),
        ("alice", URLS, "query", "nope", (False, "unknown dataset 'nope'")),
        ("bob", ["ads-study", "urls-study"], "query", "url_shares",
         (True, "grants[0] gives 'query' on 'url_shares' to 'urls-study'")),
        ("eve", [], "query", "url_shares",
         (False, "no grant gives 'query' on dataset 'url_shares' to groups []")),
        ("eve", ["made-up"], "query", "url_shares",
         (False, "no grant gives 'query' on dataset 'url_shares' to groups []")),
        # s3 by dataset name and by URI
        ("alice", URLS, "s3:read", "url_shares",
         (True, "grants[0] gives 's3:read' on 'url_shares' to 'urls-study'")),
        ("alice", URLS, "s3:write", "url_shares",
         (False, "no grant gives 's3:write' on dataset 'url_shares' to groups ['urls-study']")),
        ("admin", ["admins"], "s3:write", "s3://fort-datasets/url_shares/part-0.parquet",
         (True, "grants[2] gives 's3:write' on 'url_shares' to 'admins'")),
        ("alice", URLS, "s3:read", "s3://fort-datasets/url_shares/part-0.parquet",
         (True, "grants[0] gives 's3:read' on 'url_shares' to 'urls-study'")),
        ("alice", URLS, "s3:read", "s3://fort-datasets/url_shares_private/x",
         (False, "no grant gives 's3:read' on 's3://fort-datasets/url_shares_private/x' to groups ['urls-study']")),
        ("alice", URLS, "s3:read", "s3://fort-datasets/ads_targeting/x",
         (False, "no grant gives 's3:read' on 's3://fort-datasets/ads_targeting/x' to groups ['urls-study']")),
        ("alice", [], "s3:write", "s3://fort-user-data/users/alice/notes.txt",
         (True, "'s3://fort-user-data/users/alice/notes.txt' is under the user's own prefix")),
        ("alice", [], "s3:read", "s3://fort-user-data/users/bob/notes.txt",
         (False, "no grant gives 's3:read' on 's3://fort-user-data/users/bob/notes.txt' to groups []")),
        ("alice", [], "s3:read", "s3://fort-user-data/users/alice2/x",
         (False, "no grant gives 's3:read' on 's3://fort-user-data/users/alice2/x' to groups []")),
        # spawn
        ("eve", [], "spawn", "python", (True, "profile 'python' is available to []")),
        ("alice", URLS, "spawn", "urls-large", (True, "profile 'urls-large' is available to ['urls-study']")),
        ("bob", ADS, "spawn", "urls-large",
         (False, "profile 'urls-large' is not available to groups ['ads-study']")),
        ("bob", ADS, "spawn", "custom", (False, "profile 'custom' is not available to groups ['ads-study']")),
        # assume-role, by name or ARN
        ("alice", URLS, "assume-role", "fort-urls-study",
         (True, "role 'fort-urls-study' belongs to one of ['urls-study']")),
        ("alice", URLS, "assume-role", "arn:aws:iam::123456789012:role/fort-urls-study",
         (True, "role 'arn:aws:iam::123456789012:role/fort-urls-study' belongs to one of ['urls-study']")),
        ("alice", URLS, "assume-role", "fort-admins",
         (False, "role 'fort-admins' is not given to groups ['urls-study']")),
        # unknown action
        ("admin", ["admins"], "drop", "url_shares",
         (False, "unknown action 'drop' (known: query, s3:read, s3:write, spawn, assume-role)")),
    ],
)  # fmt: skip
def test_authorize(example_policy, user, groups, action, resource, expected):
    decision = example_policy.authorize(user, groups, action, resource, now=NOW)
    assert (decision.allowed, decision.reason) == expected
    assert bool(decision) is expected[0]


def test_static_member_expiry_is_valid_through_that_day(example_policy):
    # carol: urls-study until 2030-06-30 (inclusive, UTC)
    last_second = dt.datetime(2030, 6, 30, 23, 59, 59, tzinfo=UTC)
    first_after = dt.datetime(2030, 7, 1, tzinfo=UTC)
    assert example_policy.authorize("carol", URLS, "query", "url_shares", now=last_second)
    assert not example_policy.authorize("carol", URLS, "query", "url_shares", now=first_after)
    # the expiry of a static membership applies even when the caller says she is a member
    assert example_policy.effective_groups("carol", URLS + ADS, first_after) == ["ads-study"]
    assert example_policy.groups_of("carol", last_second) == ["urls-study", "ads-study"]
    assert example_policy.groups_of("carol", first_after) == ["ads-study"]


def test_groups_mapping_expiry(example_policy):
    groups = {"urls-study": dt.date(2026, 11, 24), "ads-study": dt.date(2026, 11, 25),
              "admins": dt.datetime(2026, 11, 25, 11, 59), "nope": None}  # fmt: skip
    assert example_policy.effective_groups("bob", groups, NOW) == ["ads-study"]
    assert not example_policy.authorize("bob", groups, "query", "url_shares", now=NOW)
    assert example_policy.authorize("bob", groups, "query", "ads_targeting", now=NOW)
    midnight = dt.datetime(2026, 11, 26, tzinfo=UTC)  # 2026-11-25 was the last valid day
    assert example_policy.effective_groups(
        "bob", groups, midnight - dt.timedelta(microseconds=1)
    ) == ["ads-study"]
    assert example_policy.effective_groups("bob", groups, midnight) == []


def test_profiles_for(example_policy):
    def slugs(groups, **kw):
        return [p.slug for p in example_policy.profiles_for(groups, **kw)]

    assert slugs([]) == ["python"]
    assert slugs(URLS) == ["python", "urls-large", "gpu"]
    assert slugs(ADS) == ["python", "gpu"]
    assert slugs(["admins"]) == ["python", "custom"]
    assert slugs(URLS, user="carol", now=dt.datetime(2031, 1, 1, tzinfo=UTC)) == ["python"]
    python = example_policy.profiles_for([])[0]
    assert (python.default, python.cpu_guarantee, python.cpu_limit) == (True, 0.5, 2.0)
    assert (python.mem_guarantee, python.mem_limit) == ("1G", "4G")
    gpu = example_policy.profiles_for(ADS)[1]
    assert gpu.gpu == 1
    assert gpu.node_selector == {"node.kubernetes.io/instance-type": "g5.xlarge"}
    assert gpu.tolerations == (
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    )
    custom = example_policy.profiles_for(["admins"])[1]
    assert custom.unlisted_choice == {
        "display_name": "Image from quay.io/jupyter",
        "validation_regex": "^quay\\.io/jupyter/[a-z-]+:[A-Za-z0-9._-]+$",
    }


def test_roles_for(example_policy):
    assert example_policy.roles_for(["admins", "urls-study", "nope"]) == {
        "fort-admins": "arn:aws:iam::123456789012:role/fort-admins",
        "fort-urls-study": "arn:aws:iam::123456789012:role/fort-urls-study",
    }
    assert example_policy.roles_for([]) == {}
    assert (
        example_policy.roles_for(URLS, user="carol", now=dt.datetime(2031, 1, 1, tzinfo=UTC)) == {}
    )
    assert example_policy.role_groups("fort-ads-study") == ["ads-study"]
    assert example_policy.role_groups("arn:aws:iam::123456789012:role/fort-ads-study") == [
        "ads-study"
    ]


def test_grants_and_datasets_for(example_policy):
    assert example_policy.grants_for(URLS) == {"url_shares": ["query", "s3:read"]}
    assert example_policy.grants_for(["admins"]) == {
        "ads_targeting": ["query", "s3:read", "s3:write"],
        "url_shares": ["query", "s3:read", "s3:write"],
    }
    assert example_policy.datasets_for(URLS + ADS) == ["url_shares", "ads_targeting"]
    assert example_policy.datasets_for(URLS, "s3:write") == []


QUOTA_POLICY = textwrap.dedent(
    """\
    version: 1
    groups: [{name: big}, {name: strict}, {name: plain}]
    quotas:
      defaults: {max_concurrent_queries: 2, queries_per_day: 500, bytes_scanned_per_day: 1Ti,
                 max_result_rows: 100000, credential_requests_per_minute: 60}
      groups:
        big: {max_concurrent_queries: 8, bytes_scanned_per_day: 10Ti}
        strict: {queries_per_day: 50, max_result_rows: 10, credential_requests_per_minute: 100}
    """
)


@pytest.mark.parametrize(
    "groups, expected",
    [
        ([], (2, 500, 2**40, 100_000, 60)),
        (["plain"], (2, 500, 2**40, 100_000, 60)),
        (["big"], (8, 500, 10 * 2**40, 100_000, 60)),
        (["strict"], (2, 50, 2**40, 10, 100)),
        # several overrides: each limit is the most generous among them (an override starts
        # from the defaults, so 'big' brings the default queries_per_day back for this user)
        (["big", "strict"], (8, 500, 10 * 2**40, 100_000, 100)),
        # a group without an override does not dilute one that has it
        (["plain", "strict"], (2, 50, 2**40, 10, 100)),
    ],
)
def test_quota_for_most_generous_override(groups, expected):
    policy = parse_policy(QUOTA_POLICY, "q.yaml")
    assert tuple(policy.quota_for(groups).as_dict().values()) == expected


def test_example_quotas(example_policy):
    assert example_policy.quota_for(URLS) == Quota(2, 500, 100 * 10**9, 1_000_000, 60)
    assert example_policy.quota_for(["admins"]).as_dict() == {
        "max_concurrent_queries": 8, "queries_per_day": 5000,
        "bytes_scanned_per_day": 100 * 10**9, "max_result_rows": 1_000_000,
        "credential_requests_per_minute": 60,
    }  # fmt: skip


def test_user_prefix(example_policy):
    assert example_policy.user_prefix("alice") == "s3://fort-user-data/users/alice/"
    assert parse_policy("version: 1\n").user_prefix("alice") == ""
    custom = parse_policy("version: 1\naws: {bucket: b-1, user_prefix: 'home/{username}/data/'}\n")
    assert custom.user_prefix("bob") == "s3://b-1/home/bob/data/"
    assert custom.authorize("bob", [], "s3:write", "s3://b-1/home/bob/data/f").allowed
    # a username that would widen the prefix is refused, and never authorizes a path
    with pytest.raises(UnsafeName, match=r"'a\*' \(not allowed: '\*'\)"):
        custom.user_prefix("a*")
    assert not custom.authorize("a*", [], "s3:write", "s3://b-1/home/a*/data/f").allowed


def test_data_paths_resolve_against_the_policy_file(example_policy, example_policy_path):
    base = example_policy_path.parent.resolve()
    ds = example_policy.datasets["url_shares"]
    assert ds.location == {"paths": {"url_shares": str(base / "data" / "url_shares.parquet")}}
    assert ds.s3_prefixes == ("s3://fort-datasets/url_shares/",)
    assert ds.tables == ("url_shares",) and ds.engine == "duckdb"


def test_athena_location_and_defaults():
    policy = parse_policy(
        textwrap.dedent(
            """\
            version: 1
            datasets:
              - name: ads
                engine: athena
                tables: [ads]
                location: {database: fort, workgroup: fort-wg}
                s3_prefixes: [s3://fort-datasets/ads]
            """
        )
    )
    ds = policy.datasets["ads"]
    assert ds.location == {"catalog": "AwsDataCatalog", "database": "fort", "workgroup": "fort-wg"}
    assert ds.s3_prefixes == ("s3://fort-datasets/ads/",)  # a trailing slash is added
    assert policy.default_quota == Quota()
    assert policy.aws.region == "us-east-1"


def test_decision_is_plain_data():
    assert Decision(True, "x") == Decision(True, "x")
    assert not Decision(False, "no")
