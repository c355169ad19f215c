"""`refiner-edge fuse`: each attention-refinement subgraph -> one RefinerDLA plugin node, checked on real images."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..defaults import FUSE_FORM, FUSE_NUM, FUSE_VERIFY, default
from ..refine.plugin_form import FORMS
from ..result import StageResult
from .common import JsonOpt, choices, console, note, output_file, print_json, activity


PluginForm = choices("PluginForm", FORMS)


def run_fuse(source: Path, output: Path, verify: bool | None, images: Path | None = None, num: int | None = None,
             quiet: bool = False, form: str | None = None) -> dict:
    from ..refine.fuse import fuse_onnx

    with activity(f"fusing the attention refinements of {source.name} ...", show=not quiet):
        result = fuse_onnx(source, output, verify=verify, images=images, num=num, form=form)
    return fuse_report(result, default(verify, FUSE_VERIFY), quiet)


def fuse_report(result: StageResult, verify: bool, quiet: bool) -> dict:
    """What fuse_onnx's `result` says, printed (unless quiet) and as the --json report."""
    comparison, done = result.comparison, result.report
    if verify and comparison is None:
        note("not verified: the reference RefinerDLA op needs onnxruntime-extensions")
    if not quiet:
        out = console()
        out.print(f"fused {done['fused_nodes']} refinement subgraphs into RefinerDLA nodes ({done['form']} "
                  "plugin form)")
        if comparison is not None:
            out.print(f"fused vs plain graph on ONNX Runtime: {comparison}")
    return {"output": str(result.artifact), "fused_nodes": done["fused_nodes"], "form": done["form"],
            "verification": None if comparison is None else comparison.to_dict()}


def fuse(
    source: Annotated[Path, typer.Argument(help="Plain ONNX graph from `refiner-edge export` or `calibrate` "
                                           "(FP32, FP16 or INT8 Q/DQ).", dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the fused graph (may be SOURCE).",
                                         parser=output_file, metavar="FILE")],
    verify: Annotated[Optional[bool], typer.Option("--verify/--no-verify", help="Run fused and plain graphs on "
                                                   "ONNX Runtime (reference op) on real images and require the same "
                                                   "predictions, within the criteria of the graph's precision "
                                                   f"[default: {'' if FUSE_VERIFY else 'no-'}verify].",
                                                   show_default=False)] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Images for the check: a folder or a file "
                                                   "[default: the sample photographs].")] = None,
    num: Annotated[Optional[int], typer.Option("--num", min=1, help="Images the check uses at most [default: "
                                               f"{FUSE_NUM}].")] = None,
    plugin_form: Annotated[Optional[PluginForm], typer.Option(
        "--plugin-form", help="library: weights as node attributes, for the IPluginV3 library (TensorRT 10.3+, C++ "
        "apps); aot: weights as an input and aot=1, for the ahead-of-time plugin TensorRT >= 10.9 embeds in the "
        f"engine (checked in the library form, which ONNX Runtime runs) [default: {FUSE_FORM}].",
        show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace each attention-refinement subgraph with one RefinerDLA TensorRT plugin node."""
    report = run_fuse(source, output, verify, images, num, quiet=as_json, form=plugin_form and PluginForm(plugin_form).value)
    if as_json:
        print_json(report)
