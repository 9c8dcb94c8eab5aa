"""The fort-services chart (k8s/fort-services) rendered by the real helm, validated with
kubernetes-validate, and checked against the Zero-to-JupyterHub release it sits next to
(helm-values/values.yaml + values-replicas.yaml): every service the hub registers is a
Deployment behind a Service at the registered url, scaled by an HPA, kept by a PDB, reachable
by the hub, the proxy and the notebooks only, with the token the Z2JH chart generated."""

from __future__ import annotations

from urllib.parse import urlparse

import kubernetes_validate
import pytest

from fort_hub import deploy, scopes
from tests.chart import (
    K8S_VERSIONS,
    SERVICES_CHART,
    VALUES,
    VALUES_REPLICAS,
    find,
    hub_values,
    render,
    secret_files,
)

KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy")


def services_docs(version: str = K8S_VERSIONS[-1], sets=()) -> list[dict]:
    return render((SERVICES_CHART / "values.yaml",), chart=SERVICES_CHART, kube_version=version,
                  sets=sets)  # fmt: skip


def z2jh_docs() -> list[dict]:
    return render([VALUES, VALUES_REPLICAS])


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates(version):
    docs = services_docs(version)
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {e.message}")
    assert errors == []
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert names >= {(k, s) for k in KINDS for s in scopes.SERVICES}


def test_validation_can_fail():
    doc = find(services_docs(), "HorizontalPodAutoscaler", "fort-query")
    doc["spec"]["minReplica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", scopes.SERVICES)
def test_each_registered_service_is_a_replicated_deployment(name):
    docs, hub = services_docs(), hub_values(z2jh_docs())["hub"]
    entry = hub["services"][name]
    assert entry["command"] == []  # external: the hub starts nothing
    url = urlparse(entry["url"])
    service = find(docs, "Service", url.hostname)
    (port,) = service["spec"]["ports"]
    assert port["port"] == url.port
    deployment = find(docs, "Deployment", name)
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python3", "-m", deploy.SERVICE_MODULES[name][0]]
    (http,) = container["ports"]
    assert http["containerPort"] == url.port and port["targetPort"] == http["name"]
    env = {e["name"]: e for e in container["env"]}
    assert env["JUPYTERHUB_SERVICE_URL"]["value"] == f"http://0.0.0.0:{url.port}"
    assert env["JUPYTERHUB_SERVICE_PREFIX"]["value"] == f"/services/{name}/"
    assert "FORT_STORE_URL" in env and "FORT_COOKIE_SECRET" in env
    hpa = find(docs, "HorizontalPodAutoscaler", name)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    pdb = find(docs, "PodDisruptionBudget", name)["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["minAvailable"] < hpa["minReplicas"]  # a drain can always move one pod


@pytest.mark.parametrize("name", scopes.SERVICES)
def test_the_token_is_the_one_the_z2jh_chart_generated(name):
    container = find(services_docs(), "Deployment", name)["spec"]["template"]["spec"]
    env = {e["name"]: e for e in container["containers"][0]["env"]}
    ref = env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    z2jh = z2jh_docs()
    assert ref["name"] == find(z2jh, "Secret", "hub")["metadata"]["name"]
    assert secret_files(z2jh, ref["name"])[ref["key"]]  # generated, 64 hex digits
    api = urlparse(env["JUPYTERHUB_API_URL"]["value"])
    hub_ports = [p["port"] for p in find(z2jh, "Service", api.hostname)["spec"]["ports"]]
    assert api.port in hub_ports and api.path == "/hub/api"


@pytest.mark.parametrize("name", scopes.SERVICES)
def test_network_policy_admits_the_hub_the_proxy_and_the_notebooks_only(name):
    docs, z2jh = services_docs(), z2jh_docs()
    netpol = find(docs, "NetworkPolicy", name)["spec"]
    pod_labels = find(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
    assert netpol["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert netpol["policyTypes"] == ["Ingress"]
    (rule,) = netpol["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    selectors = [src["podSelector"]["matchLabels"] for src in rule["from"]]

    def admitted(labels: dict) -> bool:
        return any(sel.items() <= labels.items() for sel in selectors)

    for component in ("hub", "proxy"):
        assert admitted(
            find(z2jh, "Deployment", component)["spec"]["template"]["metadata"]["labels"]
        )
    assert not admitted(
        find(z2jh, "Deployment", "user-scheduler")["spec"]["template"]["metadata"]["labels"]
    )
    # a notebook pod carries KubeSpawner's component label and the chart's common labels
    notebook = {"app": "jupyterhub", "release": "fort", "component": "singleuser-server"}
    assert admitted(notebook)
    assert not admitted({**notebook, "release": "another-release"})
    # and these pods may reach the hub API (the hub's own NetworkPolicy admits this label)
    hub_netpol = find(z2jh, "NetworkPolicy", "hub")["spec"]["ingress"]
    hub_sources = [s["podSelector"]["matchLabels"] for r in hub_netpol for s in r.get("from", [])
                   if "podSelector" in s]  # fmt: skip
    assert any(sel.items() <= pod_labels.items() for sel in hub_sources)


def test_external_entries_keep_no_command_through_fort_hub_defaults():
    """configure_z2jh fills services in, never overrides: `command: []` stays, so the hub runs
    none of them itself, while their OAuth settings are still filled in."""
    hub = hub_values(z2jh_docs())["hub"]
    existing = [{"name": k, **v} for k, v in hub["services"].items()]
    merged = {e["name"]: e for e in deploy.merge_by_name(existing, deploy.service_entries(""))}
    for name in scopes.SERVICES:
        assert merged[name]["command"] == []
        assert merged[name]["url"] == hub["services"][name]["url"]
        assert merged[name]["oauth_client_allowed_scopes"] == deploy.SERVICE_OAUTH_SCOPES[name]


def test_a_service_can_be_left_out():
    docs = services_docs(sets=("services.fort-groups.enabled=false",))
    assert not [d for d in docs if d["metadata"]["name"] == "fort-groups"]
    assert find(docs, "Deployment", "fort-query")
