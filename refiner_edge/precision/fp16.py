"""FP16 graphs: every op in FP16 except those the measured ranges say would overflow or lose accuracy.

The rules (each decision is recorded with the range that triggered it):
- overflow: an op whose input or output reached more than a quarter of FP16's largest value (65504) on the
  calibration images stays FP32: unseen images may go further;
- LayerNormalization: its variance sums x^2, which overflows FP16 once |x| > 256;
- Softmax: FP16 rounds a logit x by up to |x| * 2^-11 before exp, a 1% error in the probabilities at |x| = 20;
- a refinement subgraph is kept whole (all FP16 or all FP32), so the graph surgery still finds and fuses it.
Graph inputs and outputs stay FP32 (Cast nodes inside), so callers feed and read the same tensors at every precision;
a path kept in FP32 stays FP32 end to end: its weights (a Gemm's bias too) and the cast to the graph's output.
The conversion itself is ONNX Runtime's float16 converter (onnxruntime.transformers.float16).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .ranges import Ranges

FP16_MAX = 65504.0
OVERFLOW_LIMIT = FP16_MAX / 4
LAYERNORM_INPUT_LIMIT = 256.0
SOFTMAX_INPUT_LIMIT = 20.0
RULES = {"overflow_limit": OVERFLOW_LIMIT, "layernorm_input_limit": LAYERNORM_INPUT_LIMIT,
         "softmax_input_limit": SOFTMAX_INPUT_LIMIT}


@dataclass
class Fp32Node:
    node: str
    op: str
    reason: str
    max_abs: float

    def to_dict(self) -> dict:
        return asdict(self)


def fp32_nodes(model, ranges: Ranges, units: list[list[str]] = ()) -> list[Fp32Node]:
    """The nodes of the float graph `model` that stay FP32, each with the reason."""
    def absmax(names) -> float:
        vals = [ranges.absmax(n) for n in names if n in ranges.minmax]
        return max(vals) if vals else 0.0

    kept: dict[str, Fp32Node] = {}
    for node in model.graph.node:
        first_input = absmax(node.input[:1])
        everything = absmax(list(node.input) + list(node.output))
        if node.op_type == "LayerNormalization" and first_input > LAYERNORM_INPUT_LIMIT:
            reason = f"variance of inputs up to {first_input:.4g} (x^2 overflows FP16 above {LAYERNORM_INPUT_LIMIT:g})"
        elif node.op_type == "Softmax" and first_input > SOFTMAX_INPUT_LIMIT:
            reason = f"logits up to {first_input:.4g} (FP16 rounding > 1% of the probabilities above " \
                     f"{SOFTMAX_INPUT_LIMIT:g})"
        elif everything > OVERFLOW_LIMIT:
            reason = f"values up to {everything:.4g} (over a quarter of FP16's maximum 65504)"
        else:
            continue
        kept[node.name] = Fp32Node(node.name, node.op_type, reason, max(first_input, everything))
    ops = {n.name: n.op_type for n in model.graph.node}
    for unit in units:
        trigger = next((kept[n] for n in unit if n in kept), None)
        if trigger is None:
            continue
        for name in unit:
            kept.setdefault(name, Fp32Node(name, ops.get(name, "?"), f"in the refinement subgraph of "
                                           f"{trigger.node}, kept whole for the fusion", trigger.max_abs))
    return list(kept.values())


def convert_to_fp16(model, keep_fp32: list[str]):
    """The graph with float tensors and weights in FP16, except the named nodes; FP32 inputs and outputs."""
    import onnx_graphsurgeon as gs
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=list(keep_fp32) or None)
    graph = gs.import_onnx(converted)
    _drop_round_trips(graph)
    _fp32_weights(graph, gs.import_onnx(model), set(keep_fp32))
    _merge_duplicate_casts(graph)
    graph.cleanup().toposort()  # the converter appends its Cast nodes at the end: restore the node order
    return gs.export_onnx(graph)


def _drop_round_trips(graph) -> None:
    """The converter casts the FP32 output of a kept op to FP16 and back before the next kept op; that round
    trip would round (or overflow) exactly the values kept in FP32, so the next op reads the FP32 tensor."""
    from onnx import TensorProto

    for node in [n for n in graph.nodes if n.op == "Cast" and n.attrs.get("to") == TensorProto.FLOAT]:
        src = node.inputs[0]
        prev = src.inputs[0] if len(src.inputs) == 1 else None
        if prev is None or prev.op != "Cast" or prev.attrs.get("to") != TensorProto.FLOAT16:
            continue
        if node.outputs[0] in graph.outputs:
            # the graph's output keeps its name and type: its Cast reads the FP32 tensor (a no-op cast), so
            # logits beyond FP16's 65504 are not turned into infinity on the way out
            node.inputs[0] = prev.inputs[0]
            continue
        _redirect(node.outputs[0], prev.inputs[0])
        node.outputs.clear()


def _fp32_weights(graph, original, keep: set[str]) -> None:
    """A node kept in FP32 reads its weights in FP32: the converter may store one of them (a Gemm's bias) in FP16
    and cast it back, which rounds it, or turns a bias beyond 65504 into infinity. Such an input is replaced by
    the original FP32 constant (a copy where FP16 nodes share it)."""
    import numpy as np
    from onnx import TensorProto

    weights = {name: t for name, t in original.tensors().items() if hasattr(t, "values") and
               getattr(t.values, "dtype", None) == np.float32}
    copies: dict[str, object] = {}
    for node in [n for n in graph.nodes if n.name in keep]:
        for i, t in enumerate(node.inputs):
            source = t
            if len(t.inputs) == 1 and t.inputs[0].op == "Cast" and t.inputs[0].attrs.get("to") == TensorProto.FLOAT:
                source = t.inputs[0].inputs[0]   # the converter's Cast from an FP16 constant
            if source.name not in weights or getattr(getattr(source, "values", None), "dtype", None) == np.float32:
                continue
            if source.name not in copies:
                import onnx_graphsurgeon as gs

                copies[source.name] = gs.Constant(f"{source.name}_fp32", np.asarray(weights[source.name].values))
            node.inputs[i] = copies[source.name]


def _merge_duplicate_casts(graph) -> None:
    """The converter casts a tensor once per FP32 consumer; one Cast per (tensor, type) keeps a refinement
    subgraph's input shared by its first conv and its residual Add, as the graph surgery expects."""
    first: dict[tuple, object] = {}
    for node in [n for n in graph.nodes if n.op == "Cast" and len(n.inputs) == 1]:
        key = (node.inputs[0].name, node.attrs.get("to"))
        keep = first.setdefault(key, node)
        if keep is node or node.outputs[0] in graph.outputs:
            continue
        _redirect(node.outputs[0], keep.outputs[0])
        node.outputs.clear()


def _redirect(old, new) -> None:
    """Make every consumer of tensor `old` read tensor `new` instead."""
    for consumer in list(old.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is old:
                consumer.inputs[i] = new
