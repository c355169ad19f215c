"""Activation ranges measured on calibration images with ONNX Runtime's calibrators.

One pass over the images gives both the observed min/max of every float tensor (for the FP16 decisions and the
TensorRT cache) and the calibrated clipping range (amax) of the tensors INT8 quantizes. max, entropy and percentile
are onnxruntime.quantization's own algorithms; ONNX Runtime has no MSE calibrator, so `mse` picks, from the same
histograms ORT collects, the amax whose symmetric INT8 quantization has the least mean squared error (as TensorRT's
pytorch-quantization toolkit does).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import InputError
from . import METHODS
from ..onnx.quiet import quiet

ENTROPY_BINS = 1024         # histogram bins (ORT's default 128 leaves entropy almost no thresholds to choose from)
QUANTIZED_BINS = 128        # INT8 levels on one side of zero, the KL-divergence target resolution
PERCENTILE = 99.999


@dataclass
class Ranges:
    """Measured ranges of one graph on one calibration set."""

    method: str
    minmax: dict[str, tuple[float, float]]                # every float activation: observed (min, max)
    amax: dict[str, float] = field(default_factory=dict)  # tensors INT8 quantizes: calibrated |range|
    batch: int = 0                                        # images per run the measurement used
    segments: int = 1                                     # pieces the graph ran in

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
                   quantized: set[str] | None = None, on_batch: Callable[[int], None] | None = None,
                   memory_gb: float | None = None) -> Ranges:
    """Run the float graph on `batches` and measure ranges; `quantized` names the tensors that get an amax.

    The graph runs segment by segment (memory.GraphMemory.segments): each segment's tensors are all outputs of
    its own ONNX Runtime session, measured and dropped before the next segment runs on the tensors that cross the
    cut, so at most one segment's tensors for one batch are alive, within `memory_gb` (a batch larger than that
    allows is split, every segment taking the same smaller batches). Each image is computed once. min/max is
    kept for every float activation; the quantized ones go into ONNX Runtime's HistogramCollector, which merges
    its histograms batch by batch, and whose entropy/percentile searches pick the clipping range.
    (ORT's calibrator classes would need two passes, and their MinMax one adds two reduce nodes per tensor, which
    made Refiner-ViT-S calibration 7x slower than inference.)
    """
    import onnx

    from ..onnx.memory import GraphMemory, budget_bytes, return_freed_memory

    _check_method(method)
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise InputError("no calibration images")
    memory = GraphMemory.of(onnx.load(str(model_path)))
    names = _float_activations(memory.model)
    floats = set(names)
    segments, batch = plan_segments(memory, budget_bytes(memory_gb), len(first), floats)
    sessions = [_segment_session(memory.model, seg, floats) for seg in segments]
    last = dict(memory.last)
    del memory  # the weights now live in the sessions only
    meter = _Meter(method, [n for n in [input_name, *names] if n in (quantized or set())])
    for x in itertools.chain([first], batches):
        for part in _split(x, batch):
            live = {input_name: part}
            meter.add({input_name: part})
            for seg, (session, requested) in zip(segments, sessions):
                outputs = dict(zip(requested, session.run(requested, {k: live[k] for k in seg.inputs})))
                meter.add({k: v for k, v in outputs.items() if k in floats})
                return_freed_memory()  # what this run did not reuse of the last one's memory; not this run's
                live.update((k, outputs[k]) for k in seg.passed)
                del outputs
                live = {k: v for k, v in live.items() if last.get(k, -1) >= seg.stop}
            if on_batch:
                on_batch(len(part))
    ranges = meter.result()
    ranges.batch, ranges.segments = batch, len(segments)
    return ranges


def plan_segments(memory, budget: float, wanted: int, measured: set[str]):
    """(segments, batch): the graph's segments and the largest batch up to `wanted` whose heaviest segment fits
    `budget` bytes (its inputs and tensors, plus two copies of its largest measured tensor for the histograms)."""
    from ..onnx.memory import largest_batch

    def peak(seg) -> int:
        largest = max((memory.sizes.get(t, 0) for t in seg.produced if t in measured), default=0)
        return seg.bytes_per_image + 2 * largest

    if memory.fixed_batch:  # a fixed-batch graph runs whole batches; sizes are already per batch
        wanted = 1
    batch, target = wanted, budget / wanted / 2
    while True:
        segments = memory.segments(target)
        heaviest = max(peak(s) for s in segments)
        if heaviest * batch <= budget or (batch == 1 and target < budget / 64):
            return segments, (memory.fixed_batch or batch)
        if batch > 1:
            batch = largest_batch(heaviest, budget, batch - 1)
            target = budget / batch / 2
        else:
            target /= 2


def _segment_session(model, seg, floats: set[str]):
    """(ONNX Runtime session, names it returns) for one segment: every float tensor it produces and every
    tensor later segments read."""
    from onnx import helper

    from ..onnx.session import ort_session

    graph = model.graph
    infos = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
    nodes = graph.node[seg.start:seg.stop]
    read = {i for n in nodes for i in n.input}
    requested = list(dict.fromkeys([*[t for t in seg.produced if t in floats], *seg.passed]))

    def info(name: str, shaped: bool):
        tensor = infos[name].type.tensor_type
        rank = len(tensor.shape.dim) if shaped and tensor.HasField("shape") else None
        shape = None if rank is None else [f"d{i}" for i in range(rank)]  # rank only: no shape to get wrong
        return helper.make_tensor_value_info(name, tensor.elem_type, shape)

    part = helper.make_graph(nodes, f"segment_{seg.start}", [info(n, True) for n in seg.inputs],
                             [info(n, False) for n in requested],
                             [t for t in graph.initializer if t.name in read])
    proto = helper.make_model(part, opset_imports=model.opset_import, ir_version=model.ir_version)
    proto.functions.extend(model.functions)
    session = ort_session(proto.SerializeToString(), arena=False, spinning=False)
    return session, requested


def _split(x: np.ndarray, size: int):
    for i in range(0, len(x), size):
        yield x[i:i + size]


class _Meter:
    """min/max of every tensor it is shown, and the histograms of `names`, merged batch by batch."""

    def __init__(self, method: str, names: list[str]):
        from onnxruntime.quantization.calibrate import HistogramCollector

        self.method, self.names = method, set(names)
        self.order = list(names)
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}
        self.collector = None
        if method != "max":
            options = {"percentile": dict(method="percentile", symmetric=True, num_bins=2048)}.get(
                method, dict(method="entropy", symmetric=False, num_bins=ENTROPY_BINS))
            self.collector = HistogramCollector(num_quantized_bins=QUANTIZED_BINS, percentile=PERCENTILE,
                                                scenario="same", **options)

    def add(self, outputs: dict[str, np.ndarray]) -> None:
        for name, arr in outputs.items():
            if arr.size:
                self.lo[name] = min(self.lo.get(name, np.inf), float(np.min(arr)))
                self.hi[name] = max(self.hi.get(name, -np.inf), float(np.max(arr)))
        wanted = {k: v for k, v in outputs.items() if k in self.names}
        if self.collector is not None and wanted:
            with quiet():
                self.collector.collect(wanted)

    def result(self) -> Ranges:
        ranges = Ranges(self.method, {name: (self.lo[name], self.hi[name]) for name in self.lo})
        collector = self.collector
        if collector is None:
            ranges.amax = {name: ranges.absmax(name) for name in self.order if name in self.lo}
        elif self.method == "mse":
            ranges.amax = {name: mse_amax(h[0], h[1]) for name, h in collector.histogram_dict.items()}
        elif collector.histogram_dict:
            with quiet():
                result = collector.compute_collection_result()
            ranges.amax = {name: float(max(abs(float(np.min(v[0]))), abs(float(np.max(v[1]))))) for name, v in
                           result.items()}
        return ranges


def _collect_ranges_all_outputs(model_path: str | Path, batches: Iterable[np.ndarray], method: str,
                                input_name: str, quantized: set[str] | None = None) -> Ranges:
    """The reference collector: every float activation a graph output of one session, a whole batch of them held
    at once (about 22 GB per image for Refiner-ViT-L@448). For tests and benchmarks/calibration_memory.py only."""
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    from ..onnx.session import ort_session

    _check_method(method)
    model = load_model_with_shape_infer(Path(model_path))  # value_info gives every tensor's type
    names = _float_activations(model)
    infos = {v.name: v for v in model.graph.value_info}
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(infos[n] for n in names if n not in present)
    session = ort_session(model)
    meter = _Meter(method, [n for n in [input_name, *names] if n in (quantized or set())])
    for x in batches:
        meter.add({input_name: x, **dict(zip(names, session.run(names, {input_name: x})))})
    return meter.result()


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown calibration method '{method}'; choose one of: {', '.join(METHODS)}")


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

