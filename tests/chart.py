"""Render the real Zero-to-JupyterHub chart (``../shared/z2jh/chart``) with the real helm that
``make test`` installs (tests/helmbin.py), and read what the hub pod would get from it.

    docs = render([VALUES, VALUES_DEV])          # every manifest, as dicts
    values = hub_values(docs)                     # the values helm merged, as the hub reads them
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import yaml

from tests.helmbin import helm_path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "z2jh"
CHART = SHARED / "chart"
VALUES = ROOT / "helm-values" / "values.yaml"
VALUES_DEV = ROOT / "helm-values" / "values-dev.yaml"
VALUES_REPLICAS = ROOT / "helm-values" / "values-replicas.yaml"
SERVICES_CHART = ROOT / "k8s" / "fort-services"
IRSA_RBAC_CHART = ROOT / "k8s" / "irsa-rbac"
RELEASE, NAMESPACE = "fort", "fort"
#: the chart's oldest supported Kubernetes (Chart.yaml kubeVersion) and the newest we deploy on
#: (docs/deploy-eks.md creates an EKS 1.33 cluster)
K8S_VERSIONS = ("1.28.0", "1.33.0")
#: every supported combination of our values files
VARIANTS = {
    "values": (VALUES,),
    "values+dev": (VALUES, VALUES_DEV),
    "values+replicas": (VALUES, VALUES_REPLICAS),
}


class HelmError(RuntimeError):
    pass


def helm(*args: str | Path) -> str:
    exe = helm_path()
    if not exe.exists():
        raise HelmError(f"{exe} is missing: `make install` puts helm there (tests/helmbin.py)")
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise HelmError(proc.stderr.strip() or proc.stdout.strip())
    return proc.stdout


def render(
    files=(VALUES,),
    chart: Path = CHART,
    namespace: str = NAMESPACE,
    kube_version: str = K8S_VERSIONS[-1],
    sets: tuple[str, ...] = (),
) -> list[dict]:
    """``helm template`` of *chart* with the values *files* (and ``--set`` *sets*)."""
    if not (chart / "Chart.yaml").exists():
        raise HelmError(f"the chart is missing: expected {chart}/Chart.yaml (see PROVENANCE.md)")
    args = ["template", RELEASE, chart, "--namespace", namespace, "--kube-version", kube_version]
    for f in files:
        args += ["-f", f]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args)) if d]


def find(docs: list[dict], kind: str, name: str) -> dict:
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise KeyError(f"no {kind}/{name} in the rendered chart")


def secret_files(docs: list[dict], name: str = "hub") -> dict[str, bytes]:
    """The decoded data of a rendered Secret."""
    secret = find(docs, "Secret", name)
    out = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    out.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    return out


def hub_values(docs: list[dict]) -> dict:
    """The chart values as helm merged them, from the hub Secret's ``values.yaml`` (what the
    chart's z2jh.get_config reads in the hub pod)."""
    return yaml.safe_load(secret_files(docs)["values.yaml"])


def hub_container(docs: list[dict]) -> dict:
    pod = find(docs, "Deployment", "hub")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "hub")
