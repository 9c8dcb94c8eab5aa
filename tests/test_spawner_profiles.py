"""Pure builders of the spawners: profile_list, user_options validation, AWS config, manifests."""

import datetime as dt

import kubernetes_validate
import pytest

from fort_hub.policy import parse_policy
from fort_hub.spawners.identity import aws_config_text, irsa_grant
from fort_hub.spawners.manifests import (
    aws_config_mount,
    aws_config_volume,
    fort_annotations,
    fort_labels,
    label_value,
    role_patch,
    service_account_manifest,
)
from fort_hub.spawners.profiles import (
    ProfileError,
    build_profile_list,
    merge_tolerations,
    options_from_form,
    validate_user_options,
)

K8S_VERSIONS = ["1.28.0", "1.37.0"]  # oldest Z2JH 4.4 supports, current
CHART_TOLERATIONS = [
    {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
    {"key": "hub.jupyter.org_dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
]  # fmt: skip
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def test_profile_list_for_urls_study_has_exact_kubespawner_shape(example_policy):
    got = build_profile_list(example_policy, ["urls-study"], base_tolerations=CHART_TOLERATIONS)
    assert [p["slug"] for p in got] == ["python", "urls-large", "gpu"]
    assert got[0] == {
        "slug": "python",
        "display_name": "Python (minimal)",
        "description": "Python 3 with pandas and the fort client",
        "default": True,
        "kubespawner_override": {
            "image": "quay.io/jupyter/scipy-notebook:2025-06-02",
            "cpu_guarantee": 0.5,
            "cpu_limit": 2.0,
            "mem_guarantee": "1G",
            "mem_limit": "4G",
        },
    }
    gpu = got[2]
    assert gpu["default"] is False
    assert gpu["kubespawner_override"] == {
        "image": "quay.io/jupyter/pytorch-notebook:cuda12-2025-06-02",
        "extra_resource_limits": {"nvidia.com/gpu": "1"},
        "node_selector": {"node.kubernetes.io/instance-type": "g5.xlarge"},
        # the chart's tolerations stay, the profile's is added
        "tolerations": [*CHART_TOLERATIONS, GPU_TOLERATION],
    }
    assert "profile_options" not in gpu  # no unlisted choice unless the policy says so


def test_unlisted_choice_only_where_policy_allows(example_policy):
    admin = build_profile_list(example_policy, ["admins"])
    assert [p["slug"] for p in admin] == ["python", "custom"]
    assert "profile_options" not in admin[0]
    image = admin[1]["profile_options"]["image"]
    assert image["unlisted_choice"]["enabled"] is True
    assert image["unlisted_choice"]["validation_regex"] == (
        r"^quay\.io/jupyter/[a-z-]+:[A-Za-z0-9._-]+$"
    )
    assert image["unlisted_choice"]["kubespawner_override"] == {"image": "{value}"}
    assert image["choices"]["listed"]["kubespawner_override"] == {
        "image": "quay.io/jupyter/base-notebook:2025-06-02"
    }


def test_default_falls_back_to_first_available_profile():
    policy = parse_policy(_policy_yaml())
    got = build_profile_list(policy, ["g"])
    assert [(p["slug"], p["default"]) for p in got] == [("b", True), ("c", False)]
    assert build_profile_list(policy, []) == []


def _policy_yaml():
    return """
version: 1
groups: [{name: g}, {name: x}]
profiles:
  - {slug: a, display_name: A, image: "i:a", default: true, groups: [x]}
  - {slug: b, display_name: B, image: "i:b", groups: [g]}
  - {slug: c, display_name: C, image: "i:c", groups: [g]}
"""


def test_expired_membership_loses_its_profiles(example_policy):
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    got = build_profile_list(example_policy, {"urls-study": past}, user="dave")
    assert [p["slug"] for p in got] == ["python"]
    got = build_profile_list(example_policy, {"urls-study": None}, user="dave")
    assert [p["slug"] for p in got] == ["python", "urls-large", "gpu"]


def test_merge_tolerations_keeps_base_and_dedupes():
    assert merge_tolerations(CHART_TOLERATIONS, [CHART_TOLERATIONS[0], GPU_TOLERATION]) == [
        *CHART_TOLERATIONS,
        GPU_TOLERATION,
    ]


# ----- validation -------------------------------------------------------------------------------


@pytest.fixture
def urls_list(example_policy):
    return build_profile_list(example_policy, ["urls-study"])


@pytest.fixture
def admin_list(example_policy):
    return build_profile_list(example_policy, ["admins"])


def test_valid_selections(urls_list, admin_list):
    assert validate_user_options({}, urls_list).slug == "python"
    sel = validate_user_options({"profile": "gpu"}, urls_list)
    assert (sel.slug, sel.unlisted) == ("gpu", False)
    assert sel.resources() == {"gpu": "1"}
    sel = validate_user_options(
        {"profile": "custom", "image--unlisted-choice": "quay.io/jupyter/r-notebook:2025-06-02"},
        admin_list,
    )
    assert (sel.image, sel.unlisted) == ("quay.io/jupyter/r-notebook:2025-06-02", True)
    # the form's select says "unlisted-choice" alongside the typed value
    sel = validate_user_options(
        {"profile": "custom", "image": "unlisted-choice", "image--unlisted-choice": "quay.io/jupyter/x:1"},
        admin_list,
    )  # fmt: skip
    assert sel.image == "quay.io/jupyter/x:1"
    assert validate_user_options({"profile": "custom", "image": "listed"}, admin_list).image == (
        "quay.io/jupyter/base-notebook:2025-06-02"
    )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"profile": "urls-large"}, "profile 'urls-large' is not available to your groups"),
        ({"profile": "nope"}, "profile 'nope' is not available"),
        ({"profile": 3}, "'profile' must be a string"),
        ({"profile": "python", "image": "x"}, "profile 'python' has no option(s) image"),
        ({"cpu_limit": 64}, "has no option(s) cpu_limit"),
        ({"profile": "custom", "image--unlisted-choice": "docker.io/evil:1"}, "must match"),
        # re.match would accept these: $ matches before a final newline, and a regex is a prefix
        ({"profile": "custom", "image--unlisted-choice": "quay.io/jupyter/x:1\n"}, "must match"),
        ({"profile": "custom", "image": "other"}, "'other' is not a choice of option 'image'"),
        ({"profile": "custom", "image": "unlisted-choice"}, "no value was given"),
        ({"profile": "custom", "image--unlisted-choice": ["a"]}, "must be a string"),
    ],
)
def test_forbidden_requests_name_the_problem(admin_list, options, message):
    with pytest.raises(ProfileError) as e:
        validate_user_options(options, admin_list)
    assert message in str(e.value)


