"""INT8 graphs the way TensorRT wants them, built with onnxruntime.quantization.quantize_static:

- Q/DQ only on the inputs of Conv, MatMul and Gemm (no Q/DQ on their outputs), one dedicated pair per input;
- weights per channel on the output-channel axis (Conv KCRS: 0, MatMul [K, N]: 1, Gemm transB: 0), activations
  per tensor, symmetric INT8 with zero point 0, biases left in float;
- the attention-refinement subgraphs stay in floating point, so `refiner-edge fuse` can still replace them;
- everything else is the FP16 graph (same FP32 decisions as `--precision fp16`) at opset 19, where Q/DQ scales
  may be FP16: in a strongly typed network, TensorRT runs each unquantized op in the type the graph gives it.

Layers can be left unquantized (in FP16) to meet an accuracy budget; `layer_sensitivity` ranks them.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import MissingDependencyError, VerificationError
from ..onnx.graph import opset_of
from .fp16 import convert_to_fp16
from ..compare import Comparison
from .ranges import Ranges

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
QDQ_OPSET = 19
_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "DedicatedQDQPair": True,
    "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
    "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
}


def quantizable_nodes(model, excluded: set[str]) -> list[str]:
    """The Conv/MatMul/Gemm nodes INT8 quantizes: all of them but the `excluded` (the refinement subgraphs)."""
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.name not in excluded]


def activation_inputs(model, nodes: list[str]) -> set[str]:
    """The non-constant inputs of the named nodes: the tensors that need a calibrated range."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    wanted = set(nodes)
    return {i for n in model.graph.node if n.name in wanted for i in n.input if i and i not in constants}


def check_quantizer() -> None:
    """quantize() hands ONNX Runtime's quantize_static the ranges measured here through its calibration cache
    (save_tensors_data, calibration_cache_path), which older onnxruntime releases lack: 1.23.2, the newest for
    Python 3.10 (JetPack 6), has neither. Checked before minutes of range collection, as one line."""
    import inspect

    import onnxruntime
    from onnxruntime.quantization import calibrate, quantize_static

    if not hasattr(calibrate, "save_tensors_data") or \
            "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise MissingDependencyError(
            f"INT8 calibration needs an onnxruntime whose quantize_static takes precomputed ranges, and "
            f"{onnxruntime.__version__} does not: install a newer onnxruntime (on Python >= 3.11), or calibrate on a "
            "workstation and copy the graph")


