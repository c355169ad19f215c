"""The `calibrate` stage: plain FP32 ONNX + a folder of images -> a strongly typed FP16 or INT8 (Q/DQ) ONNX,
its manifest/report (`<output>.json`) and, for INT8, a TensorRT 10 calibration cache (`<output stem>.calib`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import math
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .. import defaults
from ..artifacts import check_artifact, staged_outputs
from ..batching import pad_batch
from ..compare import Comparison
from ..defaults import default
from ..errors import InputError, VerificationError
from ..manifest import Verification, read_manifest, write_manifest
from ..onnx.graph import check_interface, graph_precision, graph_preprocess, load_onnx, model_interface, opset_of
from ..result import StageResult
from . import CALIBRATED
from .fp16 import RULES, convert_to_fp16, fp32_nodes
from .int8 import (QUANTIZED_OPS, Budget, activation_inputs, check_quantizer, layer_sensitivity, meet_budget,
                   quantizable_nodes, quantize, run_logits)
from ..onnx.memory import GB, GraphMemory, budget_bytes, forward_batch
from .ranges import METHODS, collect_ranges
from .tensorrt_cache import DEFAULT_VERSION, check_version, write_cache

# --memory: below 50 MB not even one segment of the tiny model fits; above 4 TB no host has it (and inf or 1e400
# would overflow the byte count)
MIN_MEMORY_GB, MAX_MEMORY_GB = 0.05, 4096.0

# progress(label, total) starts a phase and returns its tick(n) callback
Progress = Callable[[str, int], Callable[[int], None]]


def calibration_cache_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".calib")


def stale_cache(output: Path, cache: Path | None) -> list[Path]:
    """The calibration cache an earlier INT8 graph at `output` left, when this graph has none (FP16): removed with
    the publish, as its manifest proves it was that graph's, so no TensorRT 10 build reads it for the new one."""
    earlier = calibration_cache_path(output)
    if cache is not None or not earlier.is_file():
        return []
    try:
        manifest = read_manifest(output, verify=False)
    except InputError:
        return []
    recorded = manifest.report.get("tensorrt_calibration_cache") if manifest is not None else None
    return [earlier] if isinstance(recorded, dict) and recorded.get("file") == earlier.name else []


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


