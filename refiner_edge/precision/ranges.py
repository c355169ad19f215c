"""Activation ranges measured on calibration images with ONNX Runtime's calibrators.

One pass over the images gives both the observed min/max of every float tensor (for the FP16 decisions and the
TensorRT cache) and the calibrated clipping range (amax) of the tensors INT8 quantizes. max, entropy and percentile
are onnxruntime.quantization's own algorithms; ONNX Runtime has no MSE calibrator, so `mse` picks, from the same
histograms ORT collects, the amax whose symmetric INT8 quantization has the least mean squared error (as TensorRT's
pytorch-quantization toolkit does).
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import InputError

METHODS = ("entropy", "percentile", "max", "mse")
ENTROPY_BINS = 1024         # histogram bins (ORT's default 128 leaves entropy almost no thresholds to choose from)
QUANTIZED_BINS = 128        # INT8 levels on one side of zero, the KL-divergence target resolution
PERCENTILE = 99.999


@dataclass
class Ranges:
    """Measured ranges of one graph on one calibration set."""

    method: str
    minmax: dict[str, tuple[float, float]]                # every float activation: observed (min, max)
    amax: dict[str, float] = field(default_factory=dict)  # tensors INT8 quantizes: calibrated |range|

    def absmax(self, name: str) -> float:
        lo, hi = self.minmax[name]
        return max(abs(lo), abs(hi))

    def clip(self, name: str) -> float:
        """The symmetric range INT8 uses for `name`: calibrated where available, else the observed |max|."""
        return self.amax.get(name, self.absmax(name))

    def tensors_data(self):
        """The calibrated ranges as onnxruntime.quantization's TensorsData (symmetric, for quantize_static)."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

        data = {name: TensorData(lowest=np.array(-a, np.float32), highest=np.array(a, np.float32))
                for name, a in self.amax.items()}
        return TensorsData(CalibrationMethod.MinMax, data)

    def to_dict(self) -> dict:
        return {"method": self.method, "amax": self.amax,
                "minmax": {k: [lo, hi] for k, (lo, hi) in self.minmax.items()}}


def collect_ranges(model_path: str | Path, batches: Iterable[np.ndarray], method: str, input_name: str,
                   quantized: set[str] | None = None, on_batch: Callable[[int], None] | None = None) -> Ranges:
    """Run the float graph on `batches` and measure ranges; `quantized` names the tensors that get an amax."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    if method not in METHODS:
        raise InputError(f"unknown calibration method '{method}'; choose one of: {', '.join(METHODS)}")
    quantized = quantized or set()
    kind, options = {
        "max": (CalibrationMethod.MinMax, {}),
        "entropy": (CalibrationMethod.Entropy, {"num_bins": ENTROPY_BINS, "num_quantized_bins": QUANTIZED_BINS}),
        "mse": (CalibrationMethod.Entropy, {"num_bins": ENTROPY_BINS, "num_quantized_bins": QUANTIZED_BINS}),
        "percentile": (CalibrationMethod.Percentile, {"num_bins": 2048, "percentile": PERCENTILE,
                                                      "symmetric": True}),
    }[method]
    with tempfile.TemporaryDirectory(prefix="refiner-edge-calib-") as tmp, _quiet():
        # the calibrators read tensor types from value_info, which shape inference fills in
        inferred = Path(tmp) / "model.onnx"
        import onnx

        onnx.save(load_model_with_shape_infer(Path(model_path)), str(inferred))
        calibrator = create_calibrator(inferred, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=kind, extra_options=options)
        for x in batches:  # one batch at a time: the histograms merge, intermediate tensors are not kept
            calibrator.collect_data(_OneBatch({input_name: x}))
            if on_batch:
                on_batch(len(x))
        if method == "max":
            data = calibrator.compute_data()
            minmax = {k: (float(np.min(v.range_value[0])), float(np.max(v.range_value[1]))) for k, v in data.items()}
            ranges = Ranges(method, minmax)
            ranges.amax = {k: ranges.absmax(k) for k in quantized if k in minmax}
            return ranges
        collector = calibrator.collector
        histograms = collector.histogram_dict
        minmax = {k: (float(np.min(h[2])), float(np.max(h[3]))) for k, h in histograms.items()}
        chosen = {k: histograms[k] for k in quantized if k in histograms}
        if method == "mse":
            amax = {k: mse_amax(h[0], h[1]) for k, h in chosen.items()}
        else:
            collector.histogram_dict = chosen  # only these need the (slow) threshold search
            result = collector.compute_collection_result() if chosen else {}
            amax = {k: float(max(abs(v[0]), abs(v[1]))) for k, v in result.items()}
        return Ranges(method, minmax, amax)


def mse_amax(hist: np.ndarray, edges: np.ndarray, levels: int = 127) -> float:
    """The clipping range of symmetric INT8 with the least mean squared error over a histogram of values."""
    hist = np.asarray(hist, np.float64)
    edges = np.asarray(edges, np.float64)
    centers = 0.5 * (edges[:-1] + edges[1:])
    top = float(np.max(np.abs(edges)))
    if hist.sum() == 0 or top == 0.0:
        return top
    candidates = np.linspace(top / 128, top, 256)
    scale = candidates[:, None] / levels
    q = np.clip(np.rint(centers[None, :] / scale), -levels, levels) * scale
    mse = ((q - centers[None, :]) ** 2 * hist[None, :]).sum(axis=1)
    return float(candidates[int(np.argmin(mse))])


class _OneBatch:
    """The CalibrationDataReader protocol over one input dict."""

    def __init__(self, feed: dict):
        self._items = [feed]

    def get_next(self):
        return self._items.pop() if self._items else None


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization prints progress with print() and advises its quant_pre_process on the root logger
    at every call; we skip that pre-processing on purpose (its graph rewrites would hide the refinement subgraphs
    from the fusion), so neither is news to the user."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)
