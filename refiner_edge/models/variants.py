"""Refiner-ViT variants as data: architecture and evaluation preprocessing, read by the model and the transforms."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import InputError


@dataclass(frozen=True)
class VariantConfig:
    name: str
    depth: int
    dim: int
    heads: int
    crop_pct: float
    img_size: int = 224
    patch_size: int = 16
    mlp_ratio: float = 3.0
    dla_expand_ratio: int = 3
    dla_kernel: int = 3
    stem_channels: tuple[int, int, int] = (32, 64, 128)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    num_classes: int = 1000
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def refining_blocks(self) -> list[int]:
        """Indices of the blocks that refine the received attention map (the odd ones)."""
        return [i for i in range(self.depth) if i % 2 == 1]

    def tokens(self, img_size: int | None = None) -> int:
        """N, the attention map side: patches plus the cls token."""
        side = (img_size or self.img_size) // self.patch_size
        return side * side + 1

    def with_overrides(self, **kwargs) -> "VariantConfig":
        """A copy with the given fields replaced (None keeps the variant's); a bad size is the user's input."""
        cfg = replace(self, **{k: v for k, v in kwargs.items() if v is not None})
        if cfg.img_size < cfg.patch_size or cfg.img_size % cfg.patch_size:
            raise InputError(f"--img-size {cfg.img_size} is not a positive multiple of the patch size "
                             f"{cfg.patch_size} (e.g. {max(1, round(cfg.img_size / cfg.patch_size)) * cfg.patch_size})")
        if cfg.num_classes < 1:
            raise InputError(f"num_classes must be at least 1, got {cfg.num_classes}")
        return cfg


VARIANTS: dict[str, VariantConfig] = {
    "refiner-vit-s": VariantConfig("refiner-vit-s", depth=16, dim=384, heads=12, crop_pct=0.9,
                                   description="Refiner-ViT-S, 25.0M params, 83.6 top-1 at 224"),
    "refiner-vit-m": VariantConfig("refiner-vit-m", depth=32, dim=420, heads=12, crop_pct=1.0,
                                   description="Refiner-ViT-M, 55.0M params, 84.6 top-1 at 224"),
    "refiner-vit-l": VariantConfig("refiner-vit-l", depth=32, dim=512, heads=16, crop_pct=1.13,
                                   description="Refiner-ViT-L, 80.6M params, 84.9 top-1 at 224, 86.0 at 448"),
    # Not a released model: the same architecture scaled down so tests and demos run in seconds on a CPU.
    "refiner-vit-tiny": VariantConfig("refiner-vit-tiny", depth=4, dim=48, heads=4, crop_pct=0.9, img_size=64,
                                      stem_channels=(8, 16, 32),
                                      description="test-sized Refiner-ViT (not a released model)"),
}

DEFAULT_VARIANT = "refiner-vit-s"


def get_variant(name: str) -> VariantConfig:
    try:
        return VARIANTS[name.lower()]
    except KeyError:
        raise InputError(f"unknown variant '{name}'; choose one of: {', '.join(VARIANTS)}") from None