def test_unanchored_policy_regex_is_still_a_full_match():
    policy = parse_policy(
        r"""
version: 1
groups: [{name: g}]
profiles:
  - slug: byo
    display_name: BYO
    image: "quay.io/jupyter/base-notebook:1"
    unlisted_choice: {display_name: Image, validation_regex: 'quay\.io/jupyter/[a-z-]+:[0-9]+'}
"""
    )
    plist = build_profile_list(policy, ["g"])
    ok = {"profile": "byo", "image--unlisted-choice": "quay.io/jupyter/base-notebook:2"}
    assert validate_user_options(ok, plist).image == "quay.io/jupyter/base-notebook:2"
    bad = {"profile": "byo", "image--unlisted-choice": "quay.io/jupyter/base-notebook:2@evil.io/x"}
    with pytest.raises(ProfileError, match="must match"):
        validate_user_options(bad, plist)


def test_no_profiles_and_non_object_options(example_policy):
    with pytest.raises(ProfileError, match="no image profile is available"):
        validate_user_options({}, [])
    with pytest.raises(ProfileError, match="must be a JSON object"):
        validate_user_options(["profile"], build_profile_list(example_policy, []))


def test_options_from_form_matches_kubespawner_field_names():
    form = {
        "profile": ["custom"],
        "profile-option-custom--image": ["unlisted-choice"],
        "profile-option-custom--image--unlisted-choice": ["quay.io/jupyter/x:1"],
        "profile-option-python--image": ["ignored"],
        "junk": ["x"],
    }
    assert options_from_form(form) == {
        "profile": "custom",
        "image": "unlisted-choice",
        "image--unlisted-choice": "quay.io/jupyter/x:1",
    }
    assert options_from_form({}) == {}


# ----- identity ---------------------------------------------------------------------------------


def test_aws_config_text_one_profile_per_role_default_first():
    roles = {"fort-urls-study": "arn:aws:iam::1:role/fort-urls-study", "fort-ads": "arn:x/fort-ads"}
    text = aws_config_text(roles, "eu-west-1")
    assert text.splitlines()[1:] == [
        "",
        "[default]",
        "credential_process = fort-aws-credentials --role fort-urls-study",
        "region = eu-west-1",
        "",
        "[profile fort-urls-study]",
        "credential_process = fort-aws-credentials --role fort-urls-study",
        "region = eu-west-1",
        "",
        "[profile fort-ads]",
        "credential_process = fort-aws-credentials --role fort-ads",
        "region = eu-west-1",
    ]
    assert "[" not in aws_config_text({}, "us-east-1")  # no roles, no profiles


def test_aws_config_parses_as_botocore_config(tmp_path):
    from botocore.configloader import load_config

    path = tmp_path / "config"
    path.write_text(aws_config_text({"r1": "arn:a/r1", "r2": "arn:a/r2"}, "us-east-1", "/x/cmd"))
    profiles = load_config(str(path))["profiles"]
    assert profiles["default"]["credential_process"] == "/x/cmd --role r1"
    assert profiles["r2"] == {"credential_process": "/x/cmd --role r2", "region": "us-east-1"}


def test_irsa_role_is_first_group_in_policy_order(example_policy):
    assert irsa_grant(example_policy, ["ads-study", "urls-study"]) == (
        "urls-study",
        "arn:aws:iam::123456789012:role/fort-urls-study",
    )
    assert irsa_grant(example_policy, ["ads-study"])[1].endswith("fort-ads-study")
    assert irsa_grant(example_policy, []) is None


