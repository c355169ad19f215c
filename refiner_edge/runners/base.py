"""What every runner is: a callable from a preprocessed batch [B, 3, S, S] to logits, with the preprocessing its
model expects (so `infer` and `validate` never hard-code it). runtime.py picks and loads one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..batching import pad_batch, run_batched
from ..images.preprocess import Preprocess


@dataclass
class Runner:
    name: str
    run: Callable[[np.ndarray], np.ndarray]
    preprocess: Preprocess
    num_classes: int
    random_weights: bool
    description: str
    fixed_batch: int | None = None
    max_batch: int | None = None       # the largest batch run() takes (an engine's profile maximum); None: any
    min_batch: int | None = None       # the smallest (an engine's profile minimum): shorter batches are padded
    weights_sha256: str | None = None  # of the checkpoint the weights came from, where the runner knows it
    manifest: object | None = None     # the artifact's manifest, where it has one
    fits: Callable[[int], int] | None = None        # the largest batch up to n that memory allows; None: any n
    device_memory: Callable[[], int] | None = None  # bytes of device memory it holds now; None: it holds none
    # TensorRT: set_profiler(report) calls report(layer name, ms) for each layer of each later call, None stops
    set_profiler: Callable[[Callable[[str, float], None] | None], None] | None = None
    close: Callable[[], None] = lambda: None        # frees what it holds (device buffers, engine); safe to repeat

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits of one batch of at most batch_size() images; a batch below the model's minimum (its fixed batch,
        or an engine profile's minimum) is padded with repeats of its last image."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.run(pad_batch(x, self.fixed_batch or self.min_batch))[: len(x)]

    def batch_size(self, requested: int) -> int:
        """The batch size to feed it when asked for `requested`: the model's fixed batch, else at most what memory
        allows (`fits`, the graph's activations within the budget) and the largest batch run() takes. An engine
        refuses batches outside its profile (bench must time the batch it names), so callers that classify many
        images (infer, validate) split them here instead."""
        if self.fixed_batch:
            return self.fixed_batch
        size = requested if self.fits is None else self.fits(requested)
        return size if self.max_batch is None else min(size, self.max_batch)

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def logits(self, arrays: np.ndarray, batch_size: int = 8,
               on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Logits of many preprocessed images, in batches of batch_size(batch_size)."""
        return run_batched(self, arrays, self.batch_size(max(1, min(batch_size, len(arrays)))), on_batch=on_batch)
