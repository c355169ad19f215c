"""PyTorch runner: the eval-mode model from a variant and an optional checkpoint (the FP32 reference)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..images.preprocess import Preprocess
from ..models.variants import DEFAULT_VARIANT
from .base import Runner


def torch_runner(variant: str | None = None, checkpoint: str | Path | None = None, img_size: int | None = None,
                 fused: bool = False, num_classes: int | None = None, aux_head: bool = True, **_) -> Runner:
    import torch

    from ..models.factory import create_model

    model = create_model(variant or DEFAULT_VARIANT, img_size=img_size, num_classes=num_classes,
                         checkpoint=checkpoint, aux_head=aux_head)
    if fused:  # each attention refinement as the fused RefinerDLA op, folded from the loaded weights
        from ..refine.torch_op import fuse_model

        fuse_model(model)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    cfg = model.cfg
    return Runner("torch", run, Preprocess.from_config(cfg), cfg.num_classes, checkpoint is None,
                  f"PyTorch {cfg.name}@{cfg.img_size}" + (" (fused refinement)" if fused else ""),
                  weights_sha256=model.checkpoint_sha256)
