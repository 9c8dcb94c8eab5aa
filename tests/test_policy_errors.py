"""Table-driven tests of bad policies: every problem is reported with its file, line, dotted key
path and a message saying what is wrong; all problems are collected, not just the first."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from fort_hub.policy import PolicyError, load_policy, parse_policy


class Case(NamedTuple):
    name: str
    text: str
    errors: list[tuple[int, str, str]]  # (line, dotted path, message)


#: the table of bad policies (a data file: 61 policy texts and the errors each must give)
CASES = [
    Case(c["name"], c["text"], [tuple(e) for e in c["errors"]])
    for c in yaml.safe_load((Path(__file__).parent / "policy_error_cases.yaml").read_text())
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
