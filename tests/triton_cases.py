"""Test data for the RefinerDLA kernels, and a runner for Triton's interpreter.

    TRITON_INTERPRET=1 python -m tests.triton_cases < cases.json > results.json

The interpreter is chosen when `triton.jit` decorates the kernel, so TRITON_INTERPRET must be set before the
kernel module is first imported. tests/test_triton_kernel.py therefore runs the interpreter cases in a child
process (this module) and leaves the test process's Triton, and any GPU test beside it, untouched.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

# Bounds for both kernels (tests/test_triton_kernel.py, tests/test_refine_gpu.py), against a float64 reference.
# FP32: the kernel accumulates in FP32 (tf32x3 on tensor cores: three TF32 products, FP32-accurate), so only FP32
# rounding of sums over <= 96 terms remains: measured <= 3e-7 of the largest output; 1e-5 leaves 30x margin.
# FP16: the output itself is rounded to FP16 (up to 2^-11 of its value), and W1, W2 and x2 enter the tensor-core
# mixes as FP16 (2^-11 relative each); measured <= 4.1e-4 of the largest output, so 4 ulp-of-max (2^-9) is the bound.
TOLERANCE = {"float32": {"max_of_peak": 1e-5, "rel_norm": 1e-5},
             "float16": {"max_of_peak": 2.0 ** -9, "rel_norm": 2e-3}}


def random_folded(heads: int, seed: int):
    """Folded weights with every part non-trivial; W1 scaled so that x1 = W1 A + b1 spans relu6's three regions
    (zero, linear, saturated) on O(1) maps."""
    from refiner_edge.refine.fold import FoldedDLA

    rng = np.random.default_rng(seed)
    e = 3 * heads
    n = lambda *s, std=1.0: (rng.standard_normal(s) * std).astype(np.float32)  # noqa: E731
    return FoldedDLA(w1=n(e, heads, std=2.0 / np.sqrt(heads)), b1=n(e, std=1.0), wd=n(e, 3, 3, std=0.5),
                     bd=n(e, std=0.5), w2=n(heads, e, std=0.3), b2=n(heads, std=0.1),
                     alpha=n(heads, std=0.3)).validate()


def random_maps(batch: int, heads: int, n: int, kind: str, seed: int, device="cpu"):
    """"o1": standard normal maps (x1 varies over relu6's whole range); "softmax": attention-like rows summing
    to 1, values ~1/N (x1 then hardly depends on A: alone they would hide W1 bugs)."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(batch, heads, n, n, generator=g, device=device)
    if kind == "o1":
        return x
    if kind == "softmax":
        return (x * 3).softmax(-1)
    raise ValueError(kind)


def run_case(case: dict) -> dict:
    """Run the Triton kernel on one case (poisoned output) and compare with the float64 NumPy reference."""
    import torch

    from refiner_edge.refine.reference import refiner_dla_numpy
    from refiner_edge.refine.triton_kernel import launch

    n, heads, batch, dtype, kind = case["n"], case["heads"], case["batch"], case["dtype"], case["maps"]
    seed = n * 1000 + heads * 10 + batch
    folded = random_folded(heads, seed)
    a = random_maps(batch, heads, n, kind, seed).to(getattr(torch, dtype))
    out = torch.full_like(a, float("nan"))  # poisoned: every element must be written
    start = time.perf_counter()
    launch(a, torch.from_numpy(folded.packed()), heads, out)
    seconds = time.perf_counter() - start
    ref = refiner_dla_numpy(a.double().numpy(), folded, dtype=np.float64)  # from the same rounded inputs
    got = out.double().numpy()
    finite = bool(np.isfinite(got).all())
    diff = np.abs(np.nan_to_num(got, nan=np.inf) - ref)
    return {**case, "finite": finite, "seconds": seconds, "ref_max": float(np.abs(ref).max()),
            "max_abs_err": float(diff.max()),
            "rel_norm_err": float(np.linalg.norm(np.nan_to_num(got) - ref) / max(np.linalg.norm(ref), 1e-30))}


def main() -> int:
    results = []
    for case in json.load(sys.stdin):
        try:
            results.append(run_case(case))
        except Exception as e:  # reported per case by the test
            results.append({**case, "error": f"{type(e).__name__}: {e}"})
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
