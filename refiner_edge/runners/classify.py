"""Classifying image files with any runner: decode, preprocess, batch, softmax, top-k."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .. import defaults
from ..defaults import default
from ..errors import InputError
from ..images.labels import label_for
from .base import Runner


@dataclass
class ImageResult:
    image: str
    predictions: list[dict] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return {"image": self.image, "error": self.error} if self.error else \
            {"image": self.image, "predictions": self.predictions}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk(logits: np.ndarray, k: int, num_classes: int) -> list[list[dict]]:
    probs = softmax(logits.astype(np.float64))
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return [[{"index": int(i), "label": label_for(int(i), num_classes), "prob": float(p[i])} for i in row]
            for p, row in zip(probs, order)]


def batches(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def classify(images: list[Path], runner: Runner, k: int | None = None, batch_size: int | None = None,
             on_batch: Callable[[int], None] | None = None) -> list[ImageResult]:
    """Top-k predictions for each image; an unreadable image gets an error entry and the rest still run. None:
    defaults.INFER_TOPK and defaults.RUN_BATCH_SIZE."""
    k, batch_size = default(k, defaults.INFER_TOPK), default(batch_size, defaults.RUN_BATCH_SIZE)
    if not 1 <= k <= runner.num_classes:
        raise InputError(f"--topk must be between 1 and the model's {runner.num_classes} classes, got {k}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    batch_size = runner.batch_size(max(1, min(batch_size, len(images))))
    results: list[ImageResult] = []
    for group in batches(images, batch_size):
        arrays, ok = [], []
        for path in group:
            try:
                arrays.append(runner.preprocess.load(path))
                ok.append(ImageResult(str(path)))
            except InputError as e:
                results.append(ImageResult(str(path), error=str(e)))
        if arrays:
            logits = runner(np.stack(arrays))
            for res, preds in zip(ok, topk(logits, k, runner.num_classes)):
                res.predictions = preds
                results.append(res)
        if on_batch:
            on_batch(len(group))
    order = {str(p): i for i, p in enumerate(images)}
    return sorted(results, key=lambda r: order[r.image])
