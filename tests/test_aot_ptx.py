"""The AOT plugin's PTX assembles on the oldest CUDA driver of every target that embeds it.

TensorRT hands the PTX of an AOT plugin to the driver of the machine that runs the engine. Each target row
records the oldest CUDA its devices run (refiner_edge/engine/targets.py, `min_cuda`); refine/aot.py compiles the
Triton kernel to a PTX ISA version that CUDA knows. This test assembles each datacenter and Jetson AOT target's
PTX with the ptxas OF THAT CUDA VERSION, taken from the registry's wheels (nvidia-cuda-nvcc-cu12 for 12.x,
nvidia-cuda-nvcc for 13.x), not with the ptxas Triton bundles (CUDA 12.9, which accepts what a CUDA 12.0 or 13.0
driver rejects). The wheels are fetched once with pip into build/ptxas/ (git-ignored); where they cannot be
fetched (no registry), the test skips and says so.

Before the PTX version was chosen, Triton 3.9 wrote `.version 8.8` for sm_80/86/89 (CUDA 12.0's ptxas: "Unsupported
.version 8.8") and `.version 9.4` for sm_90/110 (CUDA 13.0's: "Unsupported .version 9.4").
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from refiner_edge.engine.targets import TARGETS

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "ptxas"
AOT_TARGETS = [t for t in TARGETS.values() if t.plugin == "aot" and not t.rtx]


def _wheel(cuda: str) -> str:
    """The registry requirement whose wheel carries CUDA `cuda`'s ptxas."""
    major = cuda.split(".")[0]
    return f"nvidia-cuda-nvcc-cu12=={cuda}.*" if major == "12" else f"nvidia-cuda-nvcc=={cuda}.*"


def ptxas(cuda: str) -> Path:
    """CUDA `cuda`'s ptxas, from its registry wheel (pip download, once; the binary is kept in build/ptxas)."""
    tool = CACHE / cuda / "ptxas"
    if tool.is_file():
        return tool
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "-d", tmp, _wheel(cuda)], capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            pytest.skip(f"could not fetch {_wheel(cuda)} from the registry (pip download: "
                        f"{(done.stderr.strip().splitlines() or ['no wheel'])[-1]}): CUDA {cuda}'s ptxas is needed")
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith("/bin/ptxas"))
            tool.parent.mkdir(parents=True, exist_ok=True)
            partial = tool.with_suffix(".partial")
            partial.write_bytes(wheel.read(member))
    partial.chmod(0o755)
    partial.replace(tool)
    return tool


def assemble(tool: Path, ptx: str) -> subprocess.CompletedProcess:
    arch = re.search(r"^\.target\s+(sm_\w+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        return subprocess.run([str(tool), f"--gpu-name={arch}", str(src), "-o", str(Path(tmp) / "k.cubin")],
                              capture_output=True, text=True, timeout=300)


def test_every_aot_target_records_its_oldest_cuda():
    assert {t.name for t in AOT_TARGETS} >= {"a100", "a100-portable", "a10", "l4", "l40s", "h100", "h200", "b200",
                                             "thor-jp7", "thor-trt11", "orin-agx-jp7"}
    for t in AOT_TARGETS:
        assert re.fullmatch(r"1[23]\.\d", t.min_cuda or ""), t
    assert TARGETS["thor-jp7"].min_cuda == "13.0"               # JetPack 7.0
    assert TARGETS["h100"].min_cuda.startswith("12.")           # CUDA 12 datacenter drivers
    assert TARGETS["orin-agx-jp6"].min_cuda == "12.6"           # JetPack 6 (library form: no PTX to assemble)


@pytest.mark.parametrize("target", AOT_TARGETS, ids=[t.name for t in AOT_TARGETS])
def test_aot_ptx_assembles_with_the_targets_oldest_ptxas(target):
    pytest.importorskip("triton", reason="Triton is not installed: pip install triton")
    from refiner_edge.refine import aot

    tool = ptxas(target.min_cuda)
    cc = 80 if target.hardware_compat == "ampere+" else int(target.compute_capability.replace(".", ""))
    ptx_version = aot.ptx_version(target.min_cuda, cc)
    for heads, dtype in ((12, "fp16"), (16, "fp16"), (12, "fp32")):   # Refiner-ViT-S and -L
        kernel = aot.aot_kernel(heads, 3 * heads, dtype, cc, ptx_version)
        declared = re.search(r"^\.version (\d+)\.(\d+)", kernel.ptx, re.M)
        assert int(declared.group(1)) * 10 + int(declared.group(2)) == ptx_version
        done = assemble(tool, kernel.ptx)
        assert done.returncode == 0, f"CUDA {target.min_cuda}'s ptxas on {target.name} H={heads} {dtype}: " \
                                     f"{done.stderr.strip()[-500:]}"


def test_triton_default_ptx_is_what_the_old_drivers_reject():
    """Why the version is chosen: Triton's default for sm_90 is newer than CUDA 13.0's ptxas (JetPack 7.0 on Thor
    rejects the same way) and than CUDA 12.0's (H100 on a CUDA 12.0 driver)."""
    pytest.importorskip("triton", reason="Triton is not installed: pip install triton")
    from refiner_edge.refine import aot

    kernel = aot.aot_kernel(12, 36, "fp16", 90)
    done = assemble(ptxas("12.0"), kernel.ptx)
    assert done.returncode != 0 and "Unsupported .version" in done.stderr, done.stderr


def test_the_version_chosen_is_what_the_manifest_records():
    """register() (which needs TensorRT) returns this record, and build_engine writes it to the engine manifest's
    report.aot_ptx; the record itself is made without TensorRT."""
    pytest.importorskip("triton", reason="Triton is not installed: pip install triton")
    from refiner_edge.refine import aot

    try:
        assert aot._configure(80, "12.0") == {"compute_capability": 80, "min_cuda": "12.0", "ptx_version": "8.0"}
        assert aot._configure(110, "13.0")["ptx_version"] == "9.0"
        assert aot._ptx_version == 90 and aot._target_cc == 110   # what aot_impl compiles with
    finally:
        aot._target_cc = aot._ptx_version = None
