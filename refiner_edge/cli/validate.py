"""`refiner-edge validate`: a graph's logits against PyTorch FP32 on real images; exit 4 below threshold."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import defaults
from ..compare import THRESHOLDS
from ..errors import VerificationError
from .common import BatchSizeOpt, CheckpointOpt, JsonOpt, console, phases, print_json


def per_precision(threshold: str) -> str:
    """A threshold's defaults for the help, from compare.THRESHOLDS: "per precision: 99 fp32, 99 fp16, 95 int8"."""
    return "per precision: " + ", ".join(f"{values[threshold]:g} {p}" for p, values in THRESHOLDS.items())


def validate(
    images: Annotated[Path, typer.Option("--images", help="Images: a folder (searched recursively) or one file.")],
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="Graph to check (plain, calibrated or fused) "
                                                 "[default: none: give --onnx or --engine].", dir_okay=False)] = None,
    engine: Annotated[Optional[Path], typer.Option("--engine", help="TensorRT engine to check, run on TensorRT "
                                                   "[default: none].", dir_okay=False)] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="'imagenet-folder' (class = sorted class "
                                                  "folder index) or a file of 'relative/path index' lines (index last, after a blank, tab or "
                                                  "comma; a \"quoted\" path as it is, \"\" for a quote); adds "
                                                  "accuracy [default: none: no accuracy, agreement only].")] = None,
    reference: Annotated[Optional[str], typer.Option("--reference", help="'torch' (PyTorch FP32 from the checkpoint) "
                                                     "or an ONNX file run on ONNX Runtime [default: "
                                                     f"{defaults.VALIDATE_REFERENCE}].")] = None,
    checkpoint: CheckpointOpt = None,
    variant: Annotated[Optional[str], typer.Option("--variant", help="Variant, when the graph has no manifest "
                                                   "[default: the manifest's].")] = None,
    num: Annotated[Optional[int], typer.Option("--num", min=1, help="Use a seeded sample of this many images "
                                               "[default: all].")] = None,
    batch_size: BatchSizeOpt = None,
    min_agreement: Annotated[Optional[float], typer.Option("--min-agreement", min=0, max=100, help="Top-1 "
                                                           "agreement threshold, % [default: "
                                                           f"{per_precision('min_agreement')}].")] = None,
    min_cosine: Annotated[Optional[float], typer.Option("--min-cosine", min=-1, max=1, help="Mean cosine "
                                                        f"threshold [default: {per_precision('min_cosine')}].")]
    = None,
    min_sqnr: Annotated[Optional[float], typer.Option("--min-sqnr", help="Logit SQNR threshold, dB [default: "
                                                      f"{per_precision('min_sqnr_db')}].")] = None,
    max_accuracy_drop: Annotated[Optional[float], typer.Option("--max-accuracy-drop", help="Accuracy drop "
                                                               "threshold, points, with --labels [default: "
                                                               f"{per_precision('max_accuracy_drop')}].")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a graph's or an engine's logits against PyTorch FP32 on real images; exit 4 when a threshold fails
    (a CI gate)."""
    from ..runners.validate import validate_onnx

    overrides = {"min_agreement": min_agreement, "min_cosine": min_cosine, "min_sqnr_db": min_sqnr,
                 "max_accuracy_drop": max_accuracy_drop}
    with phases() as phase:
        report = validate_onnx(onnx, images, engine=engine, labels=labels, reference=reference, checkpoint=checkpoint,
                               variant=variant, num=num, batch_size=batch_size, overrides=overrides, progress=phase)
    if as_json:
        print_json(report)
    else:
        print_validation(report)
    if not report["passed"]:   # after the report: exit 4, a CI gate
        raise VerificationError(f"validation failed: {'; '.join(report['failures'])}")


def print_validation(report: dict) -> None:
    from rich.table import Table

    m, t = report["metrics"], report["thresholds"]
    table = Table(title=f"{report['candidate']} ({report['precision']}) vs {report['reference']}",
                  caption=f"{report['images']['used']} images, {report['images']['skipped']} unreadable skipped",
                  title_justify="left")
    for col in ("metric", "value", "threshold"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    table.add_row("top-1 agreement %", f"{m['agreement']:.2f}", f">= {t['min_agreement']}")
    table.add_row("cosine", f"{m['cosine']:.6f}", f">= {t['min_cosine']}")
    table.add_row("SQNR dB", f"{m['sqnr_db']:.2f}", f">= {t['min_sqnr_db']}")
    table.add_row("max abs error", f"{m['max_abs']:.4g}", "")
    if m["accuracy"] is not None:
        table.add_row("accuracy %", f"{m['accuracy']:.2f}", "")
        table.add_row("reference accuracy %", f"{m['reference_accuracy']:.2f}", "")
        table.add_row("accuracy drop (points)", f"{m['accuracy_drop']:.2f}", f"<= {t['max_accuracy_drop']}")
    out = console()
    out.print(table)
    out.print("PASS" if report["passed"] else "FAIL")
