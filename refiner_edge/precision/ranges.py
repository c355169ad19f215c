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
    outputs: np.ndarray | None = None                     # collect_ranges(keep_outputs=n): the graph's output

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
                   memory_gb: float | None = None, keep_outputs: int = 0, memory=None) -> Ranges:
    """Run the float graph on `batches` and measure ranges; `quantized` names the tensors that get an amax.

    The graph runs segment by segment (memory.GraphMemory.segments), each image once: each segment's session
    returns the min and max of every float tensor it computes (ReduceMin/ReduceMax nodes added to it, so ONNX
    Runtime reduces them with its own threads and frees the tensors as a plain run does), the `quantized` tensors
    themselves and the tensors that cross the cut; at most one segment's tensors for one batch are alive, within
    `memory_gb` (a batch larger than that allows is split, every segment taking the same smaller batches). The
    quantized tensors go into ONNX Runtime's HistogramCollector, which merges its histograms batch by batch, and
    whose entropy/percentile searches pick the clipping range. `keep_outputs`: the graph's first output for the
    first that many images is kept in `Ranges.outputs` (calibrate's FP32 reference: no second pass).
    `memory`: the graph's GraphMemory where the caller has it (its weights are dropped here once the sessions
    hold theirs).
    (Returning every float tensor to Python and reducing it with NumPy made Refiner-ViT-L@448 range collection 11
    times an inference; ORT's calibrator classes would need two passes.)
    """
    import onnx

    from ..onnx.memory import GraphMemory, budget_bytes, return_freed_memory
    from ..onnx.session import SharedArena

    _check_method(method)
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise InputError("no calibration images")
    if memory is None:
        memory = GraphMemory.of(onnx.load(str(model_path)))
    names = _float_activations(memory.model)
    floats = set(names)
    wanted = {n for n in [input_name, *names] if n in (quantized or set())}
    segments, batch = plan_segments(memory, budget_bytes(memory_gb), len(first), floats)
    derived = _clipped_outputs(memory.model, floats)   # their ranges follow from their inputs': not reduced
    sessions = [_segment_session(memory.model, seg, floats, wanted, set(derived)) for seg in segments]
    last = dict(memory.last)
    output = memory.model.graph.output[0].name
    del memory.model.graph.initializer[:]  # the weights now live in the sessions only
    del memory
    meter = _Meter(method, [n for n in [input_name, *names] if n in wanted])
    kept: list[np.ndarray] = []
    try:
        for x in itertools.chain([first], batches):
            for part in _split(x, batch):
                live = {input_name: part}
                meter.add({input_name: part})
                for seg, (session, requested, reduced) in zip(segments, sessions):
                    outputs = dict(zip(requested, session.run(requested, {k: live[k] for k in seg.inputs})))
                    meter.add_reduced(reduced, outputs)
                    meter.add({k: outputs[k] for k in requested if k in wanted}, minmax=False)
                    return_freed_memory()  # what this run did not reuse of the last one's memory; not this run's
                    live.update((k, outputs[k]) for k in seg.passed)
                    del outputs
                    live = {k: v for k, v in live.items() if last.get(k, -1) >= seg.stop}
                if len(kept) < keep_outputs and output in live:
                    kept.extend(live[output][:keep_outputs - len(kept)])
                del live
                SharedArena.release()   # the arena starts each batch empty, so it cannot grow with the image count
                if on_batch:
                    on_batch(len(part))
    finally:   # the sessions' memory back to the system, on an error or Ctrl-C too
        del sessions
        SharedArena.release()
    derive_clipped(meter.lo, meter.hi, derived)
    ranges = meter.result()
    ranges.batch, ranges.segments = batch, len(segments)
    if keep_outputs:
        ranges.outputs = np.stack(kept)
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


