"""Refiner-ViT for inference, computing exactly what the official code computes (tests/test_model.py holds it to
tests/official_reference.py, a transcription of the official forward pass).

Module and parameter names follow the official code so its checkpoints load without renaming.
Even blocks compute a fresh softmax attention map (plus head_dim^-0.5 times the previous map); odd blocks
refine the received map with DLA + adapt_bn, use it for their values, and pass the unrefined map on.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .variants import VariantConfig

LN_EPS = 1e-6
ADJUST_RATIO = 0.5  # the official blocks scale their input by 0.5 and divide each residual branch by it


class ConvStem(nn.Module):
    """conv7x7 s2 + BN + ReLU, two conv3x3 + BN + ReLU, then conv8x8 s8 to tokens (the official PatchEmbed_cnn)."""

    def __init__(self, cfg: VariantConfig):
        super().__init__()
        c1, c2, c3 = cfg.stem_channels
        self.conv1 = nn.Conv2d(3, c1, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c3)
        half = cfg.patch_size // 2
        self.proj = nn.Conv2d(c3, cfg.dim, half, stride=half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.proj(x)


class DLA(nn.Module):
    """Distributed local attention over the map A [B, H, N, N]: expand H -> E, depthwise conv, project back, + A."""

    def __init__(self, heads: int, expand_ratio: int = 3, kernel: int = 3):
        super().__init__()
        hidden = heads * expand_ratio
        self.conv_exp = nn.Conv2d(heads, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.depth_sep_conv = nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv_pro = nn.Conv2d(hidden, heads, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(heads)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn1(self.conv_exp(a)))
        x = F.relu6(self.bn2(self.depth_sep_conv(x)))
        return self.bn3(self.conv_pro(x)) + a


class Attention(nn.Module):
    def __init__(self, cfg: VariantConfig, refine: bool):
        super().__init__()
        self.heads = cfg.heads
        self.refine = refine
        self.scale = cfg.head_dim ** -0.5
        # Refining blocks only need values: the official code keeps the name qkv for their C -> C projection.
        self.qkv = nn.Linear(cfg.dim, cfg.dim if refine else 3 * cfg.dim, bias=True)
        if refine:
            self.DLA = DLA(cfg.heads, cfg.dla_expand_ratio, cfg.dla_kernel)
            self.adapt_bn = nn.BatchNorm2d(cfg.heads)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.fused_refine = None  # set by refiner_edge.refine.fuse_model: a module computing the same map

    def refine_map(self, attn: torch.Tensor) -> torch.Tensor:
        if self.fused_refine is not None:
            return self.fused_refine(attn)
        return self.adapt_bn(self.DLA(attn)) * self.scale

    def forward(self, x: torch.Tensor, attn_prev: torch.Tensor | None):
        _, n, c = x.shape
        hd = c // self.heads
        if self.refine:
            if attn_prev is None:
                raise ValueError("a refining block needs the attention map of the block before it")
            v = self.qkv(x).reshape(-1, n, self.heads, hd).transpose(1, 2)
            attn = self.refine_map(attn_prev)
            attn_next = attn_prev
        else:
            qkv = self.qkv(x).reshape(-1, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            root = math.sqrt(self.scale)
            attn = ((q * root) @ (k * root).transpose(-2, -1)).softmax(dim=-1)
            if attn_prev is not None:
                attn = attn + attn_prev * self.scale
            attn_next = attn
        out = (attn @ v).transpose(1, 2).reshape(-1, n, c)
        return self.proj(out), attn_next


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.scale_channel = nn.Parameter(1e-5 * torch.ones(dim))
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x))) * self.scale_channel


class Block(nn.Module):
    def __init__(self, cfg: VariantConfig, refine: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=LN_EPS)
        self.attn = Attention(cfg, refine)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=LN_EPS)
        self.mlp = Mlp(cfg.dim, int(cfg.dim * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor, attn: torch.Tensor | None):
        y, attn = self.attn(self.norm1(x * ADJUST_RATIO), attn)
        x = x + y / ADJUST_RATIO
        x = x + self.mlp(self.norm2(x * ADJUST_RATIO)) / ADJUST_RATIO
        return x, attn


class RefinerViT(nn.Module):
    """Refiner-ViT, eval semantics: logits = head(cls) [+ 0.5 * max over patches of aux_head(patches)]."""

    def __init__(self, cfg: VariantConfig, img_size: int | None = None, num_classes: int | None = None,
                 aux_head: bool = True):
        super().__init__()
        self.cfg = cfg.with_overrides(img_size=img_size, num_classes=num_classes)
        cfg = self.cfg
        if cfg.img_size % cfg.patch_size:
            raise ValueError(f"image size {cfg.img_size} is not divisible by the patch size {cfg.patch_size}")
        self.patch_embed = ConvStem(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.tokens(), cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg, refine=(i % 2 == 1)) for i in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=LN_EPS)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        self.aux_head = nn.Linear(cfg.dim, cfg.num_classes) if aux_head else None
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        attn = None
        for blk in self.blocks:
            x, attn = blk(x, attn)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        logits = self.head(x[:, 0])
        if self.aux_head is not None:
            logits = logits + 0.5 * self.aux_head(x[:, 1:]).amax(dim=1)
        return logits


def count_parameters(model: nn.Module, include_aux: bool = False) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if include_aux or not name.startswith("aux_head."))
