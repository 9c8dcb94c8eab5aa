"""Table-driven tests of bad policies: every problem is reported with its file, line, dotted key
path and a message saying what is wrong; all problems are collected, not just the first."""

from __future__ import annotations

import textwrap
from typing import NamedTuple

import pytest

from fort_hub.policy import PolicyError, load_policy, parse_policy


class Case(NamedTuple):
    name: str
    text: str
    errors: list[tuple[int, str, str]]  # (line, dotted path, message)


CASES = [
    Case(
        "unknown top key",
        """
        version: 1
        grups: []
        """,
        [
            (
                2,
                "grups",
                "unknown key 'grups' (allowed: aws, contact, datasets, grants, groups, profiles, quotas, timezone, version)",
            )
        ],
    ),
    Case(
        "missing version",
        """
        groups: []
        """,
        [(1, "", "missing required key 'version'")],
    ),
    Case(
        "bad version",
        """
        version: 2
        """,
        [(1, "version", "unsupported policy version 2 (supported: 1)")],
    ),
    Case(
        "not a mapping",
        """
        - version: 1
        """,
        [(1, "", "must be a mapping, not a list")],
    ),
    Case(
        "unknown group key",
        """
        version: 1
        groups:
          - name: a
            membres: [x]
        """,
        [(4, "groups[0].membres", "unknown key 'membres' (allowed: description, members, name)")],
    ),
    Case(
        "group name wrong type",
        """
        version: 1
        groups:
          - name: [a]
        """,
        [(3, "groups[0].name", "must be a non-empty string, not a list")],
    ),
    Case(
        "group name bad chars",
        """
        version: 1
        groups:
          - name: "bad name!"
        """,
        [(3, "groups[0].name", "'bad name!' is not a valid name (letters, digits, ._-)")],
    ),
    Case(
        "duplicate group",
        """
        version: 1
        groups:
          - name: a
          - name: a
        """,
        [(4, "groups[1].name", "duplicate group 'a'")],
    ),
    Case(
        "duplicate member",
        """
        version: 1
        groups:
          - name: a
            members: [x, x]
        """,
        [(4, "groups[0].members[1]", "duplicate member 'x'")],
    ),
    Case(
        "expired typo month 13",
        """
        version: 1
        groups:
          - name: a
            members:
              - user: x
                expires: 2027-13-01
        """,
        [
            (
                6,
                "groups[0].members[0].expires",
                "'2027-13-01' is not a valid date: month must be in 1..12",
            )
        ],
    ),
    Case(
        "expired typo feb 30",
        """
        version: 1
        groups:
          - name: a
            members:
              - user: x
                expires: 2027-02-30
        """,
        [
            (
                6,
                "groups[0].members[0].expires",
                "'2027-02-30' is not a valid date: day is out of range for month",
            )
        ],
    ),
    Case(
        "expires not a date",
        """
        version: 1
        groups:
          - name: a
            members:
              - user: x
                expires: next year
        """,
        [(6, "groups[0].members[0].expires", "must be a date like 2027-01-31, not 'next year'")],
    ),
    Case(
        "timezone unknown",
        """
        version: 1
        timezone: Mars/Olympus
        """,
        [(2, "timezone", "'Mars/Olympus' is not a time zone name like UTC or Europe/Oslo")],
    ),
    Case(
        "expires number",
        """
        version: 1
        groups:
          - name: a
            members:
              - user: x
                expires: 2027
        """,
        [(6, "groups[0].members[0].expires", "must be a date like 2027-01-31, not 2027")],
    ),
    Case(
        "member missing user",
        """
        version: 1
        groups:
          - name: a
            members:
              - expires: 2027-01-01
        """,
        [(5, "groups[0].members[0]", "missing required key 'user'")],
    ),
    Case(
        "dataset unknown engine",
        """
        version: 1
        datasets:
          - name: d
            engine: mysql
        """,
        [(4, "datasets[0].engine", "unknown engine 'mysql' (known: duckdb, athena)")],
    ),
    Case(
        "dataset noise: bad column, distribution and variance",
        """
        version: 1
        datasets:
          - name: d
            engine: athena
            location: {database: db, workgroup: wg}
            noise:
              shares: {distribution: laplace, variance: 196}
              views: {distribution: gaussian, variance: -1}
              "1bad": {distribution: gaussian, variance: 1}
              reactions: {distribution: gaussian}
              likes: 484
        """,
        [
            (
                7,
                "datasets[0].noise.shares.distribution",
                "unknown distribution 'laplace' (known: gaussian)",
            ),
            (8, "datasets[0].noise.views.variance", "must be >= 0, not -1"),
            (9, "datasets[0].noise.1bad", "'1bad' is not a column name"),
            (10, "datasets[0].noise.reactions", "missing required key 'variance'"),
            (11, "datasets[0].noise.likes", "must be a mapping, not int"),
        ],
    ),
    Case(
        "dataset noise not a mapping",
        """
        version: 1
        datasets:
          - name: d
            engine: athena
            location: {database: db, workgroup: wg}
            noise: [shares]
        """,
        [(6, "datasets[0].noise", "must be a mapping, not a list")],
    ),
    Case(
        "dataset missing engine",
        """
        version: 1
        datasets:
          - name: d
        """,
        [(3, "datasets[0]", "missing required key 'engine'")],
    ),
    Case(
        "duplicate dataset",
        """
        version: 1
        datasets:
          - name: d
            engine: duckdb
            location: {database: d.duckdb}
          - name: d
            engine: duckdb
            location: {database: e.duckdb}
        """,
        [(6, "datasets[1].name", "duplicate dataset 'd'")],
    ),
    Case(
        "duckdb both paths and database",
        """
        version: 1
        datasets:
          - name: d
            engine: duckdb
            location: {database: d.duckdb, paths: {t: t.parquet}}
        """,
        [(5, "datasets[0].location", "give exactly one of 'paths' (table -> file) or 'database'")],
    ),
    Case(
        "athena missing workgroup",
        """
        version: 1
        datasets:
          - name: d
            engine: athena
            location: {database: db}
        """,
        [(5, "datasets[0].location", "missing required key 'workgroup'")],
    ),
    Case(
        "bad s3 prefix",
        """
        version: 1
        datasets:
          - name: d
            engine: duckdb
            location: {database: d.duckdb}
            s3_prefixes: [/local/path]
        """,
        [
            (
                6,
                "datasets[0].s3_prefixes[0]",
                "'/local/path' is not an s3:// URI without wildcards or variables (* ? $ { })",
            )
        ],
    ),
    Case(
        "path table not in tables",
        """
        version: 1
        datasets:
          - name: d
            engine: duckdb
            tables: [a]
            location:
              paths: {b: b.parquet}
        """,
        [(7, "datasets[0].location.paths.b", "table 'b' is not in 'tables'")],
    ),
    Case(
        "paths list of mappings",
        """
        version: 1
        datasets:
          - name: d
            engine: duckdb
            location:
              paths: [{a: b}]
        """,
        [(6, "datasets[0].location.paths", "must be a mapping, not a list")],
    ),
    Case(
        "grant unknown group",
        """
        version: 1
        groups: [{name: a}]
        datasets: [{name: d, engine: duckdb, location: {database: d.duckdb}}]
        grants:
          - group: b
            datasets: [d]
            actions: [query]
        """,
        [(5, "grants[0].group", "unknown group 'b'")],
    ),
    Case(
        "grant unknown dataset",
        """
        version: 1
        groups: [{name: a}]
        datasets: [{name: url_shares, engine: duckdb, location: {database: d.duckdb}}]
        grants:
          - group: a
            datasets: [url_shares]
            actions: [query]
          - group: a
            datasets: [url_shares]
            actions: [query]
          - group: a
            datasets: [url_share]
            actions: [query]
        """,
        [(12, "grants[2].datasets[0]", "unknown dataset 'url_share'")],
    ),
    Case(
        "grant unknown action",
        """
        version: 1
        groups: [{name: a}]
        datasets: [{name: d, engine: duckdb, location: {database: d.duckdb}}]
        grants:
          - group: a
            datasets: [d]
            actions: [query, delete]
        """,
        [(7, "grants[0].actions[1]", "unknown action 'delete' (known: query, s3:read, s3:write)")],
    ),
    Case(
        "grant datasets not a list",
        """
        version: 1
        groups: [{name: a}]
        datasets: [{name: d, engine: duckdb, location: {database: d.duckdb}}]
        grants:
          - group: a
            datasets: d
            actions: [query]
        """,
        [(6, "grants[0].datasets", "must be a list, not a string")],
    ),
    Case(
        "grant missing actions",
        """
        version: 1
        groups: [{name: a}]
        datasets: [{name: d, engine: duckdb, location: {database: d.duckdb}}]
        grants:
          - group: a
            datasets: [d]
        """,
        [(5, "grants[0]", "missing required key 'actions'")],
    ),
    Case(
        "profile unknown group",
        """
        version: 1
        groups: [{name: a}]
        profiles:
          - slug: p
            display_name: P
            image: img
            groups: [a, b]
        """,
        [(7, "profiles[0].groups[1]", "unknown group 'b'")],
    ),
    Case(
        "profile missing image",
        """
        version: 1
        profiles:
          - slug: p
            display_name: P
        """,
        [(3, "profiles[0]", "missing required key 'image'")],
    ),
    Case(
        "duplicate profile",
        """
        version: 1
        profiles:
          - {slug: p, display_name: P, image: i}
          - {slug: p, display_name: Q, image: j}
        """,
        [(4, "profiles[1].slug", "duplicate profile 'p'")],
    ),
    Case(
        "two defaults",
        """
        version: 1
        profiles:
          - {slug: p, display_name: P, image: i, default: true}
          - {slug: q, display_name: Q, image: j, default: true}
        """,
        [(4, "profiles[1].default", "only one profile may say 'default: true' (profiles[0] does)")],
    ),
    Case(
        "default not bool",
        """
        version: 1
        profiles:
          - {slug: p, display_name: P, image: i, default: "yes please"}
        """,
        [(3, "profiles[0].default", "must be true or false, not 'yes please'")],
    ),
    Case(
        "memory bad",
        """
        version: 1
        profiles:
          - slug: p
            display_name: P
            image: i
            memory: {guarantee: lots}
        """,
        [(6, "profiles[0].memory.guarantee", "'lots' is not a memory size like 512M or 4G")],
    ),
    Case(
        "cpu guarantee over limit",
        """
        version: 1
        profiles:
          - slug: p
            display_name: P
            image: i
            cpu: {guarantee: 4, limit: 2}
        """,
        [(6, "profiles[0].cpu", "guarantee is larger than limit")],
    ),
    Case(
        "memory guarantee over limit",
        """
        version: 1
        profiles:
          - slug: p
            display_name: P
            image: i
            memory: {guarantee: 8G, limit: 1G}
        """,
        [(6, "profiles[0].memory", "guarantee is larger than limit")],
    ),
    Case(
        "gpu not int",
        """
        version: 1
        profiles:
          - {slug: p, display_name: P, image: i, gpu: 0.5}
        """,
        [(3, "profiles[0].gpu", "must be a whole number, not 0.5")],
    ),
    Case(
        "bad regex",
        """
        version: 1
        profiles:
          - slug: p
            display_name: P
            image: i
            unlisted_choice: {validation_regex: "(["}
        """,
        [
            (
                6,
                "profiles[0].unlisted_choice.validation_regex",
                "invalid regular expression: unterminated character set at position 1",
            )
        ],
    ),
    Case(
        "bad toleration key",
        """
        version: 1
        profiles:
          - slug: p
            display_name: P
            image: i
            tolerations: [{key: k, operater: Exists}]
        """,
        [
            (
                6,
                "profiles[0].tolerations[0].operater",
                "unknown key 'operater' (allowed: effect, key, operator, tolerationSeconds, value)",
            )
        ],
    ),
    Case(
        "user arn not role",
        """
        version: 1
        groups: [{name: a}]
        aws:
          roles:
            a: arn:aws:iam::123456789012:user/alice
        """,
        [
            (
                5,
                "aws.roles.a",
                "'arn:aws:iam::123456789012:user/alice' is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
            )
        ],
    ),
    Case(
        "arn short account",
        """
        version: 1
        groups: [{name: a}]
        aws:
          roles:
            a: arn:aws:iam::1234:role/x
        """,
        [
            (
                5,
                "aws.roles.a",
                "'arn:aws:iam::1234:role/x' is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
            )
        ],
    ),
    Case(
        "role unknown group",
        """
        version: 1
        aws:
          roles:
            ghost: arn:aws:iam::123456789012:role/x
        """,
        [(4, "aws.roles.ghost", "unknown group 'ghost'")],
    ),
    Case(
        "prefix without username",
        """
        version: 1
        aws:
          bucket: fort-user-data
          user_prefix: users/{user}/
        """,
        [(4, "aws.user_prefix", "'users/{user}/' must contain '{username}' exactly once")],
    ),
    Case(
        "prefix other field",
        """
        version: 1
        aws:
          user_prefix: users/{username}/{team}/
        """,
        [
            (
                3,
                "aws.user_prefix",
                "'users/{username}/{team}/' may use only the field '{username}' (no other fields or format specs)",
            )
        ],
    ),
    Case(
        "prefix with a wildcard or format spec (#10)",
        """
        version: 1
        aws:
          user_prefix: "users/*/{username}/{username:*<9}/"
        """,
        [
            (
                3,
                "aws.user_prefix",
                "'users/*/{username}/{username:*<9}/' may use only the field '{username}' (no other fields or format specs)",
            )
        ],
    ),
    Case(
        "prefix where one user's covers another's (#10)",
        """
        version: 1
        aws:
          user_prefix: "users/{username}"
        """,
        [
            (
                3,
                "aws.user_prefix",
                "'users/{username}' must have '/' right after '{username}' (else one user's prefix covers another's)",
            )
        ],
    ),
    Case(
        "prefix with a policy variable (#10)",
        """
        version: 1
        aws:
          user_prefix: "home/$x/{username}/"
        """,
        [
            (
                3,
                "aws.user_prefix",
                "'home/$x/{username}/' may contain only letters, digits, . _ @ + = - and single '/' separators (no wildcard, policy variable or leading '/')",
            )
        ],
    ),
    Case(
        "member with an IAM wildcard (#10)",
        """
        version: 1
        groups:
          - name: g
            members: ["a*", {user: "b?x"}, "ok@example.org"]
        """,
        [
            (
                4,
                "groups[0].members[0]",
                "'a*' (not allowed: '*') is not an allowed username: a username must be 1-128 characters: ASCII letters, digits and . _ @ + - (starting with a letter or digit)",
            ),
            (
                4,
                "groups[0].members[1]",
                "'b?x' (not allowed: '?') is not an allowed username: a username must be 1-128 characters: ASCII letters, digits and . _ @ + - (starting with a letter or digit)",
            ),
        ],
    ),
    Case(
        "member with a reserved name",
        """
        version: 1
        groups:
          - name: g
            members: [jupyterhub, alice]
        """,
        [
            (
                4,
                "groups[0].members[0]",
                "'jupyterhub' is reserved: fort-hub records its own actions in the audit log under it",
            ),
        ],
    ),
    Case(
        "dataset prefix with a wildcard (#10)",
        """
        version: 1
        datasets:
          - name: d
            engine: duckdb
            location: {database: d.duckdb}
            s3_prefixes: ["s3://b-1/users/*/"]
        """,
        [
            (
                6,
                "datasets[0].s3_prefixes[0]",
                "'s3://b-1/users/*/' is not an s3:// URI without wildcards or variables (* ? $ { })",
            )
        ],
    ),
    Case(
        "bad bucket",
        """
        version: 1
        aws:
          bucket: Fort_Data
        """,
        [(3, "aws.bucket", "'Fort_Data' is not a valid S3 bucket name")],
    ),
    Case(
        "unknown aws key",
        """
        version: 1
        aws:
          regoin: eu-west-1
        """,
        [(3, "aws.regoin", "unknown key 'regoin' (allowed: bucket, region, roles, user_prefix)")],
    ),
    Case(
        "quota unknown key",
        """
        version: 1
        quotas:
          defaults:
            queries_per_week: 10
        """,
        [
            (
                4,
                "quotas.defaults.queries_per_week",
                "unknown key 'queries_per_week' (allowed: bytes_scanned_per_day, credential_requests_per_minute, max_concurrent_queries, max_result_rows, queries_per_day)",
            )
        ],
    ),
    Case(
        "quota negative",
        """
        version: 1
        quotas:
          defaults:
            queries_per_day: -1
        """,
        [(4, "quotas.defaults.queries_per_day", "must be >= 0, not -1")],
    ),
    Case(
        "quota not int",
        """
        version: 1
        quotas:
          defaults:
            max_result_rows: many
        """,
        [(4, "quotas.defaults.max_result_rows", "must be a number, not a string")],
    ),
    Case(
        "quota bad size",
        """
        version: 1
        quotas:
          defaults:
            bytes_scanned_per_day: 10 gigabytes
        """,
        [
            (
                4,
                "quotas.defaults.bytes_scanned_per_day",
                "'10 gigabytes' is not a size like 500G or 1Ti",
            )
        ],
    ),
    Case(
        "quota unknown group",
        """
        version: 1
        quotas:
          groups:
            ghost: {queries_per_day: 5}
        """,
        [(4, "quotas.groups.ghost", "unknown group 'ghost'")],
    ),
    Case(
        "duplicate key",
        """
        version: 1
        groups: []
        groups: []
        """,
        [(3, "groups", "duplicate key")],
    ),
    Case(
        "bad yaml",
        """
        version: 1
        groups: [
        """,
        [
            (
                3,
                "",
                "not valid YAML: expected the node content, but found '<stream end>' (column 1, while parsing a flow node)",
            )
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_policy(case):
    text = textwrap.dedent(case.text).lstrip("\n")
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.yaml")
    got = [(e.line, e.path, e.message) for e in info.value.errors]
    assert got == case.errors
    assert {e.file for e in info.value.errors} == {"policy.yaml"}


def test_there_are_at_least_25_cases():
    assert len(CASES) >= 25


def test_issue_text_names_file_line_and_path(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(
        textwrap.dedent(next(c for c in CASES if c.name == "grant unknown dataset").text)
    )
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    [issue] = info.value.errors
    line = path.read_text().splitlines()[issue.line - 1]
    assert line.strip() == "datasets: [url_share]"
    assert str(issue) == f"{path}:{issue.line}: grants[2].datasets[0]: unknown dataset 'url_share'"
    assert str(info.value) == f"1 error(s) in policy:\n  {issue}"


def test_every_error_is_collected_in_line_order():
    text = textwrap.dedent(
        """\
        version: 1
        groups:
          - name: urls-study
            members:
              - user: alice
                expires: 2027-02-31
          - name: urls-study
        datasets:
          - name: url_shares
            engine: duckdb
            location: {database: urls.duckdb}
        grants:
          - group: url-study
            datasets: [url_share]
            actions: [query, write]
        profiles:
          - slug: python
            display_name: Python
            image: img
            groups: [admins]
        aws:
          bucket: fort-user-data
          user_prefix: users/
          roles:
            urls-study: arn:aws:iam::123456789012:policy/fort
        quotas:
          defaults: {queries_per_day: lots}
        """
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    assert [str(e) for e in info.value.errors] == [
        "p.yaml:6: groups[0].members[0].expires: '2027-02-31' is not a valid date: "
        "day is out of range for month",
        "p.yaml:7: groups[1].name: duplicate group 'urls-study'",
        "p.yaml:13: grants[0].group: unknown group 'url-study'",
        "p.yaml:14: grants[0].datasets[0]: unknown dataset 'url_share'",
        "p.yaml:15: grants[0].actions[1]: unknown action 'write' (known: query, s3:read, s3:write)",
        "p.yaml:20: profiles[0].groups[0]: unknown group 'admins'",
        "p.yaml:23: aws.user_prefix: 'users/' must contain '{username}' exactly once",
        "p.yaml:25: aws.roles.urls-study: 'arn:aws:iam::123456789012:policy/fort' is not an IAM "
        "role ARN (arn:aws:iam::<account>:role/<name>)",
        "p.yaml:27: quotas.defaults.queries_per_day: must be a number, not a string",
    ]


def test_empty_and_unreadable_files(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    with pytest.raises(PolicyError, match=r"empty.yaml:1: the policy file is empty"):
        load_policy(empty)
    with pytest.raises(PolicyError, match=r"missing.yaml:0: cannot read the policy file"):
        load_policy(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00version: 1")
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(binary)


def test_recursive_alias_is_an_error_not_a_crash():
    with pytest.raises(PolicyError) as info:
        parse_policy("version: 1\ngroups: &x [*x]\n", "p.yaml")
    assert [str(e) for e in info.value.errors] == [
        "p.yaml:2: groups[0]: a YAML alias refers to a value that contains it (recursion)"
    ]


def test_alias_bomb_is_refused_quickly():
    import time

    lines = ["version: 1", "a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    start = time.monotonic()
    with pytest.raises(PolicyError) as info:
        parse_policy("\n".join(lines), "p.yaml")
    assert time.monotonic() - start < 30
    assert any("the policy is too large" in e.message for e in info.value.errors)


def test_example_policy_is_valid(example_policy_path):
    load_policy(example_policy_path)


KEYS = ["version", "groups", "datasets", "grants", "profiles", "aws", "quotas", "name",
        "members", "user", "expires", "engine", "location", "paths", "database", "tables",
        "group", "actions", "slug", "image", "display_name", "cpu", "memory", "roles",
        "user_prefix", "bucket", "defaults", "guarantee", "limit", "default", "node_selector",
        "tolerations", "unlisted_choice", "validation_regex", "s3_prefixes"]  # fmt: skip


def _documents():
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, width=32),
        st.text(max_size=8), st.sampled_from(["duckdb", "athena", "query", "2027-02-30", "1G"]),
        st.dates(),
    )  # fmt: skip
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
        ),
        max_leaves=25,
    )
    return st.dictionaries(st.sampled_from(KEYS), values, max_size=6).map(
        lambda d: {"version": 1, **d}
    )


def test_the_validator_only_ever_raises_policy_error():
    """Arbitrary structures built from policy keywords: a Policy or a PolicyError, nothing else."""
    import yaml
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_documents())
    def check(doc):
        text = yaml.safe_dump(doc)
        try:
            parse_policy(text, "fuzz.yaml")
        except PolicyError as e:
            assert e.errors
            assert all(isinstance(i.line, int) and i.message for i in e.errors)

    check()


def test_libyaml_and_pure_python_parse_give_the_same_policy_and_lines(monkeypatch):
    """#13: the policy is composed with libyaml when PyYAML has it (a 10,000-user policy took
    1.4 s to compose in pure Python); the policy and every error's line are the same either way."""
    import yaml

    from fort_hub.policy import yamltree
    from tests.conftest import EXAMPLE_POLICY

    assert yamltree.YAML_LOADER is getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    bad = "version: 1\ngroups:\n  - name: g\n    members: [a*]\n"

    def parse_both():
        with pytest.raises(PolicyError) as info:
            parse_policy(bad, "policy.yaml")
        return load_policy(EXAMPLE_POLICY), [(e.line, e.path) for e in info.value.errors]

    fast = parse_both()
    monkeypatch.setattr(yamltree, "YAML_LOADER", yaml.SafeLoader)
    assert parse_both() == fast
    assert fast[1] and all(line == 4 for line, _ in fast[1] if line)
