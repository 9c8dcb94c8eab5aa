"""irsa mode's names and trust policies, as data: each study role trusts only the
ServiceAccounts of its own groups' members (left alone in stop 26: every role trusted
``fort:fort-*``, so a notebook could assume any study role with its own token).

AWS evaluates the trust policy; nothing here reaches IAM. What is checked is that the names
fort gives pods and the patterns it tells admins to trust cannot cross groups, under IAM's
``StringLike`` rule (``*`` matches any run of characters, ``?`` any one)."""

from __future__ import annotations

import fnmatch
import itertools
import json

import pytest

from fort_hub.cli import main
from fort_hub.spawners.identity import (
    group_slug,
    irsa_grant,
    irsa_role_held,
    irsa_trust_policies,
    irsa_trust_policy,
    service_account_name,
)
from fort_hub.spawners.kubernetes import FortKubeSpawner

OIDC = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
ISSUER = "oidc.eks.us-east-1.amazonaws.com/id/ABC"
URLS = "arn:aws:iam::123456789012:role/fort-urls-study"
ADS = "arn:aws:iam::123456789012:role/fort-ads-study"
ADMINS = "arn:aws:iam::123456789012:role/fort-admins"


def string_like(pattern: str, value: str) -> bool:
    """IAM's StringLike: case-sensitive, * and ? wildcards, no character classes."""
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def subjects(trust: dict) -> list[str]:
    (statement,) = trust["Statement"]
    return statement["Condition"]["StringLike"][f"{ISSUER}:sub"]


def test_the_example_policys_trust_policies_are_per_group(example_policy):
    trust = irsa_trust_policies(example_policy, OIDC, "fort", "fort")
    assert set(trust) == {URLS, ADS, ADMINS}
    assert trust[URLS] == {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": OIDC},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {f"{ISSUER}:aud": "sts.amazonaws.com"},
                "StringLike": {f"{ISSUER}:sub": ["system:serviceaccount:fort:fort.urls-study.*"]},
            },
        }],
    }  # fmt: skip
    assert subjects(trust[ADS]) == ["system:serviceaccount:fort:fort.ads-study.*"]


#: group names the policy allows (letters, digits, ._-), chosen to collide if parts could
GROUPS = ["a", "a.b", "a-b", "A", "a--b", "a---b", "b", "urls-study", "urls-study.x", "urls_study"]
#: user slugs kubespawner's safe_slug makes (no dots; hashed ones hold "---")
USERS = ["alice", "b", "a-b", "b---1a2b3c4d", "x-a", "study--x"]


def test_no_member_of_one_group_matches_another_groups_trust():
    for mine, other in itertools.product(GROUPS, repeat=2):
        patterns = subjects(irsa_trust_policy(OIDC, "fort", "fort", [other]))
        for user in USERS:
            sub = f"system:serviceaccount:fort:{service_account_name('fort', mine, user)}"
            matched = any(string_like(p, sub) for p in patterns)
            assert matched == (mine == other), (mine, other, user)


def test_group_slugs_are_dns_safe_dot_free_and_distinct():
    slugs = [group_slug(g) for g in GROUPS]
    assert len(set(slugs)) == len(GROUPS)
    assert all("." not in s and s == s.lower() and len(s) <= 63 for s in slugs)
    assert group_slug("urls-study") == "urls-study"  # a DNS label stays as it is
    assert group_slug("urls_study").startswith("urls-study---")


def test_the_role_follows_the_first_group_and_is_held_while_any_group_grants_it(
    example_policy,
):
    assert irsa_grant(example_policy, ["ads-study", "urls-study"]) == ("urls-study", URLS)
    assert irsa_grant(example_policy, []) is None
    assert irsa_role_held(example_policy, ["ads-study", "urls-study"], URLS)
    assert not irsa_role_held(example_policy, ["ads-study"], URLS)


@pytest.mark.parametrize("template", [
    "fort-{username}",  # the old default: one name for every group
    "fort.{username}.{group}",
    "fort.{group}-{username}",
    "Fort.{group}.{username}",
    "a.b.{group}.{username}",
])  # fmt: skip
def test_a_template_that_could_cross_groups_is_refused_naming_the_setting(template):
    with pytest.raises(ValueError, match="service_account_name_template"):
        FortKubeSpawner(service_account_name_template=template, _mock=True)


@pytest.mark.parametrize(("args", "message"), [
    (["--oidc-provider", "arn:aws:iam::1:role/x"], "not an IAM OIDC provider ARN"),
    (["--oidc-provider", OIDC, "--prefix", "a.b"], "prefix"),
    (["--oidc-provider", OIDC, "--namespace", "Fort"], "namespace"),
])  # fmt: skip
def test_irsa_trust_cli_refuses_bad_arguments(example_policy_path, capsys, args, message):
    assert main(["irsa-trust", str(example_policy_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_irsa_trust_cli_prints_the_builders_policies(example_policy, example_policy_path, capsys):
    args = ["irsa-trust", str(example_policy_path), "--oidc-provider", OIDC, "--namespace", "jh"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == irsa_trust_policies(example_policy, OIDC, "jh", "fort")
    assert subjects(printed[URLS]) == ["system:serviceaccount:jh:fort.urls-study.*"]