@dataclass(frozen=True)
class CalibrateOptions:
    """How `calibrate` calibrates; None for an option: its default (defaults.py), filled in by resolved()."""

    precision: str | None = None         # fp16 or int8
    num: int | None = None               # calibration images (a seeded sample where there are more)
    method: str | None = None            # how INT8 activation ranges are chosen (precision.METHODS)
    max_drop: float | None = None        # accuracy budget: top-1 agreement points INT8 may lose
    min_sqnr: float | None = None        # accuracy budget: logit SQNR in dB
    sensitivity: bool = False            # report per-layer sensitivity even without a budget
    eval_num: int | None = None          # images the budget and the report evaluate on
    batch_size: int | None = None        # images per ONNX Runtime run (fewer where memory_gb needs)
    seed: int | None = None              # of the image sample
    tensorrt_version: str | None = None  # written into the TensorRT 10 calibration cache header
    listing: str | Path | None = None    # a calibration list (calibration/*.txt: names relative to the images)
    memory_gb: float | None = None       # activations held at once [default: defaults.CALIBRATE_MEMORY_GB]

    def resolved(self) -> "CalibrateOptions":
        """These options with every default filled in; InputError for values calibrate cannot use."""
        o = dataclasses.replace(
            self, precision=default(self.precision, defaults.CALIBRATE_PRECISION),
            num=default(self.num, defaults.CALIBRATE_NUM), method=default(self.method, defaults.CALIBRATE_METHOD),
            eval_num=default(self.eval_num, defaults.CALIBRATE_EVAL_NUM),
            batch_size=default(self.batch_size, defaults.CALIBRATE_BATCH_SIZE),
            seed=default(self.seed, defaults.CALIBRATE_SEED),
            tensorrt_version=default(self.tensorrt_version, DEFAULT_VERSION))
        if o.precision not in CALIBRATED:
            raise InputError(f"--precision must be {' or '.join(CALIBRATED)}, got '{o.precision}'")
        if o.method not in METHODS:
            raise InputError(f"unknown calibration method '{o.method}'; choose one of: {', '.join(METHODS)}")
        if o.budget is not None and o.precision != "int8":
            raise InputError("--max-drop/--min-sqnr choose which layers stay FP16 in an INT8 graph: use "
                             "--precision int8")
        if o.max_drop is not None and not 0 <= o.max_drop <= 100:
            raise InputError(f"--max-drop is in percentage points (0 to 100), got {o.max_drop}")
        if o.min_sqnr is not None and not math.isfinite(o.min_sqnr):
            raise InputError(f"--min-sqnr must be a finite number of dB, got {o.min_sqnr}")
        for option, value in (("--num", o.num), ("--eval-num", o.eval_num), ("--batch-size", o.batch_size)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{option} must be at least 1, got {value}")
        if not isinstance(o.seed, int) or not 0 <= o.seed < 2 ** 64:   # NumPy's seeds are non-negative
            raise InputError(f"--seed must be between 0 and 2**64 - 1, got {o.seed}")
        if o.memory_gb is not None and not MIN_MEMORY_GB <= o.memory_gb <= MAX_MEMORY_GB:   # NaN fails too
            raise InputError(f"--memory must be between {MIN_MEMORY_GB} and {MAX_MEMORY_GB:g} GB, got {o.memory_gb}")
        check_version(o.tensorrt_version)
        return o

    @property
    def budget(self) -> Budget | None:
        return Budget(self.max_drop, self.min_sqnr) if self.max_drop is not None or self.min_sqnr is not None \
            else None


def calibrate_onnx(source: str | Path, images: str | Path, output: str | Path,
                   options: CalibrateOptions | None = None, progress: Progress | None = None) -> StageResult:
    """Calibrate the plain graph `source` on `images` and write `options.precision`'s graph to `output`.
    Returns the StageResult, whose report is also the `report` of the manifest written to `<output>.json`.
    `progress` gets its phases (default: whoever listens, refiner_edge/progress.py).
    """
    from .. import progress as stage_progress

    progress = progress or stage_progress.phase
    import onnx

    from ..images.imageset import stream_image_set
    from ..refine.surgery import refinement_subgraphs

    o = (options or CalibrateOptions()).resolved()
    budget = o.budget
    source, output, images = Path(source), Path(output), Path(images)
    if output.resolve() == source.resolve():
        raise InputError("--output must differ from --onnx: the plain graph is the calibration's reference")
    check_artifact(output, inputs=[source, images, o.listing],
                   extra=[calibration_cache_path(output)] if o.precision == "int8" else [])
    if o.precision == "int8":
        check_quantizer()
    started = time.perf_counter()
    model = load_float_graph(source)
    check_interface(source, *model_interface(model))   # a graph of another interface: one line, before the images
    manifest = read_manifest(source)
    graph_input = model.graph.input[0]
    shape = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    preprocess = graph_preprocess(source, manifest, shape)

    found_tick = progress("decoding images", o.num)
    # decoded as range collection consumes them: only one batch and the evaluation images stay in memory
    imageset, decoded = stream_image_set([images], preprocess, num=o.num, seed=o.seed, on_image=found_tick,
                                         listing=o.listing)
    evaluated: list[np.ndarray] = []
    batches = _batches(_keeping(decoded, evaluated, o.eval_num), shape[0] or o.batch_size,
                       pad=shape[0] is not None)

    units = refinement_subgraphs(model)
    in_refinement = {n for unit in units for n in unit}
    nodes = quantizable_nodes(model, in_refinement) if o.precision == "int8" else []
    range_method = o.method if o.precision == "int8" else "max"  # FP16 needs the observed ranges, nothing clipped
    tick = progress(f"calibrating ({range_method})", min(o.num, imageset.found))
    memory = GraphMemory.of(model)   # shapes inferred once: for the evaluation batch and the segments
    eval_batch = forward_batch(memory, budget_bytes(o.memory_gb), o.batch_size)
    # the FP32 reference logits of the evaluation images come from this pass (they are its first images)
    ranges = collect_ranges(source, batches, range_method, graph_input.name, activation_inputs(model, nodes), tick,
                            memory_gb=o.memory_gb, keep_outputs=o.eval_num, memory=memory)
    del memory
    calibrated = time.perf_counter()
    keep = fp32_nodes(model, ranges, units)
    keep_names = [k.node for k in keep]

    x_eval = np.stack(evaluated)
    del evaluated
    reference = ranges.outputs[:len(x_eval)]
    report: dict = {"precision": o.precision, "fp16": {"rules": RULES, "fp32_nodes": [k.to_dict() for k in keep]}}
    comparison = None
    if o.precision == "fp16":
        result = convert_to_fp16(model, keep_names)
    else:
        result, report["int8"], comparison = _int8_graph(source, model, ranges, nodes, len(units), keep_names,
                                                         x_eval, reference, budget, o.sensitivity, progress,
                                                         eval_batch)
    if comparison is None:
        comparison = Comparison.of(run_logits(result, x_eval, eval_batch), reference)
    _check_finite(comparison, reference, o.precision, source)
    finished = time.perf_counter()

    onnx.checker.check_model(result)
    cache = calibration_cache_path(output) if o.precision == "int8" else None
    report.update({
        "calibration": {"images": str(images), "method": range_method, "num": o.num, "seed": o.seed,
                        **imageset.summary(), "batch": ranges.batch, "segments": ranges.segments,
                        "memory_gb": budget_bytes(o.memory_gb) / GB, "evaluation_batch": eval_batch,
                        "seconds": round(calibrated - started, 2), "total_seconds": round(finished - started, 2)},
        "evaluation": {"against": f"{source.name} (FP32) on ONNX Runtime", "images": len(x_eval),
                       **comparison.metrics()},
        "tensorrt_calibration_cache": None if cache is None else {
            "file": cache.name, "tensorrt": o.tensorrt_version, "tensors": len(ranges.minmax)},
    })
    if o.listing is not None:
        report["calibration"]["list"] = Path(o.listing).name
    if manifest is not None:  # a graph from elsewhere has no manifest to carry on
        graph = dataclasses.replace(manifest.graph, precision=o.precision, opset=opset_of(result), fused=False,
                                    fp32_ops=report["fp16"]["fp32_nodes"],
                                    fp16_layers=report.get("int8", {}).get("fp16_layers", []))
        record = manifest.derive("calibrate", output, source, graph=graph, report=report)
        record.verification.append(Verification(
            stage="calibrate", candidate="onnxruntime-cpu", reference=f"{source.name} (FP32) on onnxruntime-cpu",
            inputs=f"{comparison.images} calibration images", metrics=comparison.metrics(),
            thresholds={} if budget is None else {"max_drop": budget.max_drop, "min_sqnr_db": budget.min_sqnr_db}))
    with staged_outputs(output, extra=[cache] if cache else [], stale=stale_cache(output, cache)) as staging:
        onnx.save(result, str(staging.path(output)))
        if cache is not None:
            write_cache(staging.path(cache), {k: ranges.clip(k) for k in ranges.minmax}, o.tensorrt_version)
        if manifest is not None:
            write_manifest(staging.path(output), record)
    return StageResult(output, record if manifest is not None else None, comparison, report)


def _check_finite(comparison: Comparison, reference: np.ndarray, precision: str, source: Path) -> None:
    """A graph whose own report is not finite (NaN cosine, -inf SQNR: outputs that overflowed) is never
    published: its predictions would be NaN. An exact match (SQNR +inf) is finite enough."""
    if not np.isfinite(reference).all():
        raise VerificationError(f"{source.name} (FP32) itself gives NaN or infinite logits on the calibration "
                                "images: nothing written")
    if not (math.isfinite(comparison.max_abs) and math.isfinite(comparison.cosine)):
        raise VerificationError(f"the {precision.upper()} graph gives NaN or infinite logits on the calibration "
                                f"images (cosine {comparison.cosine:.6f}, SQNR {comparison.sqnr_db:.2f} dB, max abs "
                                f"error {comparison.max_abs:.4g}): nothing written")


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