def _segment_session(model, seg, floats: set[str], wanted: set[str] = frozenset(), derived: set[str] = frozenset()):
    """(ONNX Runtime session, names it returns, {tensor: (its min output, its max output)}) for one segment: the
    min and max of every float tensor it produces (reduced in the session), the `wanted` tensors it produces and
    every tensor later segments read. `derived`: tensors not reduced, as their ranges are derived from others'
    (the clipped outputs of `_clipped_outputs`: a quarter of Refiner-ViT-L's activation bytes)."""
    from onnx import TensorProto, helper

    from ..onnx.session import ort_session

    graph = model.graph
    infos = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
    nodes = list(graph.node[seg.start:seg.stop])
    read = {i for n in nodes for i in n.input}
    measured = [t for t in seg.produced if t in floats and t not in derived]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    reduced, extra, outs, constants = {}, [], [], []

    def reduce(op: str, source: str, target: str, axis: int | None = None):
        """ReduceMin/ReduceMax of `source` over `axis` (None: over everything), as the graph's opset spells it."""
        if axis is None:
            return helper.make_node(op, [source], [target], keepdims=0)
        if opset < 18:
            return helper.make_node(op, [source], [target], keepdims=0, axes=[axis])
        if not constants:
            constants.append(helper.make_tensor("refiner_edge_range_axis_1", TensorProto.INT64, [1], [1]))
        return helper.make_node(op, [source, constants[0].name], [target], keepdims=0)

    for i, t in enumerate(measured):
        source = t
        if infos.get(t) is not None and infos[t].type.tensor_type.elem_type == TensorProto.FLOAT16:
            source = f"refiner_edge_range_{seg.start}_{i}_f32"   # reduced in FP32: an FP16 max may be inf
            extra.append(helper.make_node("Cast", [t], [source], to=TensorProto.FLOAT))
        lo, hi = f"refiner_edge_range_{seg.start}_{i}_min", f"refiner_edge_range_{seg.start}_{i}_max"
        rank = _rank(infos.get(t))
        if rank is not None and rank >= 2:
            # rows first, then the rows' extremes: ONNX Runtime reduces many rows on all its threads, and a whole
            # tensor to one value on one (a third of range collection's run time was these reductions)
            rows = f"refiner_edge_range_{seg.start}_{i}_rows"
            extra.append(helper.make_node("Flatten", [source], [rows], axis=rank - 1))
            extra += [reduce("ReduceMin", rows, lo + "_rows", 1), reduce("ReduceMax", rows, hi + "_rows", 1),
                      reduce("ReduceMin", lo + "_rows", lo), reduce("ReduceMax", hi + "_rows", hi)]
        else:
            extra += [reduce("ReduceMin", source, lo), reduce("ReduceMax", source, hi)]
        reduced[t] = (lo, hi)
        outs += [helper.make_tensor_value_info(lo, TensorProto.FLOAT, []),
                 helper.make_tensor_value_info(hi, TensorProto.FLOAT, [])]
    returned = list(dict.fromkeys([*[t for t in seg.produced if t in wanted], *seg.passed]))
    requested = [*returned, *[n for pair in reduced.values() for n in pair]]

    def info(name: str, shaped: bool, k: int = 0):
        tensor = infos[name].type.tensor_type
        rank = _rank(infos[name]) if shaped else None
        # rank only: no shape to get wrong; a name of its own per dimension, as ONNX Runtime takes dimensions of
        # the same name for equal and reuses buffers on that (wrongly, once the segment's tensors are its own)
        shape = None if rank is None else [f"in{k}_d{i}" for i in range(rank)]
        return helper.make_tensor_value_info(name, tensor.elem_type, shape)

    part = helper.make_graph([*nodes, *extra], f"segment_{seg.start}",
                             [info(n, True, k) for k, n in enumerate(seg.inputs)],
                             [*[info(n, False) for n in returned], *outs],
                             [t for t in graph.initializer if t.name in read] + constants)
    proto = helper.make_model(part, opset_imports=model.opset_import, ir_version=model.ir_version)
    proto.functions.extend(model.functions)
    session = ort_session(proto.SerializeToString(), arena="shared", spinning=False)
    return session, requested, reduced


