"""Inference backends: one small class per runtime, all mapping a preprocessed batch [B, 3, S, S] to logits.

A backend also says which preprocessing its model expects, so `infer` and `validate` never hard-code it.
The TensorRT engine backend plugs in here (BACKENDS) with the engine builds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .artifacts import read_manifest
from .errors import InputError
from .preprocess import Preprocess
from .variants import DEFAULT_VARIANT, get_variant


@dataclass
class Backend:
    name: str
    run: Callable[[np.ndarray], np.ndarray]
    preprocess: Preprocess
    num_classes: int
    random_weights: bool
    description: str
    fixed_batch: int | None = None
    weights_sha256: str | None = None  # of the checkpoint the weights came from, where the backend knows it

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits of one batch (of at most fixed_batch images where the model's batch is fixed)."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.run(pad_batch(x, self.fixed_batch))[: len(x)]

    def logits(self, arrays: np.ndarray, batch_size: int = 8,
               on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Logits of many preprocessed images, in batches (the model's own size where it is fixed)."""
        return run_batched(self.run, arrays, batch_size, self.fixed_batch, on_batch)


def pad_batch(x: np.ndarray, size: int | None) -> np.ndarray:
    """A short batch for a fixed-batch model, filled up with repeats of its last image (None: unchanged)."""
    if size is None or len(x) >= size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


def run_batched(run: Callable[[np.ndarray], np.ndarray], arrays: np.ndarray, batch_size: int,
                fixed_batch: int | None = None, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """run() over `arrays` in batches of batch_size (fixed_batch where the model fixes it), outputs concatenated."""
    size = fixed_batch or batch_size
    out = []
    for start in range(0, len(arrays), size):
        x = np.ascontiguousarray(arrays[start:start + size], dtype=np.float32)
        out.append(run(pad_batch(x, fixed_batch))[: len(x)])
        if on_batch:
            on_batch(len(x))
    return np.concatenate(out)


def torch_backend(variant: str | None = None, checkpoint: str | Path | None = None, img_size: int | None = None,
                  fused: bool = False, num_classes: int | None = None, aux_head: bool = True, **_) -> Backend:
    import torch

    from .api import create_model

    model = create_model(variant or DEFAULT_VARIANT, img_size=img_size, num_classes=num_classes,
                         checkpoint=checkpoint, aux_head=aux_head, fused=fused)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    cfg = model.cfg
    return Backend("torch", run, Preprocess.from_config(cfg), cfg.num_classes, checkpoint is None,
                   f"PyTorch {cfg.name}@{cfg.img_size}" + (" (fused refinement)" if fused else ""),
                   weights_sha256=model.checkpoint_sha256)


def onnxruntime_backend(onnx: str | Path | None = None, variant: str | None = None, img_size: int | None = None,
                        **_) -> Backend:
    if onnx is None:
        raise InputError("the onnxruntime backend needs --onnx MODEL.onnx (write one with `refiner-edge export`)")
    from .runtime import ort_session

    path = Path(onnx)
    if not path.is_file():
        raise InputError(f"ONNX model not found: {path}")
    session = ort_session(path)
    manifest = read_manifest(path) or {}
    inp = session.get_inputs()[0]
    pre = onnx_preprocess(path, manifest, inp.shape, variant, img_size)
    num_classes = session.get_outputs()[0].shape[-1]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    name = inp.name  # graphs from elsewhere may name their input differently: the first input is the image

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x})[0]

    # the manifest records checkpoint_sha256 = null for random weights; without a manifest we cannot tell
    random_weights = "checkpoint_sha256" in manifest and manifest["checkpoint_sha256"] is None
    return Backend("onnxruntime", run, pre, int(num_classes), random_weights,
                   f"ONNX Runtime {path.name}", fixed_batch=fixed)


def onnx_preprocess(path: Path, manifest: dict, input_shape, variant: str | None = None,
                    img_size: int | None = None) -> Preprocess:
    """The preprocessing an ONNX graph expects: from its manifest, else from the variant and its input shape."""
    size = input_shape[-1] if isinstance(input_shape[-1], int) else None
    if manifest.get("preprocess"):
        pre = Preprocess(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in manifest["preprocess"].items()
                            if k != "resize_size"})
    else:
        cfg = get_variant(variant or manifest.get("variant") or DEFAULT_VARIANT)
        pre = Preprocess.from_config(cfg, img_size=img_size or size)
    if size is not None and size != pre.img_size:
        raise InputError(f"{path} takes {size}x{size} images but its preprocessing says {pre.img_size}")
    return pre


BACKENDS: dict[str, Callable[..., Backend]] = {
    "torch": torch_backend,
    "onnxruntime": onnxruntime_backend,
}


def load_backend(name: str, **options) -> Backend:
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise InputError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}") from None
    return factory(**options)
