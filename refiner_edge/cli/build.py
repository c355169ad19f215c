"""`refiner-edge build`: an ONNX graph (or, with none given, the whole chain from a variant) -> a raw TensorRT
engine and its manifest, for a target of engine/targets.py."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..artifacts import manifest_path
from ..defaults import BUILD_TARGET, BUILD_TF32
from ..errors import InputError
from ..engine.plugins import FORMS
from ..precision import PRECISIONS
from .common import (CheckpointOpt, ImgSizeOpt, JsonOpt, VariantOpt, choices, console, note, output_file,
                     print_json, activity)


def parse_batch(text: str) -> tuple[int, int, int]:
    """'MIN:OPT:MAX' or 'N' (a static batch) -> (min, opt, max)."""
    try:
        parts = tuple(int(p) for p in text.split(":"))
    except ValueError:
        parts = ()
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        raise InputError(f"--batch must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX (or one size), got '{text}'")
    return parts  # type: ignore[return-value]


def parse_size(text: str) -> int:
    """'4G', '512M', '1073741824' -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        value = -1
    if not math.isfinite(value) or value < 1:
        raise InputError(f"--workspace must be a size such as 4G, 512M or a byte count, got '{text}'")
    return int(value)


Precision = choices("Precision", PRECISIONS)
PluginForm = choices("PluginForm", FORMS)


