"""Refiner-ViT's forward pass written the way the official code writes it, for checking our model against.

Independent of refiner_edge.models.model: its own modules, F.pad-based "same" padding for the DLA convolutions as in the
official Conv2dSamePadding, scalar scale handling, and the official key names, so that a state dict saved from
either model loads into the other and both must compute the same logits.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class SamePadConv(nn.Conv2d):
    def forward(self, x):
        kh, kw = self.weight.shape[-2:]
        ph, pw = max(kh - 1, 0), max(kw - 1, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class OfficialDLA(nn.Module):
    def __init__(self, h, ratio=3, k=3):
        super().__init__()
        e = h * ratio
        self.conv_exp = SamePadConv(h, e, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(e)
        self.depth_sep_conv = SamePadConv(e, e, k, groups=e, bias=False)
        self.bn2 = nn.BatchNorm2d(e)
        self.conv_pro = SamePadConv(e, h, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(h)
        self.relu = nn.ReLU6()

    def forward(self, inp):
        x = self.relu(self.bn1(self.conv_exp(inp)))
        x = self.relu(self.bn2(self.depth_sep_conv(x)))
        return self.bn3(self.conv_pro(x)) + inp


class OfficialAttention(nn.Module):
    def __init__(self, dim, heads, share):
        super().__init__()
        self.num_heads, self.share_atten = heads, share
        self.scale = (dim // heads) ** -0.5
        if share:
            self.DLA = OfficialDLA(heads)
            self.adapt_bn = nn.BatchNorm2d(heads)
            self.qkv = nn.Linear(dim, dim, bias=True)
        else:
            self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, atten=None):
        B, N, C = x.shape
        if self.share_atten:
            attn = self.adapt_bn(self.DLA(atten)) * self.scale
            v = self.qkv(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
            attn_next = atten
        else:
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            q = math.sqrt(self.scale) * q
            k = math.sqrt(self.scale) * k
            attn = q @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1) + atten * self.scale if atten is not None else attn.softmax(dim=-1)
            attn_next = attn
        x = (attn @ v).transpose(1, 2).reshape(B, attn.shape[-1], C)
        return self.proj(x), attn_next


class OfficialMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.scale_channel = nn.Parameter(1e-5 * torch.ones(dim))
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.scale_channel.unsqueeze(0).unsqueeze(0) * self.fc2(self.act(self.fc1(x)))


class OfficialBlock(nn.Module):
    def __init__(self, dim, heads, share, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = OfficialAttention(dim, heads, share)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = OfficialMlp(dim, int(dim * mlp_ratio))
        self.adjust_ratio = 0.5

    def forward(self, x, atten=None):
        x_new, atten = self.attn(self.norm1(x * self.adjust_ratio), atten)
        x = x + x_new / self.adjust_ratio
        x = x + self.mlp(self.norm2(x * self.adjust_ratio)) / self.adjust_ratio
        return x, atten


class OfficialStem(nn.Module):
    def __init__(self, dim, chans):
        super().__init__()
        c1, c2, c3 = chans
        self.conv1 = nn.Conv2d(3, c1, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.conv3 = nn.Conv2d(c2, c3, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c3)
        self.relu = nn.ReLU()
        self.proj = nn.Conv2d(c3, dim, 8, 8)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.proj(x)


class OfficialRefinerViT(nn.Module):
    def __init__(self, cfg, img_size):
        super().__init__()
        self.patch_embed = OfficialStem(cfg.dim, cfg.stem_channels)
        n = (img_size // 16) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, cfg.dim))
        self.blocks = nn.ModuleList(OfficialBlock(cfg.dim, cfg.heads, share, cfg.mlp_ratio)
                                    for share in [False, True] * (cfg.depth // 2))
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        self.aux_head = nn.Linear(cfg.dim, cfg.num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        attn = None
        for blk in self.blocks:
            x, attn = blk(x, attn)
        x = self.norm(x)
        x_cls = self.head(x[:, 0])
        x_aux = self.aux_head(x[:, 1:])
        return x_cls + 0.5 * x_aux.max(1)[0]