def quantize(plain: str | Path, ranges: Ranges, nodes: list[str], keep_fp32: list[str] | None):
    """The plain FP32 graph with Q/DQ on `nodes`; FP16 elsewhere unless keep_fp32 is None (then FP32, opset as is)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    from ..onnx.quiet import quiet

    if not nodes:  # quantize_static reads an empty list as "every node"
        model = onnx.load(str(plain))
    else:
        with tempfile.TemporaryDirectory(prefix="refiner-edge-q-") as tmp, quiet():
            cache = Path(tmp) / "ranges.json"  # quantize_static takes precomputed ranges through its cache
            save_tensors_data(ranges.tensors_data(), cache)
            out = Path(tmp) / "q.onnx"
            quantize_static(str(plain), str(out), None, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
                            calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=cache,
                            extra_options=_OPTIONS)
            model = _float_for_other_consumers(onnx.load(str(out)), set(nodes))
    if keep_fp32 is None:
        return model
    if nodes and opset_of(model) < QDQ_OPSET:
        from onnx import version_converter

        model = version_converter.convert_version(model, QDQ_OPSET)
    return convert_to_fp16(model, keep_fp32)


def _float_for_other_consumers(model, quantized: set[str]):
    """quantize_static hands the dequantized tensor to every consumer of a quantized activation (the Shape nodes
    beside a MatMul, the refinement conv that shares a softmax map with attn @ v); give every node outside
    `quantized` the original float tensor back, so Q/DQ feed only the quantized layers."""
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.name in quantized or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    return model


def run_logits(model, x: np.ndarray, batch: int = 16) -> np.ndarray:
    """Logits of an in-memory graph on ONNX Runtime (CPU), `batch` images per run (memory.forward_batch)."""
    from ..batching import run_batched
    from ..onnx.session import SharedArena, ort_session

    # the shared arena: each batch reuses the last one's buffers instead of faulting in fresh pages for every
    # tensor (without an arena the first run of Refiner-ViT-L@448's INT8 graph took 20 to 24 s, against 6.8 s),
    # and release() returns them once the logits are in
    session = ort_session(model, ["CPUExecutionProvider"], arena="shared")
    inp = session.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    try:
        return run_batched(lambda b: session.run(None, {inp.name: b})[0], x, batch, fixed)
    finally:
        session = None   # gone before the release, which frees only what no session holds
        SharedArena.release()


def layer_sensitivity(plain: str | Path, model, ranges: Ranges, nodes: list[str], x: np.ndarray,
                      reference: np.ndarray, on_layer: Callable[[int], None] | None = None,
                      batch: int = 16) -> list[dict]:
    """Quantize one layer at a time (the rest FP32) and measure the logit error; most sensitive first."""
    ops = {n.name: n.op_type for n in model.graph.node}
    rows = []
    for node in nodes:
        c = Comparison.of(run_logits(quantize(plain, ranges, [node], None), x, batch), reference)
        rows.append({"node": node, "op": ops.get(node, "?"), "sqnr_db": c.sqnr_db, "agreement": c.agreement,
                     "cosine": c.cosine})
        if on_layer:
            on_layer(1)
    return sorted(rows, key=lambda r: r["sqnr_db"])


@dataclass
class Budget:
    """The accuracy an INT8 graph must keep against the FP32 graph on the evaluation images."""

    max_drop: float | None = None   # top-1 agreement with FP32 may fall at most this many points below 100%
    min_sqnr_db: float | None = None

    def met(self, c: Comparison) -> bool:
        return (self.max_drop is None or 100.0 - c.agreement <= self.max_drop + 1e-9) and \
               (self.min_sqnr_db is None or c.sqnr_db >= self.min_sqnr_db)

    def __str__(self) -> str:
        parts = []
        if self.max_drop is not None:
            parts.append(f"top-1 agreement >= {100 - self.max_drop:g}%")
        if self.min_sqnr_db is not None:
            parts.append(f"SQNR >= {self.min_sqnr_db:g} dB")
        return " and ".join(parts)


def meet_budget(plain: str | Path, ranges: Ranges, nodes: list[str], ranking: list[str], keep_fp32: list[str],
                x: np.ndarray, reference: np.ndarray, budget: Budget,
                on_step: Callable[[int], None] | None = None, batch: int = 16):
    """Leave the fewest most-sensitive layers (`ranking` order) unquantized such that `budget` is met.

    Returns (model, layers left in FP16, comparison, tried steps). Doubling then bisection: about 2 log2(n) builds.
    """
    tried: dict[int, Comparison] = {}
    best: dict[int, object] = {}   # the graph of the fewest FP16 layers that met the budget so far, only that one
    # (each graph is a copy of the model: keeping all ~2 log2(n) of them took GBs at Refiner-ViT-L)

    def attempt(k: int) -> Comparison:
        if k not in tried:
            excluded = set(ranking[:k])
            model = quantize(plain, ranges, [n for n in nodes if n not in excluded], keep_fp32)
            tried[k] = Comparison.of(run_logits(model, x, batch), reference)
            if budget.met(tried[k]) and (not best or k < min(best)):
                best.clear()
                best[k] = model
            if on_step:
                on_step(1)
        return tried[k]

    n = len(ranking)
    if budget.met(attempt(0)):
        hi = 0
    else:
        lo, hi = 0, 1
        while hi < n and not budget.met(attempt(hi)):
            lo, hi = hi, min(2 * hi, n)
        if not budget.met(attempt(hi)):
            raise VerificationError(f"the budget ({budget}) is not met even with every layer in FP16: "
                                    f"{attempt(hi).agreement:.2f}% agreement, {attempt(hi).sqnr_db:.2f} dB")
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if budget.met(attempt(mid)) else (mid, hi)
    model, comparison = best[hi], tried[hi]
    steps = [{"fp16_layers": k, "agreement": c.agreement, "sqnr_db": c.sqnr_db, "met": budget.met(c)}
             for k, c in sorted(tried.items())]
    return model, ranking[:hi], comparison, steps
