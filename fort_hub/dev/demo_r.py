"""R in the demo: when ``Rscript`` with IRkernel, httr2 and jsonlite is installed (Debian:
``r-base-core r-cran-irkernel r-cran-httr2 r-cran-jsonlite``), ``fort-hub demo`` installs the
R client (``clients/r/fortclient``) into ``.fort-demo/R/library``, registers an R kernel in
``.fort-demo/jupyter/kernels/ir`` (the notebooks find it through ``JUPYTER_PATH``) and ships
``examples/getting-started-r.ipynb``. Without R it says how to add it. DEVELOPMENT ONLY.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import fort_hub

R_NOTEBOOK = Path(__file__).parent / "data" / "getting-started-r.ipynb"
R_PACKAGES = ("IRkernel", "httr2", "jsonlite")
HOW_TO_ADD_R = (
    "R notebooks are off: to add them, install R with IRkernel (Debian, as root: `apt-get "
    "install r-base-core r-cran-irkernel r-cran-httr2 r-cran-jsonlite`, or `make r-deps`) and "
    "start the demo again"
)


@dataclass
class RKernel:
    ready: bool
    note: str  # one line for the banner
    jupyter_path: str = ""  # JUPYTER_PATH entry holding kernels/ir


def r_package_dir() -> Path:
    """The R package: the checkout's ``clients/r/fortclient``, else the installed copy."""
    candidates = [
        Path(fort_hub.__file__).resolve().parent.parent / "clients" / "r" / "fortclient",
        Path(sys.prefix) / "share" / "fort-hub" / "r" / "fortclient",
    ]
    for d in candidates:
        if (d / "DESCRIPTION").exists():
            return d
    raise FileNotFoundError(
        "cannot find the R package fortclient (looked in "
        + ", ".join(str(d) for d in candidates)
        + ")"
    )


def _package_hash(pkg: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in pkg.rglob("*") if p.is_file() and "tests" not in p.parts):
        h.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _install_package(rscript: str, lib: Path) -> None:
    """``R CMD INSTALL`` into *lib*, unless the same sources are installed there already."""
    pkg = r_package_dir()
    stamp = lib / ".fortclient-sources"
    digest = _package_hash(pkg)
    if stamp.exists() and stamp.read_text() == digest and (lib / "fortclient").is_dir():
        return
    lib.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [str(Path(rscript).with_name("R")), "CMD", "INSTALL", "--no-docs", "-l", str(lib),
         str(pkg)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"R CMD INSTALL fortclient failed:\n{(r.stdout + r.stderr)[-2000:]}")
    stamp.write_text(digest)


def setup_r_kernel(state: Path) -> RKernel:
    """Install the R client and register the R kernel under *state*, when R is there."""
    rscript = shutil.which("Rscript")
    if not rscript:
        return RKernel(False, HOW_TO_ADD_R)
    probe = (
        "for (p in commandArgs(TRUE)) if (!requireNamespace(p, quietly = TRUE)) cat('missing', p, '\\n');"
        "cat('kernelspec', system.file('kernelspec', package = 'IRkernel'), '\\n')"
    )
    r = subprocess.run(
        [rscript, "-e", probe, *R_PACKAGES], capture_output=True, text=True, timeout=120
    )
    missing = [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("missing ")]
    if r.returncode != 0 or missing:
        return RKernel(
            False, f"R lacks {', '.join(missing) or 'a working Rscript'}. {HOW_TO_ADD_R}"
        )
    lib = state / "R" / "library"
    try:
        _install_package(rscript, lib)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        return RKernel(False, f"R notebooks are off: {e}")
    kernel_dir = state / "jupyter" / "kernels" / "ir"
    kernel_dir.mkdir(parents=True, exist_ok=True)
    spec_src = next(
        (Path(ln.split(maxsplit=1)[1].strip()) for ln in r.stdout.splitlines()
         if ln.startswith("kernelspec ") and len(ln.split()) > 1),
        None,
    )  # fmt: skip
    for logo in ("logo-64x64.png", "logo-svg.svg"):
        if spec_src is not None and (spec_src / logo).exists():
            shutil.copyfile(spec_src / logo, kernel_dir / logo)
    spec = {
        "argv": [str(Path(rscript).with_name("R")), "--slave", "-e", "IRkernel::main()",
                 "--args", "{connection_file}"],
        "display_name": "R",
        "language": "R",
        "env": {"R_LIBS": str(lib)},
    }  # fmt: skip
    (kernel_dir / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
    return RKernel(
        True,
        "R: the 'R' kernel with library(fortclient); examples/getting-started-r.ipynb",
        str(state / "jupyter"),
    )
