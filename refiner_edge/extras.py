"""Which extra brings which optional package: the one place the install hints of MissingDependencyError come from.

The core install (`pip install refiner-edge`) has no torch, TensorRT or Triton: a command that needs one ends with
one line naming the extra to install, exit 3 (cli/common.py turns the ModuleNotFoundError into that line).
"""
from __future__ import annotations

import importlib.util

from .errors import MissingDependencyError

# module -> the extra that installs it
EXTRAS = {
    "torch": "torch",
    "safetensors": "torch",
    "tensorrt_rtx": "rtx",
    "onnxruntime_extensions": "ref",
    "triton": "triton",
    "tritonclient": "client",
    "pytriton": "serve",
}
# modules no extra of this package brings (tools of `make test` and the examples): module -> its package
PACKAGES = {
    "sklearn": "scikit-learn",   # the sample photographs (images/samples.py)
}
# TensorRT, cuda-python and pycuda depend on the platform: JetPack's system packages or NVIDIA's index bring TensorRT itself.
PLATFORM_HINT = ("pip install 'refiner-edge[cuda12]' (or [cuda13], [jetpack6], [jetpack7]; TensorRT itself comes "
                 "from JetPack or NVIDIA's index: docs/jetson.md)")


def install_hint(module: str) -> str:
    """The pip command that brings `module` (a top-level module name)."""
    top = module.split(".")[0]
    if top in EXTRAS:
        hint = f"pip install 'refiner-edge[{EXTRAS[top]}]'"
        if top == "torch":   # the registry's generic aarch64 torch is not JetPack's build
            hint += " (on a Jetson, NVIDIA's Jetson build of torch: docs/jetson.md)"
        return hint
    if top in PACKAGES:
        return f"pip install {PACKAGES[top]}"
    return PLATFORM_HINT


PLATFORM_MODULES = ("tensorrt", "cuda", "pycuda", "polygraphy")


def missing_dependency(e: ModuleNotFoundError, needed_for: str) -> MissingDependencyError | None:
    """The one-line error for an optional package that is not installed (None: `e` is not about one, so a bug)."""
    top = (e.name or "").split(".")[0]
    if top not in EXTRAS and top not in PLATFORM_MODULES:
        return None
    return _missing(top, needed_for)


def check_installed(module: str, needed_for: str) -> None:
    """The one-line error, before a child process that imports `module` is started (the parent does not import it:
    the child runs so that its memory ends with it)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ModuleNotFoundError, ValueError):   # a parent package missing, or a broken install
        found = False
    if not found:
        raise _missing(module, needed_for)


def _missing(top: str, needed_for: str) -> MissingDependencyError:
    return MissingDependencyError(f"{needed_for} needs {top}, which is not installed: {install_hint(top)}")

