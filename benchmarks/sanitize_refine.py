"""A few small RefinerDLA launches of both kernels for compute-sanitizer (benchmarks/gpu_check.sh runs it under
memcheck and racecheck with PYTORCH_NO_CUDA_MEMORY_CACHING=1, so every tensor is its own allocation and an access
one element past it is seen).

    PYTHONPATH=$PWD python3 benchmarks/sanitize_refine.py [--kernels triton,cuda]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# odd N (tile edges), H up to 32 (the widest padding), both types, batch > 1
CASES = [(12, 50, 2, "float32"), (16, 197, 1, "float16"), (32, 33, 3, "float32"), (32, 17, 2, "float16"),
         (4, 1, 1, "float32"), (12, 2, 3, "float16")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", default="triton,cuda", help="comma-separated: triton, cuda (default both)")
    args = parser.parse_args()
    kernels = [k for k in args.kernels.split(",") if k]
    if unknown := set(kernels) - {"triton", "cuda"}:
        parser.error(f"unknown kernels: {', '.join(sorted(unknown))}")

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to sanitize")
        return 0
    if os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") != "1":
        print("warning: PYTORCH_NO_CUDA_MEMORY_CACHING=1 is not set; small out-of-bounds accesses may go unseen")
    from tests.triton_cases import random_folded, random_maps

    run = {}
    if "triton" in kernels:
        from refiner_edge.refine.triton_kernel import launch

        run["triton"] = launch
    if "cuda" in kernels:
        from tests.cuda_extension import cuda_extension

        ext = cuda_extension()
        assert ext is not None, "the RefinerDLA CUDA extension did not build"
        run["cuda"] = ext.forward_out
    for name, fn in run.items():
        for heads, n, batch, dtype in CASES:
            w = torch.from_numpy(random_folded(heads, n).packed()).cuda()
            a = random_maps(batch, heads, n, "o1", n, device="cuda").to(getattr(torch, dtype))
            out = torch.full_like(a, float("nan"))
            fn(a, w, heads, out)
            torch.cuda.synchronize()
            assert torch.isfinite(out).all(), f"{name} H={heads} N={n}: outputs not written"
        print(f"sanitize_refine: {name}: {len(CASES)} launches completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
