"""`refiner-edge refit`: a weight-stripped (or refittable) engine + an ONNX graph -> a full engine and its
manifest (engine/refit.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..artifacts import manifest_path
from .common import JsonOpt, console, note, output_file, print_json, status


def refit(
    engine: Annotated[Path, typer.Argument(help="Engine built with `build --strip-weights` or --refittable.",
                                           dir_okay=False)],
    onnx: Annotated[Path, typer.Option("--onnx", help="Graph the weights come from: the one the engine was built "
                                       "from, or (a --refittable engine) another checkpoint's graph of the same "
                                       "variant, made the same way.", dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The full engine; its manifest goes beside it.",
                                         parser=output_file, metavar="FILE")],
    as_json: JsonOpt = False,
) -> None:
    """Fill a weight-stripped engine's weights in from an ONNX graph (TensorRT's Refitter; needs a GPU)."""
    from ..engine.refit import refit_engine

    with status(f"refitting {engine.name} from {onnx.name} ..."):
        result = refit_engine(engine, onnx, output, note=note)
    report = {"engine": str(output), "manifest": str(manifest_path(output)), "bytes": output.stat().st_size,
              "from": str(onnx), **result.report.get("refit", {})}
    if as_json:
        print_json(report)
        return
    console().print(f"wrote {output} ({report['bytes'] / 1e6:.1f} MB, weights from {onnx}) and "
                    f"{manifest_path(output)}")
