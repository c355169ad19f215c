"""`refiner-edge export`: PyTorch -> plain ONNX (optionally fused), verified before it is kept."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import defaults
from .common import CheckpointOpt, ImgSizeOpt, JsonOpt, VariantOpt, activity, console, note, output_file, print_json


def parse_batch(value: str) -> int | str:
    if value == "dynamic":
        return value
    try:
        n = int(value)
    except ValueError:
        raise typer.BadParameter("use a positive integer or 'dynamic'", param_hint="--batch") from None
    if n < 1:
        raise typer.BadParameter("use a positive integer or 'dynamic'", param_hint="--batch")
    return n


def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the ONNX file; its manifest "
                                         "goes beside it (<output>.json).", parser=output_file, metavar="FILE")],
    variant: VariantOpt = None,
    checkpoint: CheckpointOpt = None,
    img_size: ImgSizeOpt = None,
    opset: Annotated[Optional[int], typer.Option("--opset", help="ONNX opset (17 up to the newest the installed "
                                                 f"torch exports) [default: {defaults.EXPORT_OPSET}].")] = None,
    batch: Annotated[Optional[str], typer.Option("--batch", help="Fixed batch size, or 'dynamic' [default: "
                                                 f"{defaults.EXPORT_BATCH}].")] = None,
    fuse: Annotated[bool, typer.Option("--fuse/--no-fuse", help="Replace each attention refinement with one "
                                       "RefinerDLA plugin node (for TensorRT).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a Refiner-ViT to ONNX, checked against PyTorch on ONNX Runtime before it is kept."""
    from ..artifacts import check_artifact, manifest_path
    from ..models.factory import create_model
    from ..models.variants import DEFAULT_VARIANT
    from ..onnx.export import export_onnx
    from .fuse import fuse_report

    batch_value = None if batch is None else parse_batch(batch)
    check_artifact(output, inputs=[checkpoint])   # before the model is made
    model = create_model(variant or DEFAULT_VARIANT, img_size=img_size, checkpoint=checkpoint)
    out = console()
    name = f"{model.cfg.name}@{model.cfg.img_size}"
    if not fuse:
        with activity(f"exporting {name} to {output} ...", show=not as_json):
            result = export_onnx(model, output, opset=opset, batch=batch_value)
        report = {"output": str(output), "export": result.comparison.to_dict()}
        if not as_json:
            out.print(f"verified on ONNX Runtime: {result.comparison}")
    else:
        from ..refine.fuse import export_fused

        def exported(result) -> None:
            if not as_json:
                out.print(f"verified on ONNX Runtime: {result.comparison}")

        with activity(f"exporting {name} and fusing its attention refinements ...", show=not as_json):
            result = export_fused(model, output, opset=opset, batch=batch_value, on_exported=exported)
        report = {"output": str(output), "export": result["export"].comparison.to_dict(),
                  "fuse": fuse_report(result["fuse"], verify=True, quiet=as_json)}
    if checkpoint is None:
        note("no --checkpoint given: the weights are random")
    if as_json:
        print_json(report)
    else:
        out.print(f"wrote {output} and {manifest_path(output)}")
