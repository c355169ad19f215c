"""The percentile calibrator's histograms: ONNX Runtime's HistogramCollector against precision/histogram.py's,
on tensors of Refiner-ViT-L@448's largest shape, in one run (the ratio holds on a shared machine).

    PYTHONPATH=$PWD python3 benchmarks/calibration_histograms.py [--batches 4] [--rounds 3] [--shape 48,785,785]

Each round feeds the same batches (softmax-like attention maps of the given shape, one image each) to ONNX
Runtime's collector and to refiner_edge's with each binning (arithmetic, sorted, and chosen: the faster of the two,
timed on the first merges, as calibration runs it), in alternating order; a round's time is the whole collect over
all batches (the first batch binned with NumPy's uniform path in all, the later ones merged). All histograms are
compared for equality at the end of each round. Peak: the largest resident size of this process (ru_maxrss) after each collector's first round.
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

from refiner_edge.precision.histogram import BINNINGS, collector_class  # noqa: E402
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
    ours = collector_class()

    def binned(binning):
        def make_collector(**options):
            collector = ours(**options)
            collector.binning = binning
            return collector
        return make_collector

    # refiner_edge's collector with each binning, and as calibration runs it (the faster one, timed on the data)
    kinds = {"onnxruntime": HistogramCollector, **{b: binned(b) for b in BINNINGS}, "chosen": binned(None)}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    chosen: list[str] = []
    for r in range(args.rounds):
        results = {}
        for name in (list(kinds) if r % 2 == 0 else list(kinds)[::-1]):
            collector = kinds[name](**make)
            start = time.perf_counter()
            for batch in batches:
                collector.collect_absolute_value({"map": batch})
            times[name].append(time.perf_counter() - start)
            results[name] = collector.histogram_dict["map"]
            if name == "chosen":
                chosen.append(str(collector.binning))
        a = results["onnxruntime"]
        equal = all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and (a[2], a[3]) == (b[2], b[3])
                    for b in results.values())
        print(f"round {r + 1}: " + ", ".join(f"{k} {times[k][-1]:.2f} s" for k in kinds) +
              f" (chose {chosen[-1]}), histograms equal: {equal}")
        if not equal:
            sys.exit("the histograms differ")
    base = statistics.median(times["onnxruntime"])
    print(f"shape {shape}, {args.batches} batches of {np.prod(shape) * 4 / 1e6:.0f} MB, median of {args.rounds}: "
          f"onnxruntime {base:.2f} s; " +
          ", ".join(f"{k} {statistics.median(times[k]):.2f} s (ratio {statistics.median(times[k]) / base:.3f})"
                    for k in list(kinds)[1:]) +
          f"; chose {', '.join(chosen)}; process peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")

if __name__ == "__main__":
    main()
