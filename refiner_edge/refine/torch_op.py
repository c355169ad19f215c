"""RefinerDLA as a PyTorch custom op (torch.library): the CUDA kernel on GPU tensors, the reference elsewhere.

The kernel's sources live in plugins/refiner_dla/ (shared with the TensorRT plugin) and are compiled on first use
with torch.utils.cpp_extension; REFINER_EDGE_PLUGIN_SRC points elsewhere if the package is installed without them.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch
from torch import nn

from .fold import fold_attention
from .reference import refiner_dla_torch

log = logging.getLogger(__name__)


def kernel_source_dir() -> Path:
    override = os.environ.get("REFINER_EDGE_PLUGIN_SRC")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "plugins" / "refiner_dla"


@functools.lru_cache(maxsize=1)
def cuda_extension():
    """The compiled kernel extension, or None (with the reason logged) where it cannot be built."""
    src = kernel_source_dir()
    sources = [src / "refinerDLATorch.cpp", src / "refinerDLAKernel.cu"]
    if not all(p.is_file() for p in sources):
        log.warning("RefinerDLA CUDA sources not found in %s; using the reference implementation", src)
        return None
    from torch.utils.cpp_extension import load

    try:
        return load(name="refiner_edge_dla", sources=[str(p) for p in sources],
                    extra_cuda_cflags=["-O3", "-std=c++17"], extra_cflags=["-O3", "-std=c++17"], verbose=False)
    except Exception as e:  # compiler missing or failing: stay correct, just slower
        log.warning("could not build the RefinerDLA CUDA extension (%s); using the reference implementation", e)
        return None


@torch.library.custom_op("refiner_edge::refiner_dla", mutates_args=())
def refiner_dla(a: torch.Tensor, weights: torch.Tensor, heads: int) -> torch.Tensor:
    """out = W2 · relu6(dw3x3(relu6(W1·a + b1)) + bd) + b2 + alpha ⊙ a, weights packed as in fold.PACK_ORDER."""
    return refiner_dla_torch(a, weights, heads)


@refiner_dla.register_kernel("cuda")
def _refiner_dla_cuda(a: torch.Tensor, weights: torch.Tensor, heads: int) -> torch.Tensor:
    ext = cuda_extension()
    if ext is None:
        return refiner_dla_torch(a, weights, heads)
    return ext.forward(a, weights.to(device=a.device, dtype=torch.float32), heads)


@refiner_dla.register_fake
def _refiner_dla_fake(a: torch.Tensor, weights: torch.Tensor, heads: int) -> torch.Tensor:
    return torch.empty_like(a)


class FusedRefine(nn.Module):
    """Drop-in for `adapt_bn(DLA(A)) * scale` of one refining block, holding the folded, packed weights."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        folded = fold_attention(attn)
        self.heads = folded.heads
        self.register_buffer("weights", torch.from_numpy(folded.packed()).to(attn.qkv.weight.device))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.ops.refiner_edge.refiner_dla(a, self.weights, self.heads)


def fuse_model(model: nn.Module) -> nn.Module:
    """Give every refining block of `model` the fused op; call again after changing the weights."""
    for blk in model.blocks:
        if blk.attn.refine:
            blk.attn.fused_refine = FusedRefine(blk.attn)
    return model


def unfuse_model(model: nn.Module) -> nn.Module:
    for blk in model.blocks:
        blk.attn.fused_refine = None
    return model
