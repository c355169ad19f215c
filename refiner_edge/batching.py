"""Feeding many preprocessed images to a model in batches, including models whose batch size is fixed."""
from __future__ import annotations

from typing import Callable

import numpy as np


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
