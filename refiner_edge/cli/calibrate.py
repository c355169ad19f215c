"""`refiner-edge calibrate`: a plain graph + real images -> a strongly typed FP16 or INT8 (Q/DQ) graph."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import defaults
from ..precision import CALIBRATED, METHODS
from .common import JsonOpt, choices, console, note, output_file, phases, print_json


Precision = choices("Precision", CALIBRATED)
MethodName = choices("MethodName", METHODS)


def calibrate(
    onnx: Annotated[Path, typer.Option("--onnx", help="Plain FP32 graph from `refiner-edge export` (not fused).",
                                       dir_okay=False)],
    images: Annotated[Path, typer.Option("--images", help="Calibration images: a folder (searched recursively; "
                                         "jpg/png/webp/bmp/...) or one file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the calibrated graph; the report "
                                         "goes to <output>.json, the TensorRT 10 cache to <stem>.calib.",
                                         parser=output_file, metavar="FILE")],
    precision: Annotated[Optional[Precision], typer.Option("--precision", help="int8: Q/DQ on Conv/MatMul/Gemm "
                                                           "inputs over an FP16 graph; fp16: FP16 graph [default: "
                                                           f"{defaults.CALIBRATE_PRECISION}].")] = None,
    num: Annotated[Optional[int], typer.Option("--num", min=1, help="Calibration images to use (a seeded random "
                                               "sample when the folder holds more) [default: "
                                               f"{defaults.CALIBRATE_NUM}].")] = None,
    method: Annotated[Optional[MethodName], typer.Option("--method", help="How INT8 activation ranges are chosen "
                                                         "from the measured values [default: "
                                                         f"{defaults.CALIBRATE_METHOD}].")] = None,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", help="Accuracy budget: top-1 agreement with "
                                                      "FP32 may fall at most this many points; the most sensitive "
                                                      "layers stay FP16 until it holds [default: none: every "
                                                      "layer INT8].")] = None,
    min_sqnr: Annotated[Optional[float], typer.Option("--min-sqnr", help="Accuracy budget: logit SQNR against "
                                                      "FP32 in dB, with or instead of --max-drop [default: "
                                                      "none].")] = None,
    sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Report per-layer sensitivity (one layer "
                                              "quantized at a time) even without a budget. One graph per layer: "
                                              "minutes for Refiner-ViT-S on a CPU (lower --eval-num).")] = False,
    eval_num: Annotated[Optional[int], typer.Option("--eval-num", min=1, help="Calibration images the budget and "
                                                    "the report evaluate on [default: "
                                                    f"{defaults.CALIBRATE_EVAL_NUM}].")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per ONNX Runtime run "
                                                      "(fewer where --memory needs) [default: "
                                                      f"{defaults.CALIBRATE_BATCH_SIZE}].")] = None,
    memory: Annotated[Optional[float], typer.Option("--memory", min=0.05, help="GB of activations the stage may "
                                                    "hold at once, 0.05 to 4096; the graph runs in segments and "
                                                    "batches shrink to fit [default: "
                                                    f"{defaults.CALIBRATE_MEMORY_GB:g}].")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the image sample, 0 or more [default: "
                                                f"{defaults.CALIBRATE_SEED}].")] = None,
    tensorrt_version: Annotated[Optional[str], typer.Option("--tensorrt-version", help="TensorRT version written "
                                                            "into the calibration cache header, MAJOR.MINOR[.PATCH] "
                                                            "(the reader rewrites it) [default: "
                                                            f"{defaults.TENSORRT_CACHE_VERSION}].")] = None,
    listing: Annotated[Optional[Path], typer.Option("--list", help="Calibration list (e.g. calibration/NAME.txt): "
                                                    "image file names relative to --images; only those are "
                                                    "sampled [default: every image under --images].",
                                                    dir_okay=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Calibrate a plain graph on real images into a strongly typed FP16 or INT8 (Q/DQ) graph for TensorRT 10/11."""
    from ..precision.calibrate import CalibrateOptions, calibrate_onnx

    if method is not None and precision is Precision.fp16:
        note("--method sets INT8 ranges; an FP16 graph is decided from the observed ranges")
    options = CalibrateOptions(
        precision=precision.value if precision else None, num=num, method=method.value if method else None,
        max_drop=max_drop, min_sqnr=min_sqnr, sensitivity=sensitivity, eval_num=eval_num, batch_size=batch_size,
        seed=seed, tensorrt_version=tensorrt_version, listing=listing, memory_gb=memory)
    with phases(show=not as_json) as phase:
        report = calibrate_onnx(onnx, images, output, options, progress=phase).report
    if as_json:
        print_json(report)
        return
    print_calibration(report, output)


def print_calibration(report: dict, output: Path) -> None:
    from rich.table import Table

    from ..artifacts import manifest_path

    out = console()
    cal, ev = report["calibration"], report["evaluation"]
    out.print(f"calibrated on {cal['used']} images from {cal['images']} ({cal['skipped']} unreadable skipped), "
              f"method {cal['method']}, {cal['seconds']:.1f} s (total {cal['total_seconds']:.1f} s)")
    for f in cal["skipped_files"]:
        out.print(f"  skipped {f['image']}: {f['reason']}")
    kept = report["fp16"]["fp32_nodes"]
    out.print(f"FP32 kept for {len(kept)} ops" + (":" if kept else " (no measured range needs it)"))
    for k in kept:
        out.print(f"  {k['node']} ({k['op']}): {k['reason']}")
    int8 = report.get("int8")
    if int8:
        out.print(f"INT8: {int8['quantized_layers']} of {int8['candidates']} Conv/MatMul/Gemm layers quantized; "
                  f"{int8['refinement_subgraphs_in_float']} refinement subgraphs left in float for fusion")
        if int8.get("sensitivity"):
            table = Table(title="most sensitive layers (quantized alone)", title_justify="left")
            for col in ("layer", "op", "SQNR dB", "top-1 agr. %"):
                table.add_column(col, justify="left" if col in ("layer", "op") else "right")
            for r in int8["sensitivity"][:10]:
                table.add_row(r["node"], r["op"], f"{r['sqnr_db']:.1f}", f"{r['agreement']:.1f}")
            out.print(table)
        if int8.get("budget"):
            out.print(f"budget {int8['budget']['rule']}: {len(int8['fp16_layers'])} layers left in FP16")
            for k in int8["fp16_layers"]:
                out.print(f"  {k['node']}: {k['reason']}")
    out.print(f"vs FP32 on {ev['images']} images: top-1 agreement {ev['agreement']:.2f}%, cosine "
              f"{ev['cosine']:.6f}, SQNR {ev['sqnr_db']:.2f} dB, max abs error {ev['max_abs']:.4g}")
    cache = report.get("tensorrt_calibration_cache")
    written = [output] + [manifest_path(output)] * manifest_path(output).is_file()   # none from a bare graph
    written += [output.with_name(cache["file"])] if cache else []
    out.print(f"wrote {', '.join(map(str, written))}")