def build(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="The engine file (raw TensorRT plan); "
                                                   "its manifest goes beside it (<output>.json), and with no --onnx "
                                                   "the chain's ONNX stages too [default: none: required unless "
                                                   "--list-targets].", parser=output_file, metavar="FILE")] = None,
    precision: Annotated[Optional[Precision], typer.Option("--precision", help="Engine precision [default: the "
                                                           "graph's with --onnx, else fp32].",
                                                           show_default=False)] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="A row of the targets table (--list-targets), "
                                                  f"or auto: the local GPU's [default: {BUILD_TARGET}].")] = None,
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="Graph to build (from export/calibrate/fuse) "
                                                 "[default: none: export, calibrate and fuse first].",
                                                 dir_okay=False)] = None,
    variant: VariantOpt = None,
    checkpoint: CheckpointOpt = None,
    img_size: ImgSizeOpt = None,
    calib_images: Annotated[Optional[Path], typer.Option("--calib-images", help="Calibration images for fp16/int8 "
                                                         "without --onnx [default: the sample photographs].")] = None,
    plugin: Annotated[Optional[PluginForm], typer.Option("--plugin", help="RefinerDLA plugin form: library (the "
                                                         "CMake-built IPluginV3 library), aot (kernel inside the "
                                                         "engine, TensorRT >= 10.9) or none (plain graph) [default: "
                                                         "the target's; none for RTX].", show_default=False)] = None,
    batch: Annotated[Optional[List[str]], typer.Option("--batch", help="Batch profile MIN:OPT:MAX, or one size for "
                                                       "a static batch [default: the target's]. Give it again for "
                                                       "more optimisation profiles in one engine, in increasing "
                                                       "order: each MIN at least, OPT and MAX above the previous "
                                                       "one's, MIN at most the previous MAX + 1 (e.g. --batch 1 "
                                                       "--batch 1:8:16); a runner takes each batch to the first "
                                                       "profile that holds it.", metavar="MIN:OPT:MAX")] = None,
    dla_core: Annotated[Optional[int], typer.Option("--dla-core", min=0, help="Run on this DLA core (Orin; "
                                                    "fp16/int8; weakly typed on TensorRT 10) [default: none: GPU]."
                                                    )] = None,
    workspace: Annotated[Optional[str], typer.Option("--workspace", help="Builder workspace, e.g. 2G or 512M "
                                                     "[default: the target's].")] = None,
    timing_cache: Annotated[Optional[Path], typer.Option("--timing-cache", help="Tactic timing cache to read and "
                                                         "update (valid for one GPU, CUDA and TensorRT version) "
                                                         "[default: none].", parser=output_file,
                                                         metavar="FILE")] = None,
    version_compatible: Annotated[bool, typer.Option("--version-compatible", help="Embed a lean runtime so later "
                                                     "TensorRT versions load the engine (TensorRT only).")] = False,
    weak_typing: Annotated[bool, typer.Option("--weak-typing", help="TensorRT 10 only: parse the plain graph and "
                                              "set precision with builder flags, INT8 from the calibration cache "
                                              "(DLA on JetPack 6 implies it).")] = False,
    tf32: Annotated[Optional[bool], typer.Option("--tf32/--no-tf32", help="Let FP32 layers run as TF32 (10-bit "
                                                 "mantissa products: faster on Ampere and newer, outside validate's "
                                                 "FP32 budget) [default: "
                                                 f"{'tf32' if BUILD_TF32 else 'no-tf32'}].", show_default=False)] = None,
    strip_weights: Annotated[bool, typer.Option("--strip-weights", help="Leave the weights out of the plan "
                                                "(STRIP_PLAN, REFIT_IDENTICAL): `refiner-edge refit` fills them in "
                                                "from the graph before it runs.")] = False,
    refittable: Annotated[bool, typer.Option("--refittable", help="Build a plan any weights of the same graph can "
                                             "refit (REFIT: another fine-tune), not only its own.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Redo every stage even when its artifact is up to "
                                        "date.")] = False,
    list_targets: Annotated[bool, typer.Option("--list-targets", help="Print the targets table and exit.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build a TensorRT engine (raw plan + manifest) for a Jetson, datacenter or RTX target; with no --onnx, run
    export, calibration and fusion first, reusing up-to-date artifacts."""
    from ..engine.build import BuildOptions, build_engine, engine_report
    from ..engine.targets import TARGETS, get_target

    if list_targets:
        from ..engine.plan import target_row

        rows = [target_row(t) for t in TARGETS.values()]
        print_json(rows) if as_json else print_targets(rows)
        return
    if output is None:
        raise InputError("-o/--output ENGINE is required")
    if onnx is not None:
        given = [n for n, v in (("--variant", variant), ("--checkpoint", checkpoint), ("--img-size", img_size),
                                ("--calib-images", calib_images)) if v is not None]
        if given:
            raise InputError(f"{' and '.join(given)} make the graph when no --onnx is given; {onnx.name} is "
                             "already made")
    options = BuildOptions(
        target=get_target(target), precision=precision.value if precision else None,
        batch=tuple(parse_batch(b) for b in batch) if batch else None, dla_core=dla_core,
        workspace=parse_size(workspace) if workspace else None, timing_cache=timing_cache,
        version_compatible=version_compatible, weak_typing=weak_typing, plugin=plugin.value if plugin else None,
        tf32=tf32, strip_weights=strip_weights, refittable=refittable)
    if onnx is not None:
        with activity(f"building {onnx.name} for {options.target.name} ...", show=not as_json):
            manifest = build_engine(onnx, output, options, note=note).manifest
        stages = {"build": {"artifact": str(output), "reused": False}}
    else:
        from ..pipeline import build_chain

        def step(label: str):
            note(label)
            return activity(label + " ...", show=not as_json)

        result = build_chain(output, options, variant=variant, checkpoint=checkpoint, img_size=img_size,
                             calib_images=calib_images, force=force, step=step, note=note)
        manifest, stages = result["manifest"], result["stages"]
    e = manifest.engine
    report = engine_report(output, manifest, stages)
    if as_json:
        print_json(report)
        return
    for name, stage in stages.items():
        console().print(f"{name:>9}: {'reused ' if stage['reused'] else ''}{stage['artifact']}")
    console().print(f"wrote {output} ({report['bytes'] / 1e6:.1f} MB, {e.precision}, {e.flavour} "
                    f"{e.tensorrt_version}, sm_{e.compute_capability.replace('.', '')}, built in "
                    f"{e.build_seconds:.1f} s) and {manifest_path(output)}")


def print_targets(rows: list[dict]) -> None:
    """Plain aligned columns: the table is wider than a terminal as a boxed table."""
    columns = ("name", "sm", "flavour", "tensorrt", "jetpack", "dla_cores", "workspace_gib", "opt_level",
               "hardware_compat", "batch", "plugin", "devices")
    cells = [[c for c in columns]] + [["-" if r[c] is None else f"{r[c]:g}" if isinstance(r[c], float) else
                                       str(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    from ..engine.targets import BATCH_NOTE

    typer.echo("\n" + BATCH_NOTE)