def _rank(info) -> int | None:
    tensor = info.type.tensor_type if info is not None else None
    return len(tensor.shape.dim) if tensor is not None and tensor.HasField("shape") else None


def _clipped_outputs(model, floats: set[str]) -> dict[str, tuple[str, float, float]]:
    """{output: (input, lower, upper)} of the graph's Relu nodes and Clip nodes whose bounds are constants, whose
    input and output are float activations, in graph order: clipping is monotonic, so their min and max are their
    input's, clipped (`derive_clipped`)."""
    constants = {t.name: t for t in model.graph.initializer}
    constants.update({n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant"
                      for a in n.attribute if a.name == "value"})

    def bound(name: str, default: float) -> float | None:
        if not name:
            return default
        if name not in constants:
            return None
        from onnx import numpy_helper

        value = numpy_helper.to_array(constants[name])
        return float(value.reshape(-1)[0]) if value.size == 1 else None

    found = {}
    for node in model.graph.node:
        if not node.input or node.input[0] not in floats and node.input[0] != model.graph.input[0].name:
            continue
        if node.op_type == "Relu":
            low, high = 0.0, np.inf
        elif node.op_type == "Clip":
            attrs = {a.name: a.f for a in node.attribute}
            if "min" in attrs or "max" in attrs:   # opset < 11: bounds as attributes
                low, high = attrs.get("min", -np.inf), attrs.get("max", np.inf)
            else:
                inputs = list(node.input) + ["", ""]
                low, high = bound(inputs[1], -np.inf), bound(inputs[2], np.inf)
        else:
            continue
        if low is not None and high is not None and node.output[0] in floats:
            found[node.output[0]] = (node.input[0], low, high)
    return found


def derive_clipped(lo: dict[str, float], hi: dict[str, float], derived: dict[str, tuple[str, float, float]]):
    """The min and max of clipped tensors from their inputs' (in graph order, so a clip of a clip follows its
    input): min(clip(x)) = clip(min(x)) exactly, as Clip returns an element or a bound, never a new value."""
    for name, (source, low, high) in derived.items():
        if source in lo:
            lo[name] = min(max(lo[source], low), high)
            hi[name] = min(max(hi[source], low), high)


def _split(x: np.ndarray, size: int):
    for i in range(0, len(x), size):
        yield x[i:i + size]


def collector_options(method: str) -> dict:
    """The HistogramCollector's arguments for a histogram method (percentile, or entropy's bins for entropy/mse)."""
    options = {"percentile": dict(method="percentile", symmetric=True, num_bins=2048)}.get(
        method, dict(method="entropy", symmetric=False, num_bins=ENTROPY_BINS))
    return dict(num_quantized_bins=QUANTIZED_BINS, percentile=PERCENTILE, scenario="same", **options)


class _Meter:
    """min/max of every tensor it is shown, and the histograms of `names`, merged batch by batch."""

    def __init__(self, method: str, names: list[str]):
        from .histogram import collector_class

        self.method, self.names = method, set(names)
        self.order = list(names)
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}
        self.collector = None
        if method != "max":
            self.collector = collector_class()(**collector_options(method))

    def add_reduced(self, reduced: dict[str, tuple[str, str]], outputs: dict[str, np.ndarray]) -> None:
        """min/max that the session computed: reduced[tensor] = (name of its min, name of its max)."""
        for name, (lo, hi) in reduced.items():
            low, high = float(outputs[lo]), float(outputs[hi])
            if np.isnan(low) or np.isnan(high) or not (np.isinf(low) and np.isinf(high) and low > high):
                # (an empty tensor reduces to +inf/-inf: nothing observed, as NumPy's add skips it)
                self.lo[name] = min(self.lo.get(name, np.inf), low)
                self.hi[name] = max(self.hi.get(name, -np.inf), high)

    def add(self, outputs: dict[str, np.ndarray], minmax: bool = True) -> None:
        """The histograms of the tensors in `names`, and (minmax) every tensor's min/max."""
        for name, arr in outputs.items() if minmax else ():
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