# ----- manifests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", ["alice", "Alice.Smith_2", "a@b.com", "x" * 80, "-lead", "é", "", "a,b", "a--b"]
)
def test_label_values_are_valid_and_distinct(raw):
    value = label_value(raw)
    assert len(value) <= 63
    sa = service_account_manifest("sa", "ns", "u", None, {"l": value})
    for v in K8S_VERSIONS:
        kubernetes_validate.validate(sa, v, strict=True)
    import re

    assert re.fullmatch(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?", value)
    if raw not in ("alice", "Alice.Smith_2", "a--b", ""):
        assert value != raw
    assert label_value("a@b.com") != label_value("a#b.com")


def test_fort_labels_and_annotations():
    assert fort_labels("a@b.com", ["urls-study", "ads-study"], "gpu") == {
        "fort.hub/user": label_value("a@b.com"),
        "fort.hub/groups": "ads-study.urls-study",
        "fort.hub/profile": "gpu",
    }
    assert fort_annotations("a@b.com", ["urls-study", "ads-study"], "gpu") == {
        "fort.hub/user": "a@b.com",
        "fort.hub/groups": "ads-study,urls-study",
        "fort.hub/profile": "gpu",
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_service_account_manifest(version):
    sa = service_account_manifest(
        "fort.urls-study.alice", "jhub", "alice", "arn:aws:iam::1:role/r", {"a": "b"}, 3600
    )
    assert sa == {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "fort.urls-study.alice",
            "namespace": "jhub",
            "labels": {
                "a": "b",
                "app.kubernetes.io/managed-by": "fort-hub",
                "component": "fort-user-identity",
                "fort.hub/user": "alice",
            },
            "annotations": {
                "fort.hub/user": "alice",
                "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/r",
                "eks.amazonaws.com/token-expiration": "3600",
            },
        },
    }
    kubernetes_validate.validate(sa, version, strict=True)
    no_role = service_account_manifest("fort-bob", "jhub", "bob", None)
    assert "eks.amazonaws.com/role-arn" not in no_role["metadata"]["annotations"]
    kubernetes_validate.validate(no_role, version, strict=True)
    assert role_patch(None) == {"metadata": {"annotations": {
        "eks.amazonaws.com/role-arn": None, "eks.amazonaws.com/token-expiration": None,
    }}}  # fmt: skip
    assert role_patch("arn:r", 900)["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:r", "eks.amazonaws.com/token-expiration": "900",
    }  # fmt: skip


def test_aws_config_volume_is_downward_api_of_annotation():
    assert aws_config_volume()["downwardAPI"]["items"] == [
        {"path": "config", "fieldRef": {"fieldPath": "metadata.annotations['fort.hub/aws-config']"}}
    ]
    assert aws_config_mount() == {
        "name": "fort-aws-config",
        "mountPath": "/etc/fort/aws",
        "readOnly": True,
    }


# ----- FortLocalSpawner's image -> environment mapping -----------------------------------------


class _User:
    def __init__(self, name):
        self.name, self.id, self.url, self.groups = name, 1, f"/user/{name}/", []


def _local(tmp_path, **traits):
    from traitlets.config import Config

    from fort_hub.spawners.local import FortLocalSpawner
    from tests.conftest import EXAMPLE_POLICY

    c = Config()
    c.FortSettings.policy_file = str(EXAMPLE_POLICY)
    c.FortSettings.store_url = f"sqlite:///{tmp_path / 'fort.sqlite'}"
    for k, v in traits.items():
        setattr(c.FortLocalSpawner, k, v)
    return FortLocalSpawner(user=_User("alice"), config=c)


def test_image_environments_first_matching_glob_wins(tmp_path):
    s = _local(
        tmp_path,
        image_environments={
            "quay.io/jupyter/pytorch-*": ["/opt/torch/bin/jupyterhub-singleuser", "--debug"],
            "quay.io/*": "/opt/conda",
        },
    )
    assert s.environment_for("quay.io/jupyter/pytorch-notebook:cuda12") == [
        "/opt/torch/bin/jupyterhub-singleuser",
        "--debug",
    ]
    assert s.environment_for("quay.io/jupyter/scipy-notebook:1") == "/opt/conda"
    assert s.environment_for("docker.io/library/python:3") is None
    import sys

    assert _local(tmp_path).environment_for("anything:1") == sys.prefix  # the default


async def test_image_without_local_environment_is_refused_and_audited(tmp_path):
    from fort_hub.config import shared_store
    from fort_hub.spawners.base import SpawnDenied

    s = _local(tmp_path, image_environments={"docker.io/*": "/opt/conda"})
    s.user_options = {"profile": "python"}
    with pytest.raises(SpawnDenied) as e:
        await s.start()
    assert e.value.status_code == 403
    assert "image quay.io/jupyter/scipy-notebook:2025-06-02 is not available" in (
        e.value.log_message
    )
    assert s.proc is None
    (record,) = shared_store(s.store_url).audit.query(action="spawn.start")
    assert (record.decision, record.details["outcome"]) == ("deny", "refused")
