"""docs/deploy-eks.md is a guide an admin can follow: every command block says whether CI runs
it or what it needs; the blocks CI runs, run (as written, with the chart from
../shared/z2jh/chart in place of the jupyterhub/jupyterhub repository); every helm install in
the guide and README renders; the guide's names match the values (placeholders, Secret keys,
ConfigMap); its JSON documents parse."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from tests.chart import CHART, ROOT, VALUES, hub_container, render
from tests.helmbin import helm_path

GUIDE = ROOT / "docs" / "deploy-eks.md"
README = ROOT / "README.md"
EXAMPLE_POLICY = ROOT / "fort_hub" / "dev" / "data" / "example-policy.yaml"
RUN_BY = re.compile(r"^(#|--) CI runs this block: (tests/\S+\.py)$")
NEEDS = re.compile(r"^(#|--) needs (.+): not run in CI\b.*$")
REPO_CHART = "jupyterhub/jupyterhub --version 4.4.0"


def blocks(path, langs=("bash", "sh", "sql")) -> list[tuple[str, list[str]]]:
    text = path.read_text()
    return [
        (lang, body.splitlines())
        for lang, body in re.findall(r"^```(\w+)\n(.*?)^```", text, flags=re.M | re.S)
        if lang in langs
    ]


def commands(lines: list[str]) -> list[str]:
    """Shell lines with backslash continuations joined, comments dropped."""
    out, cur = [], ""
    for line in lines:
        if line.lstrip().startswith("#"):
            continue
        cur += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            out.append(cur.strip())
            cur = ""
    return [c for c in out if c]


def test_every_command_block_is_run_by_ci_or_says_what_it_needs():
    found = blocks(GUIDE)
    assert len(found) >= 10
    for lang, lines in found:
        first = lines[0] if lines else ""
        ran = RUN_BY.match(first)
        assert ran or NEEDS.match(first), f"{lang} block starting {first!r} is not marked"
        if ran:
            assert (ROOT / ran.group(2)).exists(), ran.group(2)


def test_the_blocks_ci_runs_run(tmp_path):
    """As the admin runs them, in a checkout with their policy.yaml; helm takes the chart
    from ../shared/z2jh/chart (no chart repository in CI)."""
    ran = [lines for _, lines in blocks(GUIDE) if RUN_BY.match(lines[0])]
    assert ran, "no block of the guide is run by CI"
    for name in ("helm-values", "k8s"):
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copy(EXAMPLE_POLICY, tmp_path / "policy.yaml")
    bindir = helm_path().parent
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HUB_DB_PASSWORD": "s3cret", "HOME": str(tmp_path)}
    for lines in ran:
        script = "\n".join(lines).replace(REPO_CHART, shlex.quote(str(CHART)))
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, f"{script}\n{proc.stdout}\n{proc.stderr}"
    release = [d for d in yaml.safe_load_all((tmp_path / "fort-release.yaml").read_text()) if d]
    binding = next(
        d for d in release if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "hub"
    )
    assert binding["subjects"][0]["namespace"] == "fort"


def helm_installs(path) -> list[list[str]]:
    out = []
    for _, lines in blocks(path, ("bash",)):
        for cmd in commands(lines):
            for part in cmd.split("&&"):
                words = shlex.split(part.replace("$(", "").replace(")", ""))
                if words[:3] == ["helm", "upgrade", "--install"]:
                    out.append(words[3:])
    return out


@pytest.mark.parametrize("path", [GUIDE, README], ids=lambda p: p.name)
def test_every_helm_install_renders(path):
    """`helm upgrade --install NAME CHART ARGS` -> `helm template NAME CHART ARGS`."""
    installs = helm_installs(path)
    assert installs, f"no helm install in {path.name}"
    for args in installs:
        args = [str(CHART) if a == "jupyterhub/jupyterhub" else a for a in args]
        args = [a for a in args if a != "--create-namespace"]
        if "--version" in args:
            del args[args.index("--version") : args.index("--version") + 2]
        proc = subprocess.run([helm_path(), "template", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, (args, proc.stderr)
        assert "--namespace" in args, f"{path.name}: install without --namespace: {args}"
        if str(CHART) in args:
            assert any(a.startswith("hub.db.password=") for a in args), args


def test_json_documents_parse():
    text = GUIDE.read_text()
    docs = re.findall(r"^```json\n(.*?)^```", text, flags=re.M | re.S)
    assert len(docs) >= 4
    for doc in docs:
        assert json.loads(doc)["Version"] == "2012-10-17"


def test_secret_and_policy_names_match_the_values():
    cmds = [c for _, lines in blocks(GUIDE, ("bash",)) for c in commands(lines)]
    secret = next(c for c in cmds if "create secret generic fort-secrets" in c)
    keys = set(re.findall(r"--from-literal=([\w-]+)=", secret))
    env = hub_container(render([VALUES], sets=("hub.db.password=x",)))["env"]
    refs = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in env
        if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "fort-secrets"
    }
    assert keys == refs
    values = yaml.safe_load(VALUES.read_text())
    assert any("create configmap fort-policy --from-file=policy.yaml" in c for c in cmds)
    assert {"name": "fort-policy", "configMap": {"name": "fort-policy"}} in values["hub"][
        "extraVolumes"
    ]
    assert values["hub"]["config"]["FortSettings"]["policy_file"].endswith("/policy.yaml")


def test_the_guide_lists_every_placeholder_of_the_values():
    text = GUIDE.read_text()
    table = text[text.index("## 8.") : text.index("## 9.")]
    listed = set(re.findall(r"^\| `([^`]+)`", table, flags=re.M))
    values = VALUES.read_text()
    for placeholder in listed:
        assert placeholder in values, placeholder
    found = set(re.findall(r"[\w.-]*example[\w.-]*", values)) | {"123456789012", "000000000000000"}
    unlisted = {f for f in found if not any(f in p or p in f for p in listed)}
    assert unlisted == set()
