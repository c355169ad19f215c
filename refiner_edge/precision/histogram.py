"""ONNX Runtime's histogram of absolute values (the percentile calibrator's), merged batch by batch.

onnxruntime.quantization's HistogramCollector bins each batch after the first with `np.histogram(values,
bins=edges)`: explicit edges make NumPy sort every value (in blocks) and search the edges. The edges it passes are
the first batch's uniform edges, extended by equal steps when a later batch reaches further, so each value's bin
can also be computed arithmetically, searching only the values that float rounding puts on the wrong side of an
edge (`bin_counts`). Which of the two is faster depends on the CPU: on a 2-core AMD EPYC the arithmetic binning
took 0.36 times NumPy's sort, on a 2-core Intel Xeon 1.4 to 2.5 times (docs/benchmarks.md). Both give the same
counts, so the collector times each on the first large tensors of a calibration and keeps the faster. The
histograms (counts, edges, min, max) are the collector's exactly either way (tests/test_calibration_cost.py
compares them), so its percentile computation runs unchanged on them.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

CHUNK = 1 << 18   # values binned at a time: a chunk and its indices stay in cache (1 << 16 to 1 << 22 measured)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`np.histogram(values, bins=edges)[0]` for nearly uniform increasing edges, without a sort: bin i holds
    edges[i] <= v < edges[i + 1], the last bin its right edge too; values outside the edges and NaN are not counted.
    Works in the values' own type, against the edges cast to it, as NumPy compares them."""
    values = values.reshape(-1)
    edges = edges.astype(values.dtype)
    n = len(edges) - 1
    low, high = edges[0], edges[-1]
    # the bound each bin's values stay under; the last bin's is just above its right edge, which it holds
    upper = np.append(edges[1:-1], np.nextafter(high, np.inf))
    scale = np.array(n / (float(high) - float(low)) if high > low else 0.0, values.dtype)
    counts = np.zeros(n, np.int64)
    for start in range(0, values.size, CHUNK):
        v = values[start:start + CHUNK]
        if np.isnan(v).any():
            v = v[~np.isnan(v)]
        guess = np.subtract(v, low)
        guess *= scale
        np.clip(guess, 0, n - 1, out=guess)
        index = guess.astype(np.intp)
        wrong = v < edges[index]
        wrong |= v >= upper[index]
        if wrong.any():   # rounding put these on the wrong side of an edge, or they lie outside: search them
            searched = v[wrong]
            found = np.searchsorted(edges, searched, side="right") - 1
            found[searched == high] = n - 1
            index[wrong] = found
            index = index[(index >= 0) & (index < n)]
        counts += np.bincount(index, minlength=n)
    return counts


BINNINGS = ("arithmetic", "sorted")
TIMED = 3              # merges timed per binning before the faster is kept
TIMED_SIZE = 1 << 20   # values a merge needs to be timed (smaller ones say little about either)
ABSOLUTE_CHUNK = 1 << 22   # |values| taken a chunk at a time into one buffer, not as a copy of the whole tensor


def merged_counts(values: np.ndarray, edges: np.ndarray, binning: str) -> np.ndarray:
    """The counts of `values` in `edges` by one of the two exact binnings."""
    if binning == "arithmetic":
        return bin_counts(values, edges)
    return np.histogram(values, bins=edges)[0]   # what HistogramCollector itself runs


def collector_class():
    """HistogramCollector whose absolute-value histograms are merged by the faster exact binning (imported lazily:
    ONNX Runtime's quantization package is loaded only by calibration)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    class AbsoluteHistograms(HistogramCollector):
        binning: str | None = None   # a binning to use throughout; None: the faster one, timed on this data

        def _counts(self, flat: np.ndarray, edges: np.ndarray) -> np.ndarray:
            """The counts of |flat| in `edges`, by the chosen binning (or the one timed least so far)."""
            timed = self.__dict__.setdefault("_timed", {b: [] for b in BINNINGS})
            binning = self.binning or min(BINNINGS, key=lambda b: len(timed[b]))
            started = time.perf_counter()
            counts = np.zeros(len(edges) - 1, np.int64)
            magnitude = np.empty(min(ABSOLUTE_CHUNK, flat.size), flat.dtype)
            for start in range(0, flat.size, ABSOLUTE_CHUNK):
                part = flat[start:start + ABSOLUTE_CHUNK]
                counts += merged_counts(np.absolute(part, out=magnitude[:len(part)]), edges, binning)
            if self.binning is None and flat.size >= TIMED_SIZE:
                timed[binning].append((time.perf_counter() - started) / flat.size)
                if all(len(t) >= TIMED for t in timed.values()):
                    self.binning = min(BINNINGS, key=lambda b: statistics.median(timed[b]))
            return counts

        def collect_absolute_value(self, name_to_arr):
            for name, data in name_to_arr.items():
                data = np.asarray(data)
                if data.dtype == np.float64:
                    raise ValueError(f"{name}: only float32 or float16 tensors are calibrated")
                flat = data.reshape(-1)
                if flat.size:
                    low, high = flat.min(), flat.max()   # NumPy's vectorized min/max; NaN-aware only if needed
                    if np.isnan(low) or np.isnan(high):
                        low, high = np.nanmin(flat), np.nanmax(flat)
                else:
                    low = high = np.array(0, dtype=flat.dtype)
                if name not in self.histogram_dict:   # the first batch: uniform edges over its own range
                    counts, edges = np.histogram(np.absolute(flat), bins=self.num_bins)
                    self.histogram_dict[name] = (counts, edges.astype(flat.dtype), low, high)
                    continue
                old_counts, edges, old_low, old_high = self.histogram_dict[name]
                top = max(abs(low), abs(high))   # the largest magnitude, without another pass
                if top > edges[-1]:   # reach further in steps of the same width, as the collector does
                    width = edges[1] - edges[0]
                    edges = np.hstack((edges, np.arange(edges[-1] + width, top + width, width)))
                counts = self._counts(flat, edges)
                counts[:len(old_counts)] += old_counts
                self.histogram_dict[name] = (counts, edges.astype(flat.dtype), min(old_low, low),
                                             max(old_high, high))

    return AbsoluteHistograms
