"""The Python entry point for models: variant name + optional checkpoint -> eval-mode Refiner-ViT."""
from __future__ import annotations

from pathlib import Path

from .checkpoint import load_into
from .model import RefinerViT
from .variants import get_variant


def create_model(variant: str = "refiner-vit-s", img_size: int | None = None, num_classes: int | None = None,
                 checkpoint: str | Path | None = None, aux_head: bool = True, seed: int = 0) -> RefinerViT:
    """Build a Refiner-ViT in eval mode mapping [B, 3, H, W] floats to logits [B, num_classes].

    img_size defaults to the variant's (224 for S/M/L); any multiple of 16 works, and a checkpoint trained at another
    resolution has its position embedding resized. Without a checkpoint the weights are random.
    seed: the random initialisation is drawn with it (without touching the global RNG), so a model without a
    checkpoint is the same on every run with the same torch version.
    """
    import torch

    cfg = get_variant(variant)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RefinerViT(cfg, img_size=img_size, num_classes=num_classes, aux_head=aux_head)
    model.checkpoint_sha256 = None
    if checkpoint is not None:
        model.checkpoint_sha256 = load_into(model, checkpoint)
    model.eval()
    return model

