"""What refiner-edge can use on this machine: package versions, CUDA devices, nvcc."""
from __future__ import annotations

import re
import shutil
import subprocess
from importlib import metadata

NOT_INSTALLED = "not installed"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def _tensorrt(module: str) -> str:
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "installed")
    except ImportError:
        return NOT_INSTALLED
    except Exception as e:  # a broken install (missing libnvinfer) must not break `info`
        return f"installed but not importable ({str(e).splitlines()[0][:80]})"


def cuda_devices() -> list[str]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append(f"{i}: {p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB)")
    return out


def nvcc_version() -> str:
    nvcc = shutil.which("nvcc")
    if not nvcc:
        return "not found"
    try:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "not runnable"
    m = re.search(r"release ([\d.]+)", text)
    return m.group(1) if m else "unknown version"


def environment() -> dict:
    import platform

    from . import __version__

    return {
        "refiner-edge": __version__,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime") if _version("onnxruntime") != NOT_INSTALLED
        else _version("onnxruntime-gpu"),
        "onnx-graphsurgeon": _version("onnx-graphsurgeon"),
        "onnxruntime-extensions": _version("onnxruntime-extensions"),
        "tensorrt": _tensorrt("tensorrt"),
        "tensorrt_rtx": _tensorrt("tensorrt_rtx"),
        "cuda devices": cuda_devices() or "none",
        "nvcc": nvcc_version(),
    }
