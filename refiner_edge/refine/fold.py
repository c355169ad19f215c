"""Folding a refining block's DLA BatchNorms, adapt_bn and the final scale into one set of weights.

    out = W2 · relu6(dw3x3(relu6(W1·A + b1)) + bd) + b2 + alpha ⊙ A

with W1 [E,H], b1 [E], Wd [E,3,3], bd [E], W2 [H,E], b2 [H], alpha [H] and the depthwise input zero outside
the map. Every consumer (graph surgery, PyTorch op, plugin fields, tests) uses this one function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .layout import PACK_ORDER, expanded_of, offsets, shapes

if TYPE_CHECKING:
    from torch import nn

# torch is imported where a PyTorch module is folded: the ONNX surgery, the plugin fields and the ONNX Runtime op
# use FoldedDLA and compose on graphs, without torch (the core install has none).


@dataclass
class FoldedDLA:
    w1: np.ndarray  # [E, H]
    b1: np.ndarray  # [E]
    wd: np.ndarray  # [E, 3, 3]
    bd: np.ndarray  # [E]
    w2: np.ndarray  # [H, E]
    b2: np.ndarray  # [H]
    alpha: np.ndarray  # [H]

    @property
    def heads(self) -> int:
        return self.w1.shape[1]

    @property
    def expanded(self) -> int:
        return self.w1.shape[0]

    def validate(self) -> "FoldedDLA":
        for name, shape in shapes(self.heads, self.expanded).items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"RefinerDLA weight {name} has shape {got}, expected {shape}")
        return self

    def packed(self) -> np.ndarray:
        """All weights as one float32 vector in PACK_ORDER."""
        return np.concatenate([np.asarray(getattr(self, k), np.float32).ravel() for k in PACK_ORDER])

    @classmethod
    def unpack(cls, flat: np.ndarray, heads: int) -> "FoldedDLA":
        flat = np.asarray(flat, np.float32).ravel()
        e = expanded_of(flat.size, heads)
        starts = offsets(heads, e)
        return cls(**{name: flat[starts[name]:starts[name] + int(np.prod(shape))].reshape(shape)
                      for name, shape in shapes(heads, e).items()}).validate()


def compose(w1, b1, wd, bd, w3, b3, bn_scale, bn_shift, scale) -> FoldedDLA:
    """Fold the tail `scale * adapt_bn(W3 x2 + b3 + A)` (adapt_bn as y = bn_scale * x + bn_shift) into W2, b2, alpha.

    The inputs are the already BN-folded convolutions: x1 = relu6(W1 A + b1), x2 = relu6(dw(x1, Wd) + bd).
    Shared by the PyTorch folding and the ONNX graph surgery; computed in float64, stored as float32.
    """
    f64 = lambda v: np.asarray(v, np.float64)  # noqa: E731
    k = scale * f64(bn_scale)
    parts = dict(w1=f64(w1), b1=f64(b1), wd=f64(wd), bd=f64(bd), w2=k[:, None] * f64(w3),
                 b2=k * f64(b3) + scale * f64(bn_shift), alpha=k)
    return FoldedDLA(**{n: v.astype(np.float32) for n, v in parts.items()}).validate()


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm in eval mode as y = s * x + t (float64)."""
    import torch

    s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return s.cpu().numpy(), (bn.bias.double() - bn.running_mean.double() * s).cpu().numpy()


def fold_refinement(dla: nn.Module, adapt_bn: nn.BatchNorm2d, scale: float) -> FoldedDLA:
    """Fold `adapt_bn(DLA(A)) * scale` (the official refining block) into FoldedDLA."""
    import torch

    with torch.no_grad():
        return _fold_refinement(dla, adapt_bn, scale)


def _fold_refinement(dla, adapt_bn, scale: float) -> FoldedDLA:
    if dla.depth_sep_conv.kernel_size != (3, 3):
        raise ValueError("RefinerDLA supports the official 3x3 depthwise kernel only")
    s1, t1 = _bn_affine(dla.bn1)
    s2, t2 = _bn_affine(dla.bn2)
    s3, t3 = _bn_affine(dla.bn3)
    s4, t4 = _bn_affine(adapt_bn)
    # .cpu() first: the model may live on a GPU, and .numpy() only reads host memory
    w_exp = dla.conv_exp.weight.double()[:, :, 0, 0].cpu().numpy()   # [E, H]
    w_dw = dla.depth_sep_conv.weight.double()[:, 0].cpu().numpy()    # [E, 3, 3]
    w_pro = dla.conv_pro.weight.double()[:, :, 0, 0].cpu().numpy()   # [H, E]
    return compose(s1[:, None] * w_exp, t1, s2[:, None, None] * w_dw, t2, s3[:, None] * w_pro, t3, s4, t4, scale)


def fold_attention(attn: nn.Module) -> FoldedDLA:
    """FoldedDLA of a refining refiner_edge.models.model.Attention."""
    if not getattr(attn, "refine", False):
        raise ValueError("only refining blocks (the odd ones) have a DLA to fold")
    return fold_refinement(attn.DLA, attn.adapt_bn, attn.scale)
