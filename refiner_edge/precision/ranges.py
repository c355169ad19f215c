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
    """Run the float graph on `batches` and measure ranges; `quantized` names the tensors that get an amax.

    One ONNX Runtime pass serves both needs: every float activation is a graph output, its min/max is kept, and
    the quantized ones go into ONNX Runtime's HistogramCollector, whose entropy/percentile searches pick the
    clipping range. (ORT's calibrator classes would need two passes, and their MinMax one adds two reduce nodes
    per tensor, which made Refiner-ViT-S calibration 7x slower than inference.)
    """
    from onnxruntime.quantization.calibrate import HistogramCollector
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    from ..onnx.session import ort_session

    if method not in METHODS:
        raise InputError(f"unknown calibration method '{method}'; choose one of: {', '.join(METHODS)}")
    model = load_model_with_shape_infer(Path(model_path))  # value_info gives every tensor's type
    names = _float_activations(model)
    infos = {v.name: v for v in model.graph.value_info}
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(infos[n] for n in names if n not in present)
    session = ort_session(model)  # the CUDA provider where onnxruntime-gpu has one, else the CPU
    wanted = [n for n in [input_name, *names] if n in (quantized or set())]
    collector = None
    if method != "max":
        options = {"percentile": dict(method="percentile", symmetric=True, num_bins=2048)}.get(
            method, dict(method="entropy", symmetric=False, num_bins=ENTROPY_BINS))
        collector = HistogramCollector(num_quantized_bins=QUANTIZED_BINS, percentile=PERCENTILE, scenario="same",
                                       **options)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for x in batches:
        outputs = {input_name: x, **dict(zip(names, session.run(names, {input_name: x})))}
        for name, arr in outputs.items():
            if arr.size:
                lo[name] = min(lo.get(name, np.inf), float(np.min(arr)))
                hi[name] = max(hi.get(name, -np.inf), float(np.max(arr)))
        if collector is not None and wanted:
            with quiet():
                collector.collect({name: outputs[name] for name in wanted})
        if on_batch:
            on_batch(len(x))
    ranges = Ranges(method, {name: (lo[name], hi[name]) for name in lo})
    if collector is None:
        ranges.amax = {name: ranges.absmax(name) for name in wanted if name in lo}
    elif method == "mse":
        ranges.amax = {name: mse_amax(h[0], h[1]) for name, h in collector.histogram_dict.items()}
    elif collector.histogram_dict:
        with quiet():
            result = collector.compute_collection_result()
        ranges.amax = {name: float(max(abs(float(np.min(v[0]))), abs(float(np.max(v[1]))))) for name, v in
                       result.items()}
    return ranges


def _float_activations(model) -> list[str]:
    """Names of the FP32/FP16 tensors computed by the graph's nodes (not its input, initializers or constants)."""
    from onnx import TensorProto

    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.output)}
    constants = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16)
    names = [o for n in model.graph.node for o in n.output if o and o not in constants and types.get(o) in floats]
    return list(dict.fromkeys(names))


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
def quiet():
    """onnxruntime.quantization prints progress with print() and advises its quant_pre_process on the root logger
    at every call; we skip that pre-processing on purpose (its graph rewrites would hide the refinement subgraphs
    from the fusion), so neither is news to the user."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)
