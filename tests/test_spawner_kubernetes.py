"""FortKubeSpawner against the Kubernetes API test double (tests/k8s_double.py) over real HTTP.

No real cluster runs in CI: the double implements the calls kubespawner 7 makes (pods, events,
PVCs, ServiceAccounts; list, watch, create, patch, delete) and validates every pod and
ServiceAccount it receives with kubernetes-validate.
"""

import asyncio
import datetime as dt
import json
import shutil
import textwrap
from types import SimpleNamespace

import kubernetes_validate
import pytest
from jupyterhub.objects import Hub
from jupyterhub.utils import maybe_future
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import kube_config
from kubespawner.clients import load_config
from traitlets.config import Config, PyFileConfigLoader

from fort_hub.config import shared_store
from fort_hub.spawners.base import SpawnDenied
from fort_hub.spawners.kubernetes import FortKubeSpawner
from fort_hub.store.memberships import Memberships
from tests.conftest import EXAMPLE_POLICY
from tests.k8s_double import KubeDouble

K8S_VERSIONS = ["1.28.0", "1.37.0"]
URLS_ARN = "arn:aws:iam::123456789012:role/fort-urls-study"
ADS_ARN = "arn:aws:iam::123456789012:role/fort-ads-study"
GPU_IMAGE = "quay.io/jupyter/pytorch-notebook:cuda12-2025-06-02"
DEDICATED = [
    {"key": k, "operator": "Equal", "value": "user", "effect": "NoSchedule"}
    for k in ("hub.jupyter.org/dedicated", "hub.jupyter.org_dedicated")
]


