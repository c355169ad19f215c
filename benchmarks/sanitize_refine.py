"""A few small RefinerDLA launches for compute-sanitizer (benchmarks/gpu_check.sh runs it under memcheck)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refiner_edge.refine.torch_op import cuda_extension  # noqa: E402
from tests.test_refine_gpu import random_folded, random_maps  # noqa: E402

ext = cuda_extension()
assert ext is not None, "the RefinerDLA extension did not build"
for heads, n, batch, dtype in [(12, 50, 2, torch.float32), (16, 197, 1, torch.float16), (16, 33, 3, torch.float32)]:
    w = torch.from_numpy(random_folded(heads, n).packed()).cuda()
    out = ext.forward(random_maps(batch, heads, n, 1).to(dtype), w, heads)
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()
print("sanitize_refine: launches completed")
