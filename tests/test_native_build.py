"""The CUDA kernel and the TensorRT plugin compile (CPU machines: nvcc yes, TensorRT headers only where found)."""
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .helpers import tensorrt_header_sets

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "plugins" / "refiner_dla"
ARCHS = ("80", "86", "87", "89", "90")  # A100, A10/A40, Orin, L4/L40S, H100/H200


def _nvcc() -> str:
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if nvcc is None:
        pytest.skip("nvcc not found: the CUDA kernel cannot be compiled on this machine")
    return nvcc


def _tensorrt_include() -> Path | None:
    # a TensorRT install, else the public headers kept beside the checkout for machines without one (CI too)
    roots = [os.environ.get("TensorRT_ROOT"), "/usr", "/usr/local/tensorrt", "/usr/local/TensorRT",
             tensorrt_header_sets() / "10.13.3"]
    for root in filter(None, roots):
        for sub in ("include", "include/x86_64-linux-gnu", "include/aarch64-linux-gnu"):
            if (Path(root) / sub / "NvInfer.h").is_file():
                return Path(root) / sub
    return None


@pytest.mark.parametrize("arch", ARCHS)
def test_kernel_compiles(tmp_path, arch):
    nvcc = _nvcc()
    obj = tmp_path / f"k{arch}.o"
    cmd = [nvcc, "-std=c++17", "-O3", "-c", str(PLUGIN_DIR / "refinerDLAKernel.cu"), "-o", str(obj),
           f"-gencode=arch=compute_{arch},code=sm_{arch}", "-Xptxas", "-v", "-Werror", "all-warnings"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert obj.stat().st_size > 0
    # ptxas reports each instantiation: none may spill registers to local memory
    spills = [line for line in result.stderr.splitlines() if "spill" in line and "0 bytes spill" not in line]
    assert not spills, spills


def test_kernel_header_needs_only_cuda_runtime(tmp_path):
    """The launcher header compiles with a plain host compiler and the CUDA runtime headers alone."""
    nvcc = _nvcc()
    src = tmp_path / "use.cpp"
    src.write_text('#include "refinerDLAKernel.h"\nint main() { return refiner_edge::refinerDLAWeightCount(12, 36) '
                   '== 2 * 36 * 12 + 11 * 36 + 2 * 12 ? 0 : 1; }\n')
    candidates = [Path(nvcc).resolve().parents[1] / "include", Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
                  / "include", Path("/usr/local/cuda/include")]
    cuda_include = next((p for p in candidates if (p / "cuda_runtime.h").is_file()), None)
    if cuda_include is None:
        pytest.skip("cuda_runtime.h not found beside nvcc or in /usr/local/cuda/include")
    exe = tmp_path / "use"
    result = subprocess.run(["g++", "-std=c++17", f"-I{PLUGIN_DIR}", f"-I{cuda_include}", str(src), "-o", str(exe)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert subprocess.run([str(exe)]).returncode == 0


def test_cpp_layout_agrees_with_python(tmp_path):
    """The generated refinerDLALayout.h computes the sizes, offsets, names and E that refine/layout.py does."""
    from refiner_edge.refine import layout

    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    cases = [(1, 1), (4, 12), (12, 36), (16, 48), (32, 128)]
    src = tmp_path / "layout.cpp"
    src.write_text('#include "refinerDLALayout.h"\n#include <cstdio>\nusing namespace refiner_edge;\nint main() {\n'
                   + "".join(f"  for (int f = 0; f < kRefinerDLANbWeightFields; ++f) std::printf(\"%s %zu %zu\\n\", "
                             f"kRefinerDLAWeightFieldNames[f], refinerDLAFieldOffset<size_t>(f, {h}, {e}), "
                             f"refinerDLAFieldSize<size_t>(f, {h}, {e}));\n"
                             f"  std::printf(\"count %zu %d %d\\n\", refinerDLAWeightCount({h}, {e}), "
                             f"refinerDLAExpandedOf(refinerDLAWeightCount({h}, {e}), {h}), "
                             f"refinerDLAExpandedOf(refinerDLAWeightCount({h}, {e}) + 1, {h}));\n" for h, e in cases)
                   + "}\n")
    exe = tmp_path / "layout"
    built = subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{PLUGIN_DIR}", str(src), "-o",
                            str(exe)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    got = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()
    expected = []
    for h, e in cases:
        starts, shapes = layout.offsets(h, e), layout.shapes(h, e)
        expected += [f"{k} {starts[k]} {math.prod(shapes[k])}" for k in layout.PACK_ORDER]
        expected.append(f"count {layout.packed_size(h, e)} {e} -1")
    assert got == expected


def test_plugin_builds_with_cmake(tmp_path):
    include = _tensorrt_include()
    if include is None:
        pytest.skip("TensorRT headers (NvInfer.h) not found: set TensorRT_ROOT to compile the plugin")
    nvcc = _nvcc()
    build = tmp_path / "build"
    configure = subprocess.run(["cmake", "-S", str(PLUGIN_DIR), "-B", str(build), f"-DTensorRT_ROOT={include.parent}",
                                f"-DCMAKE_CUDA_COMPILER={nvcc}", "-DCMAKE_CUDA_ARCHITECTURES=90"],
                               capture_output=True, text=True, timeout=600)
    assert configure.returncode == 0, configure.stdout[-2000:] + configure.stderr[-2000:]
    built = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    lib = build / "librefiner_edge_plugin.so"
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout
    assert " getCreators" in symbols and " setLoggerFinder" in symbols
