"""Reference implementations of RefinerDLA: NumPy (for ONNX Runtime on CPU) and PyTorch (CPU fallback of the op)."""
from __future__ import annotations

import numpy as np

from .fold import FoldedDLA
from .layout import PACK_ORDER


def refiner_dla_numpy(a: np.ndarray, p: FoldedDLA, dtype=np.float32) -> np.ndarray:
    """out [B,H,N,M] from the map a [B,H,N,M]; computed in `dtype`, returned in a's dtype."""
    b, h, n, m = a.shape
    if h != p.heads:
        raise ValueError(f"RefinerDLA weights are for {p.heads} heads, the map has {h}")
    x = a.astype(dtype, copy=False).reshape(b, h, n * m)
    x1 = np.matmul(p.w1.astype(dtype), x) + p.b1.astype(dtype)[:, None]
    np.clip(x1, 0.0, 6.0, out=x1)
    x1 = np.pad(x1.reshape(b, -1, n, m), ((0, 0), (0, 0), (1, 1), (1, 1)))  # zero outside the map
    wd = p.wd.astype(dtype)
    x2 = np.zeros((b, p.expanded, n, m), dtype)
    for i in range(3):
        for j in range(3):
            x2 += wd[None, :, i, j, None, None] * x1[:, :, i:i + n, j:j + m]
    x2 += p.bd.astype(dtype)[:, None, None]
    np.clip(x2, 0.0, 6.0, out=x2)
    out = np.matmul(p.w2.astype(dtype), x2.reshape(b, -1, n * m)) + p.b2.astype(dtype)[:, None]
    out += p.alpha.astype(dtype)[:, None] * x
    return out.reshape(b, h, n, m).astype(a.dtype, copy=False)


def refiner_dla_torch(a, weights, heads: int, compute_dtype=None):
    """The same computation with torch ops on any device; weights is the packed float32 vector.

    Computed in `compute_dtype`: by default float64 for a float64 map and float32 otherwise. A float64 reference
    is float64 throughout (the weights too), so cuDNN's TF32 never touches it.
    """
    import torch
    import torch.nn.functional as F

    if compute_dtype is None:
        compute_dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
    p = FoldedDLA.unpack(weights.detach().cpu().numpy(), heads)
    t = {k: torch.from_numpy(np.ascontiguousarray(getattr(p, k))).to(a.device, compute_dtype)
         for k in PACK_ORDER}
    x = a.to(compute_dtype)
    e = p.expanded
    x1 = F.conv2d(x, t["w1"][:, :, None, None], t["b1"]).clamp_(0, 6)
    x2 = F.conv2d(x1, t["wd"][:, None], t["bd"], padding=1, groups=e).clamp_(0, 6)
    out = F.conv2d(x2, t["w2"][:, :, None, None], t["b2"]) + t["alpha"][None, :, None, None] * x
    return out.to(a.dtype)
