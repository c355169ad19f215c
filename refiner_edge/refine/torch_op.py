"""RefinerDLA as a PyTorch custom op (torch.library): the Triton kernel (refine/triton_kernel.py) on CUDA tensors,
the reference implementation on CPU tensors (and wherever Triton is missing or the dtype is not FP32/FP16).

The CUDA C++ kernel of the plugin library (plugins/refiner_dla/) is not used here: the GPU tests and benchmarks build
it themselves (tests/cuda_extension.py) to hold it to the same float64 reference.
"""
from __future__ import annotations

import functools
import logging

import torch
from torch import nn

from .fold import fold_attention
from .reference import refiner_dla_torch

log = logging.getLogger(__name__)


@torch.library.custom_op("refiner_edge::refiner_dla", mutates_args=())
def refiner_dla(a: torch.Tensor, weights: torch.Tensor, heads: int) -> torch.Tensor:
    """out = W2 · relu6(dw3x3(relu6(W1·a + b1)) + bd) + b2 + alpha ⊙ a, weights packed as in layout.PACK_ORDER."""
    return refiner_dla_torch(a, weights, heads)


@functools.lru_cache(maxsize=1)
def triton_launcher():
    """triton_kernel.launch, or None (with the reason logged once) where Triton cannot be imported."""
    try:
        from .triton_kernel import launch
    except ImportError as e:
        log.warning("Triton is not installed (%s); RefinerDLA runs the reference implementation on the GPU", e)
        return None
    return launch


@refiner_dla.register_kernel("cuda")
def _refiner_dla_cuda(a: torch.Tensor, weights: torch.Tensor, heads: int) -> torch.Tensor:
    launch = triton_launcher()
    if launch is None or a.dtype not in (torch.float32, torch.float16):
        return refiner_dla_torch(a, weights, heads)
    with torch.cuda.device(a.device):  # Triton launches on the current device
        return launch(a, weights, heads)


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
