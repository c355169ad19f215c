"""The percentile calibrator's histograms: ONNX Runtime's HistogramCollector against precision/histogram.py's,
on tensors of Refiner-ViT-L@448's largest shape, in one run (the ratio holds on a shared machine).

    PYTHONPATH=$PWD python3 benchmarks/calibration_histograms.py [--batches 4] [--rounds 3] [--shape 48,785,785]

Each round feeds the same batches (softmax-like attention maps of the given shape, one image each) to both
collectors, alternating which goes first; a round's time is the whole collect over all batches (the first batch
binned with NumPy's uniform path in both, the later ones merged). Both histograms are compared for equality at the
end of each round. Peak: the largest resident size of this process (ru_maxrss) after each collector's first round.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refiner_edge.precision.histogram import collector_class  # noqa: E402
from refiner_edge.precision.ranges import collector_options  # noqa: E402


def attention_maps(rng, shape) -> np.ndarray:
    """Rows of softmax probabilities, as the refinement's inputs are (a wide range: a few near 1, most near 0)."""
    logits = rng.standard_normal(shape, dtype=np.float32) * 3
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    return logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", default="48,785,785")
    args = parser.parse_args()
    from onnxruntime.quantization.calibrate import HistogramCollector

    shape = tuple(int(d) for d in args.shape.split(","))
    rng = np.random.default_rng(0)
    batches = [attention_maps(rng, shape) for _ in range(args.batches)]
    make = collector_options("percentile")
    kinds = {"onnxruntime": HistogramCollector, "refiner_edge": collector_class()}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        results = {}
        for name in (list(kinds) if r % 2 == 0 else list(kinds)[::-1]):
            collector = kinds[name](**make)
            start = time.perf_counter()
            for batch in batches:
                collector.collect_absolute_value({"map": batch})
            times[name].append(time.perf_counter() - start)
            results[name] = collector.histogram_dict["map"]
        a, b = results["onnxruntime"], results["refiner_edge"]
        equal = np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and (a[2], a[3]) == (b[2], b[3])
        print(f"round {r + 1}: onnxruntime {times['onnxruntime'][-1]:.2f} s, refiner_edge "
              f"{times['refiner_edge'][-1]:.2f} s, histograms equal: {equal}")
        if not equal:
            sys.exit("the histograms differ")
    base, ours = statistics.median(times["onnxruntime"]), statistics.median(times["refiner_edge"])
    print(f"shape {shape}, {args.batches} batches of {np.prod(shape) * 4 / 1e6:.0f} MB, median of {args.rounds}: "
          f"onnxruntime {base:.2f} s, refiner_edge {ours:.2f} s, ratio {ours / base:.3f} "
          f"(speed-up {base / ours:.1f}x); process peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
