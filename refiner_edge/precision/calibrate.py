"""The `calibrate` stage: plain FP32 ONNX + a folder of images -> a strongly typed FP16 or INT8 (Q/DQ) ONNX,
its manifest/report (`<output>.json`) and, for INT8, a TensorRT 10 calibration cache (`<output stem>.calib`)."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .. import defaults
from ..artifacts import check_artifact, staged_outputs
from ..batching import pad_batch
from ..compare import Comparison
from ..defaults import default
from ..errors import InputError
from ..manifest import Verification, read_manifest, write_manifest
from ..onnx.graph import graph_precision, graph_preprocess, load_onnx, opset_of
from . import CALIBRATED
from .fp16 import RULES, convert_to_fp16, fp32_nodes
from .int8 import (QUANTIZED_OPS, Budget, activation_inputs, layer_sensitivity, meet_budget, quantizable_nodes,
                   quantize, run_logits)
from .memory import GB, budget_bytes, forward_batch
from .ranges import METHODS, collect_ranges
from .tensorrt_cache import DEFAULT_VERSION, write_cache

# progress(label, total) starts a phase and returns its tick(n) callback
Progress = Callable[[str, int], Callable[[int], None]]


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def calibration_cache_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".calib")


def load_float_graph(source: Path):
    """The plain FP32 graph to calibrate; fused or already calibrated graphs are refused."""
    model = load_onnx(source)
    if any(n.op_type == "RefinerDLA" for n in model.graph.node):
        raise InputError(f"{source} is fused: calibrate the plain graph from `refiner-edge export`, then fuse the "
                         "calibrated graph")
    have = graph_precision(model)
    if have != "fp32":
        raise InputError(f"{source} is already calibrated ({have}): calibrate the plain FP32 graph")
    return model


def calibrate_onnx(source: str | Path, images: str | Path, output: str | Path, *, precision: str | None = None,
                   num: int | None = None, method: str | None = None, max_drop: float | None = None,
                   min_sqnr: float | None = None, sensitivity: bool = False, eval_num: int | None = None,
                   batch_size: int | None = None, seed: int | None = None, tensorrt_version: str | None = None,
                   listing: str | Path | None = None, memory_gb: float | None = None,
                   progress: Progress = _no_progress) -> dict:
    """Calibrate the plain graph `source` on `images` and write the `precision` graph to `output`; None for an
    option: its default (defaults.py).

    listing: a calibration list (calibration/*.txt: image file names relative to `images`) to sample from.
    memory_gb: the activations the stage may hold at once (range collection and every evaluation run); batches
    shrink to fit it [default: defaults.CALIBRATE_MEMORY_GB].
    Returns the report, which is also the `report` of the manifest written to `<output>.json`.
    """
    import onnx

    from ..images.imageset import stream_image_set
    from ..refine.surgery import refinement_subgraphs

    precision, num = default(precision, defaults.CALIBRATE_PRECISION), default(num, defaults.CALIBRATE_NUM)
    method, eval_num = default(method, defaults.CALIBRATE_METHOD), default(eval_num, defaults.CALIBRATE_EVAL_NUM)
    batch_size, seed = default(batch_size, defaults.CALIBRATE_BATCH_SIZE), default(seed, defaults.CALIBRATE_SEED)
    tensorrt_version = default(tensorrt_version, DEFAULT_VERSION)
    if precision not in CALIBRATED:
        raise InputError(f"--precision must be {' or '.join(CALIBRATED)}, got '{precision}'")
    if method not in METHODS:
        raise InputError(f"unknown calibration method '{method}'; choose one of: {', '.join(METHODS)}")
    budget = Budget(max_drop, min_sqnr) if (max_drop is not None or min_sqnr is not None) else None
    if budget is not None and precision != "int8":
        raise InputError("--max-drop/--min-sqnr choose which layers stay FP16 in an INT8 graph: use --precision int8")
    if max_drop is not None and not 0 <= max_drop <= 100:
        raise InputError(f"--max-drop is in percentage points (0 to 100), got {max_drop}")
    source, output, images = Path(source), Path(output), Path(images)
    if output.resolve() == source.resolve():
        raise InputError("--output must differ from --onnx: the plain graph is the calibration's reference")
    check_artifact(output, inputs=[source, images, listing],
                   extra=[calibration_cache_path(output)] if precision == "int8" else [])
    started = time.perf_counter()
    model = load_float_graph(source)
    manifest = read_manifest(source)
    graph_input = model.graph.input[0]
    shape = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    preprocess = graph_preprocess(source, manifest, shape)

    found_tick = progress("decoding images", num)
    # decoded as range collection consumes them: only one batch and the evaluation images stay in memory
    imageset, decoded = stream_image_set([images], preprocess, num=num, seed=seed, on_image=found_tick,
                                         listing=listing)
    evaluated: list[np.ndarray] = []
    batches = _batches(_keeping(decoded, evaluated, eval_num), shape[0] or batch_size, pad=shape[0] is not None)

    units = refinement_subgraphs(model)
    in_refinement = {n for unit in units for n in unit}
    nodes = quantizable_nodes(model, in_refinement) if precision == "int8" else []
    range_method = method if precision == "int8" else "max"  # FP16 needs the observed ranges, nothing clipped
    tick = progress(f"calibrating ({range_method})", min(num, imageset.found))
    ranges = collect_ranges(source, batches, range_method, graph_input.name, activation_inputs(model, nodes), tick,
                            memory_gb=memory_gb)
    calibrated = time.perf_counter()
    eval_batch = forward_batch(model, budget_bytes(memory_gb), batch_size)
    keep = fp32_nodes(model, ranges, units)
    keep_names = [k.node for k in keep]

    x_eval = np.stack(evaluated)
    del evaluated
    reference = run_logits(model, x_eval, eval_batch)
    report: dict = {"precision": precision, "fp16": {"rules": RULES, "fp32_nodes": [k.to_dict() for k in keep]}}
    comparison = None
    if precision == "fp16":
        result = convert_to_fp16(model, keep_names)
    else:
        result, report["int8"], comparison = _int8_graph(source, model, ranges, nodes, len(units), keep_names,
                                                         x_eval, reference, budget, sensitivity, progress,
                                                         eval_batch)
    if comparison is None:
        comparison = Comparison.of(run_logits(result, x_eval, eval_batch), reference)
    finished = time.perf_counter()

    onnx.checker.check_model(result)
    cache = calibration_cache_path(output) if precision == "int8" else None
    report.update({
        "calibration": {"images": str(images), "method": range_method, "num": num, "seed": seed,
                        **imageset.summary(), "batch": ranges.batch, "segments": ranges.segments,
                        "memory_gb": budget_bytes(memory_gb) / GB, "evaluation_batch": eval_batch,
                        "seconds": round(calibrated - started, 2), "total_seconds": round(finished - started, 2)},
        "evaluation": {"against": f"{source.name} (FP32) on ONNX Runtime", "images": len(x_eval),
                       **comparison.metrics()},
        "tensorrt_calibration_cache": None if cache is None else {"file": cache.name, "tensorrt": tensorrt_version,
                                                                 "tensors": len(ranges.minmax)},
    })
    if listing is not None:
        report["calibration"]["list"] = Path(listing).name
    if manifest is not None:  # a graph from elsewhere has no manifest to carry on
        graph = dataclasses.replace(manifest.graph, precision=precision, opset=opset_of(result), fused=False,
                                    fp32_ops=report["fp16"]["fp32_nodes"],
                                    fp16_layers=report.get("int8", {}).get("fp16_layers", []))
        record = manifest.derive("calibrate", output, source, graph=graph, report=report)
        record.verification.append(Verification(
            stage="calibrate", candidate="onnxruntime-cpu", reference=f"{source.name} (FP32) on onnxruntime-cpu",
            inputs=f"{comparison.images} calibration images", metrics=comparison.metrics(),
            thresholds={} if budget is None else {"max_drop": budget.max_drop, "min_sqnr_db": budget.min_sqnr_db}))
    with staged_outputs(output, extra=[cache] if cache else []) as staging:
        onnx.save(result, str(staging.path(output)))
        if cache is not None:
            write_cache(staging.path(cache), {k: ranges.clip(k) for k in ranges.minmax}, tensorrt_version)
        if manifest is not None:
            write_manifest(staging.path(output), record)
    return report


def _int8_graph(source: Path, model, ranges, nodes: list[str], refinements: int, keep_fp32: list[str],
                x_eval: np.ndarray, reference: np.ndarray, budget: Budget | None, sensitivity: bool,
                progress: Progress, batch: int):
    """(INT8 graph, its report section, its comparison with FP32 or None): all layers quantized, or the fewest
    most-sensitive left in FP16 that meet `budget`."""
    report: dict = {"quantized_ops": list(QUANTIZED_OPS), "candidates": len(nodes),
                    "refinement_subgraphs_in_float": refinements, "weights": "per-channel symmetric INT8",
                    "activations": "per-tensor symmetric INT8", "fp16_layers": []}
    comparison = None
    if sensitivity or budget is not None:
        report["sensitivity"] = layer_sensitivity(source, model, ranges, nodes, x_eval, reference,
                                                  progress("sensitivity (one layer at a time)", len(nodes)), batch)
    if budget is None:
        result = quantize(source, ranges, nodes, keep_fp32)
    else:
        rows = {r["node"]: r for r in report["sensitivity"]}
        ranking = [r["node"] for r in report["sensitivity"]]
        tick = progress(f"meeting the budget ({budget})", 2 * max(1, int(np.log2(max(len(nodes), 1)))) + 1)
        result, fp16_layers, comparison, steps = meet_budget(source, ranges, nodes, ranking, keep_fp32, x_eval,
                                                             reference, budget, tick, batch)
        report["budget"] = {"rule": str(budget), "max_drop": budget.max_drop, "min_sqnr_db": budget.min_sqnr_db,
                            "steps": steps}
        report["fp16_layers"] = [{"node": n, "op": rows[n]["op"],
                                  "reason": f"quantized alone it gives {rows[n]['sqnr_db']:.1f} dB SQNR, among the "
                                            f"{len(fp16_layers)} most sensitive; needed for the budget"}
                                 for n in fp16_layers]
    report["quantized_layers"] = len(nodes) - len(report["fp16_layers"])
    return result, report, comparison


def _batches(images: Iterable[np.ndarray], size: int, pad: bool) -> Iterator[np.ndarray]:
    """Batches of `size` from images arriving one at a time; for a fixed-batch graph (pad) the last is filled with
    repeats of its last image."""
    batch: list[np.ndarray] = []
    for image in images:
        batch.append(image)
        if len(batch) == size:
            yield np.stack(batch).astype(np.float32, copy=False)
            batch = []
    if batch:
        yield pad_batch(np.stack(batch).astype(np.float32, copy=False), size if pad else None)


def _keeping(images: Iterable[np.ndarray], kept: list[np.ndarray], count: int) -> Iterator[np.ndarray]:
    """The images, passed through; the first `count` are also appended to `kept`."""
    for image in images:
        if len(kept) < count:
            kept.append(image)
        yield image
