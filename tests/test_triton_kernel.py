"""The RefinerDLA Triton kernel on the CPU: Triton's interpreter against a float64 reference, and ahead-of-time
compilation for every GPU target without a GPU (registers, shared memory and spills from ptxas)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton", reason="Triton is not installed: pip install triton (the dev extra has it)")

from refiner_edge.refine import triton_kernel  # noqa: E402
from tests.triton_cases import TOLERANCE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Every N (1, 2, 23, 50 and a realistic 197 = Refiner-ViT@224), H (4, 12, 16, 32), batch (1, 3), dtype and map
# kind appears; ~85 s on 2 CPU cores, most of it the N = 197 case.
FAST = [(1, 4, 3, "float32", "o1"), (1, 12, 1, "float16", "softmax"), (2, 12, 3, "float16", "o1"),
        (2, 32, 1, "float32", "softmax"), (23, 4, 3, "float16", "softmax"), (23, 12, 3, "float32", "o1"),
        (23, 16, 1, "float16", "o1"), (23, 32, 1, "float16", "o1"), (50, 16, 1, "float32", "softmax"),
        (50, 12, 1, "float16", "o1"), (50, 32, 1, "float32", "o1"), (197, 12, 1, "float16", "o1")]
SLOW = [(197, 16, 3, "float32", "o1"), (197, 16, 1, "float16", "softmax"), (50, 32, 3, "float16", "softmax"),
        (50, 4, 3, "float32", "o1"), (23, 16, 3, "float32", "softmax")]


KEYS = ("n", "heads", "batch", "dtype", "maps")


def _start_interpreter(cases) -> subprocess.Popen:
    """Run the cases in a child process with TRITON_INTERPRET=1 (see tests/triton_cases.py for why)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-W", "ignore", "-m", "tests.triton_cases"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    proc.stdin.write(json.dumps([dict(zip(KEYS, c)) for c in cases]))
    proc.stdin.close()
    return proc


def _results(proc: subprocess.Popen) -> dict:
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.wait(timeout=1200) == 0, err[-3000:]
    return {tuple(r[k] for k in KEYS): r for r in json.loads(out)}


@pytest.fixture(scope="module", autouse=True)
def interpreter_job(request):
    """Start the fast interpreter cases at once, in the background, where any of them was selected: the
    ahead-of-time compile tests run meanwhile on the other core."""
    wanted = any(item.nodeid.startswith(request.node.nodeid) and "matches_float64_reference[" in item.nodeid
                 for item in request.session.items)
    proc = _start_interpreter(FAST) if wanted else None
    yield proc
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def fast_results(interpreter_job):
    return _results(interpreter_job)


# Datacenter and Jetson targets (A100 sm_80, A10/A40 sm_86, Orin sm_87, L4/L40S sm_89, H100/H200 sm_90), then newer
# ones where this Triton knows them.
TARGETS = [80, 86, 87, 89, 90]
NEWER = [100, 103, 110, 120, 121]
SHAPES = [(12, "float16"), (16, "float16"), (16, "float32"), (32, "float16"), (32, "float32")]
NEWER_SHAPES = SHAPES[:2]  # Refiner-ViT's own head counts: enough to show the newer targets work
# The AMPERE_PLUS hardware-compatibility level (and TensorRT's default launch) allows 48 KiB of shared memory;
# Refiner-ViT's head counts (12, 16) must fit it. H = 32 in FP32 needs more (opt-in, up to 99 KiB on sm_86/89).
SHARED_LIMIT = {12: 48 * 1024, 16: 48 * 1024, 32: 99 * 1024}


def _compile_or_skip(heads, dtype, cc, required: bool):
    try:
        return triton_kernel.compile_for(heads, 3 * heads, {"float16": "fp16", "float32": "fp32"}[dtype], cc)
    except Exception as e:
        if required:
            raise
        pytest.skip(f"Triton {triton.__version__} cannot compile for sm_{cc}: {type(e).__name__}: {str(e)[:200]}")


@pytest.mark.parametrize("cc", TARGETS + NEWER)
def test_compiles_ahead_of_time_without_spills(cc):
    """triton.compile for each target on this CPU machine; ptxas's resource report must show no spills."""
    rows = []
    for heads, dtype in SHAPES if cc in TARGETS else NEWER_SHAPES:
        kernel = _compile_or_skip(heads, dtype, cc, required=cc in TARGETS)
        usage = triton_kernel.resource_usage(kernel)
        rows.append(f"sm_{cc} H={heads:2d} {dtype}: {usage['registers']} registers, {usage['spill_stores']} B spill "
                    f"stores, {usage['spill_loads']} B spill loads, {usage['shared_bytes']} B shared, "
                    f"{usage['num_warps']} warps, {usage['mma_instructions']} mma")
        assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, rows[-1]
        assert usage["shared_bytes"] <= SHARED_LIMIT[heads], rows[-1]
        ptx = kernel.asm["ptx"]
        assert f".entry {kernel.metadata.name}" in ptx and kernel.metadata.name == "refiner_dla_kernel"
        assert usage["mma_instructions"] > 0, "the head mixes must run on tensor cores (mma)"
    print("\n" + "\n".join(rows))


def _check(r: dict):
    assert "error" not in r, r["error"]
    assert r["finite"], "some outputs were not written (still NaN) or are not finite"
    tol = TOLERANCE[r["dtype"]]
    bound = tol["max_of_peak"] * max(1.0, r["ref_max"])
    print(f"N={r['n']} H={r['heads']} B={r['batch']} {r['dtype']} {r['maps']}: max |err| {r['max_abs_err']:.2e} "
          f"(bound {bound:.1e}), rel {r['rel_norm_err']:.1e}, {r['seconds']:.1f} s interpreted")
    assert r["max_abs_err"] <= bound, r
    assert r["rel_norm_err"] <= tol["rel_norm"], r


@pytest.mark.parametrize("case", FAST, ids=lambda c: "-".join(map(str, c)))
def test_interpreted_kernel_matches_float64_reference(fast_results, case):
    _check(fast_results[case])


@pytest.mark.slow
def test_interpreted_kernel_matches_float64_reference_more_shapes():
    for r in _results(_start_interpreter(SLOW)).values():
        _check(r)


def test_launcher_refuses_what_the_kernel_cannot_do():
    import torch

    w = torch.zeros(2 * 12 * 36 + 11 * 36 + 2 * 12)
    with pytest.raises(ValueError, match="heads"):
        triton_kernel.launch(torch.zeros(1, 11, 5, 5), w, 12)
    with pytest.raises(ValueError, match="float32 or float16"):
        triton_kernel.launch(torch.zeros(1, 12, 5, 5, dtype=torch.float64), w, 12)
    with pytest.raises(ValueError, match="do not fit"):
        triton_kernel.launch(torch.zeros(1, 12, 5, 5), w[:-1], 12)
    with pytest.raises(ValueError, match="between 1 and 32"):
        triton_kernel.constexprs(33, 99)
    with pytest.raises(ValueError, match=r"\[batch, heads, N, N\]"):
        triton_kernel.launch(torch.zeros(1, 12, 5, 6), w, 12)


