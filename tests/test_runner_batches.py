"""infer and validate feed a runner batches it takes: an engine refuses batches outside its optimisation profile
(bench must time the batch it names), so classify() and Runner.logits() split and pad to the profile instead."""
import dataclasses

import numpy as np
import pytest

from refiner_edge.errors import InputError
from refiner_edge.runners.runtime import load_runner
from refiner_edge.runners.classify import classify

pytestmark = pytest.mark.torch_free


def profile_limited(runner, lo: int, hi: int, seen: list):
    """The ONNX Runtime runner behind the batch rule of an engine with profile lo..hi (engine/checks.py
    batch_in_profile refuses the same way): the engine itself needs a GPU and TensorRT."""
    def run(x: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        if not lo <= len(x) <= hi:
            raise InputError(f"batch {len(x)} is outside the engine's profile ({lo}..{hi})")
        return runner.run(x)
    return dataclasses.replace(runner, run=run, min_batch=lo, max_batch=hi)


@pytest.mark.parametrize("count", [4, 5, 9])
def test_logits_split_and_pad_to_the_profile(tiny_plain, count):
    plain = load_runner("onnxruntime", onnx=tiny_plain)
    seen: list[int] = []
    limited = profile_limited(plain, 2, 3, seen)
    x = np.random.default_rng(count).standard_normal((count, 3, plain.preprocess.img_size, plain.preprocess.img_size), dtype=np.float32)
    got = limited.logits(x, batch_size=8)
    assert seen and all(2 <= b <= 3 for b in seen), seen
    assert sum(min(b, 3) for b in seen) >= count
    np.testing.assert_allclose(got, plain.logits(x, batch_size=8), rtol=1e-5, atol=1e-5)


def test_classify_at_the_default_batch_on_a_small_profile(tiny_plain, sample_photos):
    plain = load_runner("onnxruntime", onnx=tiny_plain)
    seen: list[int] = []
    images = [*sample_photos, *sample_photos, sample_photos[0]]   # 5 images, default batch 8, profile 2..3
    results = classify(images, profile_limited(plain, 2, 3, seen), k=2)
    assert seen == [3, 2] and all(r.error is None for r in results)
    assert [r.predictions for r in results] == [r.predictions for r in classify(images, plain, k=2)]


def test_the_batch_estimate_is_made_once_per_batch_size(tiny_plain, monkeypatch):
    """The memory estimate loads the graph and infers its shapes: serve calls logits() once per Triton batch, so
    the runner must not redo it on every call."""
    import refiner_edge.onnx.memory as memory

    calls: list[int] = []
    estimate = memory.graph_batch
    monkeypatch.setattr(memory, "graph_batch", lambda path, wanted, *a, **k: calls.append(wanted) or
                        estimate(path, wanted, *a, **k))
    runner = load_runner("onnxruntime", onnx=tiny_plain)
    x = np.zeros((4, 3, runner.preprocess.img_size, runner.preprocess.img_size), dtype=np.float32)
    for _ in range(3):
        runner.logits(x, batch_size=4)
    assert calls == [4]
