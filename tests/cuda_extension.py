"""The plugin library's CUDA C++ kernel (plugins/refiner_dla/) as a PyTorch extension, built on demand, so the GPU
tests (tests/test_refine_gpu.py) and the benchmarks (benchmarks/bench_refine.py, sanitize_refine.py, gpu_check.sh)
can hold it to the same float64 reference as the Triton kernel. The package itself no longer runs it.
REFINER_EDGE_PLUGIN_SRC points at its sources if the package is installed without them.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from refiner_edge.source import SOURCE_ROOT

log = logging.getLogger(__name__)


def kernel_source_dir() -> Path:
    override = os.environ.get("REFINER_EDGE_PLUGIN_SRC")
    return Path(override) if override else SOURCE_ROOT / "plugins" / "refiner_dla"


@functools.lru_cache(maxsize=1)
def cuda_extension():
    """The compiled kernel extension, or None (with the reason logged) where it cannot be built."""
    src = kernel_source_dir()
    sources = [src / "refinerDLATorch.cpp", src / "refinerDLAKernel.cu"]
    if not all(p.is_file() for p in sources):
        log.warning("RefinerDLA CUDA sources not found in %s", src)
        return None
    from torch.utils.cpp_extension import CUDA_HOME, load

    if CUDA_HOME is None:  # torch's own search: CUDA_HOME/CUDA_PATH, then nvcc on PATH, then /usr/local/cuda
        log.warning("no CUDA toolkit found (set CUDA_HOME); the RefinerDLA CUDA extension cannot be built")
        return None
    try:
        # C++20: torch 2.13's headers need it (C++17 fails to compile them)
        return load(name="refiner_edge_dla", sources=[str(p) for p in sources],
                    extra_cuda_cflags=["-O3", "-std=c++20"], extra_cflags=["-O3", "-std=c++20"], verbose=False)
    except Exception as e:  # compiler missing or failing: the caller reports the missing extension
        log.warning("could not build the RefinerDLA CUDA extension (%s)", e)
        return None