class MockUser:
    def __init__(self, name):
        self.name, self.id, self.url, self.groups = name, 1, f"/user/{name}/", []


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(
        textwrap.dedent(
            """\
            apiVersion: v1
            kind: Config
            clusters: [{name: double, cluster: {server: "http://127.0.0.1:9"}}]
            users: [{name: u, user: {token: t}}]
            contexts: [{name: c, context: {cluster: double, user: u}}]
            current-context: c
            """
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    # read at import time by kubernetes_asyncio, so point the module at it too
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


@pytest.fixture
async def k8s(kubeconfig):
    with KubeDouble(pod_start_delay=0.1, validate_version=K8S_VERSIONS[0]) as double:
        yield double
        await FortKubeSpawner._stop_all_reflectors()


@pytest.fixture
def policy_path(tmp_path):
    dst = tmp_path / "policy.yaml"
    shutil.copy(EXAMPLE_POLICY, dst)
    return dst


@pytest.fixture
def make(k8s, policy_path, store_url):
    def make(username, options=None, config=None, **traits):
        c = Config()
        if config is not None:
            c.merge(config)
        c.FortSettings.policy_file = str(policy_path)
        c.FortSettings.store_url = store_url
        c.KubeSpawner.k8s_api_host = k8s.url
        c.KubeSpawner.start_timeout = 20
        c.FortKubeSpawner.irsa_settle_time = 0
        for k, v in traits.items():
            setattr(c.FortKubeSpawner, k, v)
        s = FortKubeSpawner(
            user=MockUser(username), hub=Hub(), api_token="tok", oauth_client_id="c", config=c,
            _mock=True,
        )  # fmt: skip
        s.user_options = options or {}
        return s

    return make


def as_dict(pod) -> dict:
    return ApiClient().sanitize_for_serialization(pod)


def audit(store_url, action):
    return shared_store(store_url).audit.query(action=action)


async def test_vending_lifecycle_start_poll_stop_and_audit(k8s, make, store_url):
    s = make("alice", {"profile": "urls-large"})
    url = await asyncio.wait_for(s.start(), 30)
    assert url == "http://127.0.0.1:8888"
    assert await s.poll() is None
    (pod,) = k8s.list("pods")
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["labels"]["fort.hub/user"] == "alice"
    assert meta["labels"]["fort.hub/groups"] == "urls-study"
    assert meta["labels"]["fort.hub/profile"] == "urls-large"
    assert meta["annotations"]["fort.hub/groups"] == "urls-study"
    config = meta["annotations"]["fort.hub/aws-config"]
    assert "[default]\ncredential_process = fort-aws-credentials --role fort-urls-study" in config
    nb = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in nb["env"]}
    assert env["AWS_CONFIG_FILE"] == "/etc/fort/aws/config"
    assert env["FORT_USER"] == "alice" and env["FORT_GROUPS"] == "urls-study"
    assert env["FORT_USER_PREFIX"] == "s3://fort-user-data/users/alice/"
    assert env["FORT_QUERY_URL"] == "http://proxy-public/services/fort-query/"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert "AWS_ROLE_ARN" not in env and "serviceAccountName" not in spec
    assert spec["automountServiceAccountToken"] is False  # no identity of its own
    assert {"name": "fort-aws-config", "mountPath": "/etc/fort/aws", "readOnly": True} in nb[
        "volumeMounts"
    ]
    assert nb["resources"] == {  # kubespawner writes bytes
        "limits": {"cpu": 4.0, "memory": 16 * 2**30},
        "requests": {"cpu": 2.0, "memory": 8 * 2**30},
    }
    for v in K8S_VERSIONS:
        kubernetes_validate.validate(pod, v, strict=True)
    # the server's token may reach the services
    assert "custom:fort-credentials:aws" in s.server_token_scopes
    assert "access:services!service=fort-credentials" in s.server_token_scopes

    await s.stop(now=True)
    assert await s.poll() == 1
    assert k8s.list("pods") == []
    (start,) = audit(store_url, "spawn.start")
    assert (start.actor, start.decision) == ("alice", "allow")
    d = start.details
    assert d["profile"] == "urls-large" and d["image"].startswith("quay.io/jupyter/scipy")
    assert d["resources"] == {
        "cpu_guarantee": 2.0, "cpu_limit": 4.0, "mem_guarantee": "8G", "mem_limit": "16G"
    }  # fmt: skip
    assert (d["identity_mode"], d["outcome"]) == ("vending", "starting")
    (stop,) = audit(store_url, "spawn.stop")
    assert stop.details["outcome"] == "stopped" and stop.details["profile"] == "urls-large"


async def test_forbidden_profile_starts_nothing_and_is_audited(k8s, make, store_url):
    s = make("bob", {"profile": "urls-large"})
    with pytest.raises(SpawnDenied) as e:
        await s.start()
    assert e.value.status_code == 403
    assert "profile 'urls-large' is not available to your groups" in e.value.log_message
    assert k8s.list("pods") == [] and not any(m == "POST" for m, _ in k8s.requests)
    (rec,) = audit(store_url, "spawn.start")
    assert rec.decision == "deny" and rec.details["requested"] == {"profile": "urls-large"}

    admin = make("admin", {"profile": "custom", "image--unlisted-choice": "docker.io/evil:1"})
    with pytest.raises(SpawnDenied, match="must match"):
        await admin.start()
    assert k8s.list("pods") == []


async def test_no_study_group_and_unsafe_username_start_nothing(k8s, make, store_url,
                                                                policy_path):  # fmt: skip
    """#10 findings 3 and 2: a user in no active group got the profile open to everyone; a
    user called ``a*`` got ``FORT_USER_PREFIX`` ``users/a*/``. Both refused, audited, no pod."""
    policy_path.write_text(policy_path.read_text() + "contact: fort-support@example.org\n")
    s = make("nogroup", {"profile": "python"})
    with pytest.raises(SpawnDenied) as e:
        await s.start()
    assert e.value.status_code == 403
    assert e.value.log_message == (
        "Spawn refused: you are not in any active study group, so no server can start; "
        "to join one, ask fort-support@example.org"
    )
    Memberships(shared_store(store_url)).upsert("urls-study", "a*", updated_by="test")
    star = make("a*", {"profile": "python"})
    with pytest.raises(SpawnDenied, match=r"'a\*' \(not allowed: '\*'\) is not an allowed"):
        await star.start()
    assert k8s.list("pods") == [] and not any(m == "POST" for m, _ in k8s.requests)
    star_rec, nogroup_rec = audit(store_url, "spawn.start")
    assert nogroup_rec.actor == "nogroup" and nogroup_rec.decision == "deny"
    assert "ask fort-support@example.org" in nogroup_rec.reason
    assert star_rec.actor == "a*" and star_rec.decision == "deny"


async def test_deauthorized_sign_in_starts_nothing(k8s, make, store_url):
    """A sign-in revoked by Meta's deauthorize callback voids the user's memberships for the
    spawner too (fort_hub.access), until the user signs in again."""
    from fort_hub.authenticators.identities import Identities

    ids = Identities(shared_store(store_url))
    ids.bind("fb-alice", "alice")
    ids.revoke("fb-alice")
    s = make("alice", {"profile": "python"})
    with pytest.raises(SpawnDenied, match="not in any active study group"):
        await s.start()
    assert k8s.list("pods") == []
    ids.bind("fb-alice", "alice")  # signed in again
    again = make("alice", {"profile": "python"})
    await asyncio.wait_for(again.start(), 30)
    assert len(k8s.list("pods")) == 1
    await again.stop(now=True)


async def test_unlisted_image_allowed_for_admins(k8s, make):
    image = "quay.io/jupyter/r-notebook:2025-06-02"
    s = make("admin", {"profile": "custom", "image--unlisted-choice": image})
    await asyncio.wait_for(s.start(), 30)
    (pod,) = k8s.list("pods")
    assert pod["spec"]["containers"][0]["image"] == image
    await s.stop(now=True)


async def test_audit_down_refuses_spawn(k8s, make, monkeypatch, store_url):
    from fort_hub.store.audit import AuditError, AuditLog

    def broken(self, *a, **k):
        raise AuditError("database is gone")

    monkeypatch.setattr(AuditLog, "record", broken)
    monkeypatch.setattr(AuditLog, "_append_in", broken)  # the decision's own transaction
    s = make("alice", {"profile": "python"})
    with pytest.raises(SpawnDenied) as e:
        await s.start()
    assert e.value.status_code == 503 and "audit log is unavailable" in e.value.log_message
    assert k8s.list("pods") == []


async def test_group_change_and_expiry_between_spawns(k8s, make, store_url):
    members = Memberships(shared_store(store_url))
    members.upsert("urls-study", "dave", expires=None, updated_by="test")
    s = make("dave", {"profile": "gpu"})
    await asyncio.wait_for(s.start(), 30)
    (pod,) = k8s.list("pods")
    nb = pod["spec"]["containers"][0]
    assert nb["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["spec"]["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.xlarge"}
    await s.stop(now=True)

    # the same spawner object, next spawn: a CPU profile keeps nothing of the GPU one
    s.user_options = {"profile": "urls-large"}
    await asyncio.wait_for(s.start(), 30)
    (pod,) = k8s.list("pods")
    assert "nvidia.com/gpu" not in pod["spec"]["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in pod["spec"] and "tolerations" not in pod["spec"]
    await s.stop(now=True)

    # membership expires: its profiles are gone at the next spawn
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    members.upsert("urls-study", "dave", expires=past, updated_by="test")
    with pytest.raises(SpawnDenied, match="not in any active study group"):
        await s.start()
    assert [p["slug"] for p in await maybe_future(s.fort_profile_list())] == ["python"]
    assert k8s.list("pods") == []


async def test_irsa_service_account_before_pod_per_group_and_deleted(k8s, make, store_url,
                                                                      policy_path):  # fmt: skip
    members = Memberships(shared_store(store_url))
    members.upsert("urls-study", "dave", updated_by="test")
    s = make("dave", {"profile": "python"}, aws_identity_mode="irsa")
    await asyncio.wait_for(s.start(), 30)
    sa = k8s.get("serviceaccounts", "default", "fort.urls-study.dave")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == URLS_ARN
    # the token STS accepts lives an hour, not the webhook's default day
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/token-expiration"] == "3600"
    assert sa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "fort-hub"
    posts = [p for m, p in k8s.requests if m == "POST"]
    assert posts.index("/api/v1/namespaces/default/serviceaccounts") < posts.index(
        "/api/v1/namespaces/default/pods"
    )
    (pod,) = k8s.list("pods")
    assert pod["spec"]["serviceAccountName"] == "fort.urls-study.dave"
    assert pod["spec"]["automountServiceAccountToken"] is True
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["AWS_ROLE_ARN"] == URLS_ARN  # the webhook saw the role: no race
    assert (
        "AWS_CONFIG_FILE" not in env and "fort.hub/aws-config" not in pod["metadata"]["annotations"]
    )
    (rec,) = audit(store_url, "spawn.start")
    assert rec.details["identity_mode"] == "irsa" and rec.details["role_arn"] == URLS_ARN
    assert rec.details["service_account"] == "fort.urls-study.dave"
    await s.stop(now=True)

    # the user's group (and so role) changes: the next pod runs as that group's ServiceAccount
    # (the trust of the ads-study role admits fort.ads-study.*, never fort.urls-study.*)
    members.remove("urls-study", "dave")
    members.upsert("ads-study", "dave", updated_by="test")
    await asyncio.wait_for(s.start(), 30)
    sa = k8s.get("serviceaccounts", "default", "fort.ads-study.dave")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == ADS_ARN
    (pod,) = k8s.list("pods")
    assert pod["spec"]["serviceAccountName"] == "fort.ads-study.dave"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["AWS_ROLE_ARN"] == ADS_ARN
    await s.stop(now=True)

    # no role any more (the group's role left the policy): no ServiceAccount of fort's, no token
    # (a user in no group at all gets no server: test_no_study_group_...)
    text = policy_path.read_text()
    policy_path.write_text(text.replace(f"    ads-study: {ADS_ARN}\n", ""))
    await asyncio.wait_for(s.start(), 30)
    (pod,) = k8s.list("pods")
    assert not (pod["spec"].get("serviceAccountName") or "").startswith("fort.")
    assert not pod["spec"].get("automountServiceAccountToken")
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert "AWS_ROLE_ARN" not in env
    await s.stop(now=True)

    # user deleted: JupyterHub calls delete_forever on the stopped default spawner; every
    # ServiceAccount of the user goes, whichever group it was for
    await s.delete_forever()
    assert k8s.get("serviceaccounts", "default", "fort.urls-study.dave") is None
    assert k8s.get("serviceaccounts", "default", "fort.ads-study.dave") is None


async def test_irsa_server_is_stopped_once_no_group_grants_its_role(k8s, make, store_url):
    """An irsa pod's token refreshes its role's credentials for as long as the pod runs, so an
    ended membership must end the server (left alone in stop 26: it ran on until stopped).
    JupyterHub's own polling (Spawner.start_polling, poll_and_notify) drives it here."""
    members = Memberships(shared_store(store_url))
    members.upsert("urls-study", "erin", updated_by="test")
    s = make("erin", {"profile": "python"}, aws_identity_mode="irsa", poll_interval=1)
    await asyncio.wait_for(s.start(), 30)
    stopped = asyncio.Event()
    s.add_poll_callback(stopped.set)
    s.start_polling()
    try:
        # a change that keeps the role granted keeps the server (ads-study grants another role)
        members.upsert("ads-study", "erin", updated_by="test")
        assert await s.poll() is None
        await asyncio.sleep(1.5)
        assert not stopped.is_set() and len(k8s.list("pods")) == 1
        assert audit(store_url, "spawn.revoke") == []
        members.remove("urls-study", "erin")  # what fort-groups does when an admin removes her
        await asyncio.wait_for(stopped.wait(), 15)  # before: never
    finally:
        s.stop_polling()
    assert k8s.list("pods") == []
    (revoked,) = audit(store_url, "spawn.revoke")
    assert revoked.decision == "deny" and URLS_ARN in revoked.reason
    assert revoked.details["service_account"] == "fort.urls-study.erin"
    assert [r.details["outcome"] for r in audit(store_url, "spawn.stop")] == ["stopped"]
    assert await s.poll() is not None


async def test_polls_at_once_revoke_an_irsa_server_once(k8s, make, store_url):
    """Review: the hub polls from several places (its timer, page handlers, User.stop); polls
    running together each revoked and stopped the server again."""
    members = Memberships(shared_store(store_url))
    members.upsert("urls-study", "fay", updated_by="test")
    s = make("fay", {"profile": "python"}, aws_identity_mode="irsa")
    await asyncio.wait_for(s.start(), 30)
    members.remove("urls-study", "fay")
    statuses = await asyncio.gather(s.poll(), s.poll(), s.poll())
    assert statuses == [3, 3, 3]
    assert len(audit(store_url, "spawn.revoke")) == 1
    assert len(audit(store_url, "spawn.stop")) == 1
    assert await s.poll() == 3 and k8s.list("pods") == []


def test_a_double_on_a_reused_port_gets_the_spawners_requests(kubeconfig):
    """kubespawner's load_config is lru-cached on the host and sets a global default: a double
    on a port an earlier double had must still be the one a new spawner's client talks to (the
    cause of a CI flake: connection refused to a closed double)."""
    with KubeDouble() as first:
        port = first.server.server_address[1]
        load_config(host=first.url)
    with KubeDouble() as second:
        load_config(host=second.url)
    with KubeDouble(port=port) as again:  # the kernel hands out the first port again
        load_config(host=again.url)
        assert Configuration.get_default_copy().host == again.url


@pytest.mark.parametrize("wait", [True, False], ids=["waits", "control-without-wait"])
async def test_irsa_waits_until_the_role_is_visible(kubeconfig, policy_path, store_url, wait,
                                                    monkeypatch):  # fmt: skip
    """The ServiceAccount's role reaches reads and the webhook only 0.6 s after the write (the
    EKS webhook's cache): the spawner reads it back until it carries the role, so the pod gets
    AWS_ROLE_ARN. The control shows the double models the race: without the wait it is lost
    (with a lag of 5 s there: at 0.6 s a loaded CI machine once took longer than the lag to
    create the pod, and the control saw the role)."""
    with KubeDouble(pod_start_delay=0.05, sa_lag=0.6 if wait else 5.0) as k8s:
        c = Config()
        c.FortSettings.policy_file = str(policy_path)
        c.FortSettings.store_url = store_url
        c.KubeSpawner.k8s_api_host = k8s.url
        c.FortKubeSpawner.irsa_settle_time = 0
        c.FortKubeSpawner.aws_identity_mode = "irsa"
        s = FortKubeSpawner(user=MockUser("alice"), hub=Hub(), api_token="tok",
                            oauth_client_id="c", config=c, _mock=True)  # fmt: skip
        s.user_options = {"profile": "python"}
        if not wait:

            async def no_wait(self, name, ns, role_arn, changed):
                return {}

            monkeypatch.setattr(FortKubeSpawner, "_wait_service_account", no_wait)
        try:
            await asyncio.wait_for(s.start(), 30)
            (pod,) = k8s.list("pods")
            env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
            reads = k8s.requests.count(
                ("GET", "/api/v1/namespaces/default/serviceaccounts/fort.urls-study.alice")
            )
            if wait:
                assert env.get("AWS_ROLE_ARN") == URLS_ARN
                assert reads >= 3  # the first read (404), then polls until the role shows
            else:
                assert "AWS_ROLE_ARN" not in env  # the race, lost
            await s.stop(now=True)
        finally:
            await FortKubeSpawner._stop_all_reflectors()


@pytest.mark.parametrize("mode", ["vending", "irsa"])
async def test_every_generated_pod_manifest_is_valid(k8s, make, mode):
    cases = [("alice", "python"), ("alice", "urls-large"), ("carol", "gpu"), ("admin", "custom")]
    for user, slug in cases:
        s = make(user, {"profile": slug}, aws_identity_mode=mode)
        await s.load_user_options()
        pod = as_dict(await s.get_pod_manifest())
        for v in K8S_VERSIONS:
            kubernetes_validate.validate(pod, v, strict=True)
    for sa in k8s.list("serviceaccounts"):
        for v in K8S_VERSIONS:
            kubernetes_validate.validate(sa, v, strict=True)
    assert len(k8s.list("serviceaccounts")) == (3 if mode == "irsa" else 0)


Z2JH_CONFIG = """
# What Zero-to-JupyterHub 4.x's jupyterhub_config.py sets from its default values, plus a few
# common overrides (extraTolerations, extraEnv, a modify_pod_hook)
c.JupyterHub.spawner_class = "fort-kubernetes"
c.KubeSpawner.common_labels = {"app": "jupyterhub", "heritage": "jupyterhub",
                               "chart": "jupyterhub-4.4.0", "release": "jhub"}
c.KubeSpawner.namespace = "jhub"
c.KubeSpawner.start_timeout = 300
c.KubeSpawner.image_pull_policy = "IfNotPresent"
c.KubeSpawner.events_enabled = True
c.KubeSpawner.extra_labels = {"hub.jupyter.org/network-access-hub": "true"}
c.KubeSpawner.uid = 1000
c.KubeSpawner.fs_gid = 100
c.KubeSpawner.tolerations = [
    {"key": "example.org/spot", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
    {"key": "hub.jupyter.org_dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
]
c.KubeSpawner.node_affinity_preferred = [{"weight": 100, "preference": {"matchExpressions": [
    {"key": "hub.jupyter.org/node-purpose", "operator": "In", "values": ["user"]}]}}]
c.KubeSpawner.mem_guarantee = "1G"
c.KubeSpawner.environment = {"CHART_EXTRA": "from-extraEnv"}
c.KubeSpawner.profile_list = []
c.KubeSpawner.image = "quay.io/jupyterhub/k8s-singleuser-sample:4.4.0"
c.KubeSpawner.scheduler_name = "jhub-user-scheduler"
c.KubeSpawner.priority_class_name = "jhub-default-priority"
c.KubeSpawner.pvc_name_template = "claim-{username}{servername}"
c.KubeSpawner.storage_pvc_ensure = True
c.KubeSpawner.storage_capacity = "10Gi"
c.KubeSpawner.storage_access_modes = ["ReadWriteOnce"]
c.KubeSpawner.volumes = {"01-home": {"name": "home",
                                     "persistentVolumeClaim": {"claimName": "{pvc_name}"}}}
c.KubeSpawner.volume_mounts = {"01-home": {"mountPath": "/home/jovyan", "name": "home"}}
c.KubeSpawner.init_containers = [{
    "name": "block-cloud-metadata",
    "image": "quay.io/jupyterhub/k8s-network-tools:4.4.0",
    "command": ["iptables", "--append", "OUTPUT", "--protocol", "tcp", "--destination",
                "169.254.169.254", "--destination-port", "80", "--jump", "DROP"],
    "securityContext": {"runAsUser": 0, "runAsGroup": 0, "capabilities": {"add": ["NET_ADMIN"]}},
}]
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.Spawner.default_url = "/lab"

def modify_pod_hook(spawner, pod):
    pod.metadata.annotations["example.org/hooked"] = spawner.user.name
    return pod

c.KubeSpawner.modify_pod_hook = modify_pod_hook
"""


async def test_z2jh_style_config_is_honoured(k8s, make, tmp_path):
    (tmp_path / "z2jh_config.py").write_text(Z2JH_CONFIG)
    config = PyFileConfigLoader("z2jh_config.py", path=str(tmp_path)).load_config()
    s = make("carol", {"profile": "gpu"}, config=config)
    assert s.namespace == "jhub"
    await asyncio.wait_for(s.start(), 30)
    (pod,) = k8s.list("pods", "jhub")
    meta, spec = pod["metadata"], pod["spec"]
    nb = spec["containers"][0]
    assert meta["labels"]["release"] == "jhub" and meta["labels"]["chart"] == "jupyterhub-4.4.0"
    assert meta["labels"]["hub.jupyter.org/network-access-hub"] == "true"
    assert meta["labels"]["fort.hub/groups"] == "ads-study.urls-study"
    assert meta["annotations"]["example.org/hooked"] == "carol"  # modify_pod_hook still runs
    # GPU profile: the chart's tolerations plus the profile's, not instead of them
    assert spec["tolerations"] == [
        {"key": "example.org/spot", "operator": "Exists", "effect": "NoSchedule"},
        *DEDICATED,
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]
    assert spec["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.xlarge"}
    assert spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert spec["schedulerName"] == "jhub-user-scheduler"
    assert spec["priorityClassName"] == "jhub-default-priority"
    assert spec["securityContext"]["fsGroup"] == 100
    assert nb["securityContext"]["runAsUser"] == 1000
    assert spec["initContainers"][0]["name"] == "block-cloud-metadata"
    assert nb["image"] == GPU_IMAGE and nb["imagePullPolicy"] == "IfNotPresent"
    assert nb["args"][:1] == ["jupyterhub-singleuser"] or nb["command"] == ["jupyterhub-singleuser"]
    assert nb["resources"]["requests"]["memory"] == 2**30  # chart's 1G, profile sets none
    assert nb["resources"]["limits"]["nvidia.com/gpu"] == "1"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["home"]["persistentVolumeClaim"]["claimName"] == "claim-carol"
    assert "fort-aws-config" in volumes
    assert k8s.get("persistentvolumeclaims", "jhub", "claim-carol") is not None
    env = {e["name"]: e.get("value") for e in nb["env"]}
    assert env["CHART_EXTRA"] == "from-extraEnv" and env["FORT_USER"] == "carol"
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/lab"
    for v in K8S_VERSIONS:
        kubernetes_validate.validate(pod, v, strict=True)
    # the form lists only carol's profiles, rendered by kubespawner's own template
    form = await s._render_options_form_dynamically(s)
    assert 'value="gpu"' in form and 'value="custom"' not in form
    await s.stop(now=True)


async def test_form_data_is_checked_when_parsed(k8s, make):
    s = make("bob")
    # kubespawner's own form fields, refused when the form is parsed (the form is shown again)
    with pytest.raises(SpawnDenied, match="urls-large") as e:
        await s.run_options_from_form({"profile": ["urls-large"]})
    assert e.value.status_code == 403
    ok = await s.run_options_from_form({"profile": ["gpu"], "junk": ["x"]})
    assert ok == {"profile": "gpu"}
    admin = make("admin")
    form = {
        "profile": ["custom"],
        "profile-option-custom--image": ["unlisted-choice"],
        "profile-option-custom--image--unlisted-choice": ["quay.io/jupyter/x:1\n"],
    }
    with pytest.raises(SpawnDenied, match="must match"):
        await admin.run_options_from_form(form)
    # a user in no study group is told so on the form (#10 finding 3)
    with pytest.raises(SpawnDenied, match=r"not in any active study group.*ask a fort admin"):
        await make("nogroup").run_options_from_form({"profile": ["python"]})
    # and checked again at start (REST requests never see the form)
    s.user_options = {"profile": "urls-large"}
    with pytest.raises(SpawnDenied, match="urls-large"):
        await s.start()
    assert k8s.list("pods") == []


def test_bad_identity_mode_names_the_setting():
    with pytest.raises(Exception, match="aws_identity_mode must be one of"):
        FortKubeSpawner(aws_identity_mode="instance-role", _mock=True)


async def test_stop_after_hub_restart_is_audited_from_saved_state(k8s, make, store_url):
    s = make("alice", {"profile": "python"})
    await asyncio.wait_for(s.start(), 30)
    state = s.get_state()
    assert state["fort_plan"]["profile"] == "python"
    json.dumps(state)  # JupyterHub stores it as JSON
    # the hub restarts: a new spawner object gets the saved state, then the server is stopped
    again = make("alice")
    again.load_state(state)
    await again.stop(now=True)
    (stop,) = audit(store_url, "spawn.stop")
    assert stop.details["profile"] == "python" and stop.details["outcome"] == "stopped"
    assert k8s.list("pods") == []


async def test_stop_leaves_the_state_the_hub_saves_after_clear_state_unchanged(k8s, make):
    """JupyterHub commits right after stop() and again after clear_state() only if the state
    changed: the stored state must already be the stopped one when stop() returns."""
    s = make("alice", {"profile": "python"})
    await asyncio.wait_for(s.start(), 30)
    # the hub's spawner row, with the state as the hub saves it after the start
    s.orm_spawner = SimpleNamespace(name="", server=None, state=s.get_state())
    assert "fort_plan" in s.orm_spawner.state
    await s.stop(now=True)
    assert "fort_plan" not in s.orm_spawner.state
    s.clear_state()
    assert s.get_state() == s.orm_spawner.state


async def test_failed_start_is_audited(k8s, make, store_url, monkeypatch):
    from kubespawner import KubeSpawner

    async def refused(self, pod, request_timeout):  # the pod create call fails
        raise RuntimeError("the Kubernetes API refused the pod")

    monkeypatch.setattr(KubeSpawner, "_make_create_pod_request", refused)
    s = make("alice", {"profile": "python"})
    with pytest.raises(RuntimeError, match="refused the pod"):
        await s.start()
    failed, starting = audit(store_url, "spawn.start")  # newest first
    assert starting.details["outcome"] == "starting" and starting.decision == "allow"
    assert failed.details["outcome"] == "failed"
    assert failed.reason == "start failed: the Kubernetes API refused the pod"
    assert failed.details["profile"] == "python" and failed.details["user"] == "alice"
    await s.stop(now=True)
    assert audit(store_url, "spawn.stop") == []  # it never ran, so no stop is recorded
