"""The pipeline, one layer above the stages (tools/import_check.py): `refiner-edge build` with no graph given runs
export -> calibrate (fp16/int8, on the images given or the sample photographs) -> fuse (when the plugin form needs a
fused graph) -> build, each artifact kept beside the engine. The export and the build each run in a child process
(child_export, engine/worker.py), so neither PyTorch's memory nor TensorRT's stays under the stages after them. The
build's plan (engine/plan.py) is resolved before the export, so every check of the build runs once, before minutes
of work; each stage returns its StageResult.

A stage is skipped when its artifact is there, matches its manifest's SHA-256, and its manifest's report holds the
same `chain_key`: the SHA-256 of the stage's inputs (files by content) and options. The stages of one run are
published together or not at all (build_chain), so an interrupted or failed run leaves the earlier generation whole.

The stage files have derived names beside the engine (s.onnx, s.fp16.onnx ...), the names a user gives their own
files too. The chain replaces only files it made, as their manifests prove (a chain record, and the file unchanged
since); any other file there is refused before any work (check_own), never replaced.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

from . import __version__
from .artifacts import (Staging, check_artifact, file_sha256, hashing_once, known_sha256, manifest_path,
                        staged_outputs)
from .engine.build import check_build_outputs, make_engine
from .engine.plan import BuildOptions, BuildPlan, planned_network, rebuild_command, resolve
from .errors import InputError, RefinerEdgeError
from .manifest import Manifest, read_manifest, write_manifest
from .result import StageResult

Step = Callable[[str], ContextManager]


def chain_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def images_digest(folder: Path) -> str:
    """SHA-256 over the images' relative names and contents: a changed, added or removed image recalibrates."""
    from .images.preprocess import find_images

    h = hashlib.sha256()
    for path in find_images([folder]):
        h.update(str(path.relative_to(folder) if path.is_relative_to(folder) else path.name).encode())
        h.update(file_sha256(path).encode())
    return h.hexdigest()


def reusable(path: Path, key: str) -> Manifest | None:
    """The manifest of a stage artifact made from the same inputs and options, or None."""
    if not path.is_file():
        return None
    try:
        manifest = read_manifest(path)
    except RefinerEdgeError:
        return None
    if manifest is None or manifest.report.get("chain_key") != key or file_sha256(path) != manifest.sha256:
        return None
    return manifest


def check_own(path: Path, output: Path, also: Path | None = None) -> None:
    """Refuse a stage file, its manifest, or `also` (the calibration cache beside it) unless the chain made them: its
    manifest holds a chain record. One line, saying what to do. (A file that no longer matches such a manifest is
    the chain's too, e.g. a new file beside its old manifest after a hard kill: it is made again, not refused.)"""
    manifest_file = manifest_path(path)
    present = [p for p in (path, manifest_file, also) if p is not None and (p.exists() or p.is_symlink())]
    if not present:
        return
    try:
        manifest = read_manifest(path, verify=False)
    except RefinerEdgeError:
        manifest, why = None, f"{manifest_file.name} is not a manifest this version reads"
    else:
        if manifest is not None and "chain_key" in manifest.report:
            return
        why = (f"no {manifest_file.name} records it" if manifest is None else
               f"{manifest_file.name} records `refiner-edge {manifest.stage}`, not this chain")
    raise InputError(f"{present[0]} was not made by this build chain ({why}) and the chain would replace it: give "
                     f"your graph with --onnx, or move it, or choose another -o than {output.name}")


def stamp(path: Path, key: str, inputs: dict) -> None:
    manifest = read_manifest(path, required=True)
    manifest.report.update({"chain_key": key, "chain_inputs": inputs})
    write_manifest(path, manifest)


def artifact_paths(output: Path, precision: str, fused: bool) -> dict[str, Path]:
    stem = output.name.removesuffix(output.suffix) if output.suffix in (".engine", ".plan", ".trt") else output.name
    for suffix in (".fp32", ".fp16", ".int8"):  # -o s.int8.engine: the FP32 export is s.onnx, not s.int8.onnx
        stem = stem.removesuffix(suffix)
    calibrated = f"{stem}.{precision}" if precision != "fp32" else stem
    return {"export": output.with_name(f"{stem}.onnx"),
            "calibrate": output.with_name(f"{calibrated}.onnx") if precision != "fp32" else None,
            "fuse": output.with_name(f"{calibrated}.fused.onnx") if fused else None}


def build_chain(output: str | Path, options: BuildOptions, *, variant: str | None = None,
                checkpoint: str | Path | None = None, img_size: int | None = None,
                calib_images: str | Path | None = None, force: bool = False,
                step: Step = lambda label: contextlib.nullcontext(),
                note: Callable[[str], None] = lambda message: None) -> dict:
    """Make the engine `output` from a variant (and checkpoint) through every stage; returns what each stage did."""
    from .models.variants import DEFAULT_VARIANT
    from .precision.calibrate import calibration_cache_path

    output = Path(output)
    if output.suffix == ".onnx" or output.suffix == ".json":
        raise InputError("-o names the engine (e.g. model.engine); the ONNX stages are written beside it")
    variant = variant or DEFAULT_VARIANT
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise InputError(f"checkpoint not found: {checkpoint}")
    # every check of the build, before minutes of export and calibration
    plan = resolve(options, planned_network(variant, img_size), note=note)
    precision, fused = plan.precision, plan.plugin_form != "none"
    paths = artifact_paths(output, precision, fused)
    stage_paths = [p for p in paths.values() if p is not None]
    calib = calibration_cache_path(paths["calibrate"]) if precision == "int8" else None
    inputs_given = [checkpoint, calib_images, options.timing_cache]
    for path in (*stage_paths, output):
        check_artifact(path, inputs=inputs_given, extra=[calib] if calib and path == paths["calibrate"] else [])
    check_build_outputs(output, options)

    def check_stage_files() -> None:   # the user's own s.onnx, s.fp16.onnx ...: never replaced
        for path in stage_paths:
            check_own(path, output, also=calib if path == paths["calibrate"] else None)

    check_stage_files()
    # Every stage writes into one staging folder and everything is published together at the end (the engine's
    # manifest last), under the locks of every stage's file: an interrupted or failed chain leaves the earlier
    # generation whole, and a concurrent chain to the same -o waits instead of mixing its stages with this one's.
    # Each file is hashed once in the chain, though manifests and stage keys ask for it several times.
    with hashing_once(), staged_outputs(*stage_paths, output, extra=[calib] if calib else [],
                                        locks=[options.timing_cache], inputs=inputs_given, note=note) as staging:
        check_stage_files()   # again under the locks: another run may have written them while this one waited
        checkpoint_sha = file_sha256(checkpoint) if checkpoint is not None else None
        stages = chain_stages(output, plan, paths, variant=variant, checkpoint=checkpoint,
                              checkpoint_sha=checkpoint_sha, img_size=img_size, calib_images=calib_images, note=note)
        return _run_stages(stages, staging, force, step)


def child_export(job: dict) -> dict:
    """In a child process (engine/worker.py): export the variant to job['dest'] with its manifest. The chain's
    export runs there so that what PyTorch holds after it (the model, torch's libraries, freed heap glibc keeps:
    1.5 GB at L@448) ends with the child instead of lying under the calibration that follows. Its phases go to the
    parent as the builder's do (engine/progress.py lines on job['progress_fd'])."""
    from . import progress
    from .models.factory import create_model
    from .onnx.export import export_onnx

    fd = job["progress_fd"]
    opened: list[str] = []

    def phase(label: str, total: int):
        if fd is not None:
            with contextlib.suppress(OSError):   # the parent stopped listening: export on, silently
                ended = "".join(f"finish\t{name}\n" for name in opened)
                os.write(fd, f"{ended}start\t{' '.join(label.split())}\t\t{total}\n".encode())
            opened[:] = [" ".join(label.split())]
        return lambda n: None

    with progress.reporting(phase):
        model = create_model(job["variant"], img_size=job["img_size"], checkpoint=job["checkpoint"])
        return {"result": export_onnx(model, Path(job["dest"]))}


@dataclass
class Stage:
    """One stage of the chain: its name, the artifact it publishes, what decides whether that artifact is up to date
    (`inputs` of the previous stage's artifact, hashed into its chain_key), and the call that makes it."""

    name: str
    artifact: Path
    inputs: Callable[[Path | None], dict]             # previous artifact -> what the artifact is made from
    label: Callable[[Path | None], str]               # previous artifact -> the step's line
    make: Callable[[Path | None, Path, dict], StageResult]   # (previous, where to write, chain record) -> result
    report: dict = field(default_factory=dict)        # said about it beside the artifact
    records_itself: bool = False                      # make writes the chain record (else it is stamped after)


def chain_stages(output: Path, plan: BuildPlan, paths: dict[str, Path | None], *, variant: str, checkpoint,
                 checkpoint_sha: str | None, img_size: int | None, calib_images,
                 note: Callable[[str], None]) -> list[Stage]:
    """export -> calibrate (fp16/int8) -> fuse (a plugin form) -> build, as the plan says."""
    precision, form, target = plan.precision, plan.plugin_form, plan.target

    def export(_previous, dest: Path, _record: dict) -> StageResult:
        from .engine.progress import listener
        from .engine.worker import run_in_child
        from .extras import check_installed

        check_installed("torch", "the export (no --onnx given)")
        if checkpoint is None:
            note("no --checkpoint: the weights are random")
        job = {"variant": variant, "img_size": img_size, "checkpoint": str(checkpoint) if checkpoint else None,
               "dest": str(dest)}
        result = run_in_child("refiner_edge.pipeline:child_export", job, dest.with_name(".export.result"),
                              what="export", progress=listener())["result"]
        known_sha256(dest, result.manifest.sha256)   # hashed in the child as it wrote the manifest
        return result

    stages = [Stage("export", paths["export"],
                    inputs=lambda _previous: {"variant": variant, "checkpoint_sha256": checkpoint_sha,
                                              "img_size": img_size, "batch": "dynamic", "refiner_edge": __version__},
                    label=lambda _previous: f"export {variant} -> {paths['export'].name}", make=export)]

    if paths["calibrate"] is not None:
        from .images.samples import sample_image_dir
        from .precision.calibrate import CalibrateOptions, calibrate_onnx

        images = Path(calib_images) if calib_images is not None else sample_image_dir()
        if not images.exists():
            raise InputError(f"--calib-images: {images} does not exist")
        stages.append(Stage(
            "calibrate", paths["calibrate"],
            inputs=lambda source: {"onnx_sha256": file_sha256(source), "images_sha256": images_digest(images)
                                   if images.is_dir() else file_sha256(images), "precision": precision,
                                   "refiner_edge": __version__},
            label=lambda _source: f"calibrate {precision} on {images} -> {paths['calibrate'].name}",
            make=lambda source, dest, _record: calibrate_onnx(source, images, dest,
                                                                       CalibrateOptions(precision=precision)),
            report={"images": str(images)}))

    if paths["fuse"] is not None:
        from .refine.fuse import fuse_onnx

        stages.append(Stage(
            "fuse", paths["fuse"],
            inputs=lambda source: {"onnx_sha256": file_sha256(source), "form": form, "refiner_edge": __version__},
            label=lambda source: f"fuse {source.name} -> {paths['fuse'].name} ({form} form)",
            make=lambda source, dest, _record: fuse_onnx(source, dest, verify=True, form=form)))

    rebuild = rebuild_command(output, plan, model={"variant": variant, "checkpoint": checkpoint,
                                                    "img_size": img_size, "calib_images": calib_images})
    builder = f"{target.flavour} {plan.tensorrt_version}"
    stages.append(Stage(
        "build", output,
        inputs=lambda source: {"onnx_sha256": file_sha256(source), "command": rebuild, "builder": builder,
                               "refiner_edge": __version__},
        label=lambda source: f"build {source.name} for {target.name} ({target.flavour}) -> {output.name}",
        make=lambda source, dest, record: make_engine(plan.with_graph(source), dest, rebuild=rebuild, report=record,
                                                      note=note, published=published_beside(output, dest.parent)),
        records_itself=True))
    return stages


def published_beside(output: Path, staging: Path) -> Callable[[Path], Path]:
    """Where a file staged in `staging` lies once published: beside -o under its own name, as every stage file and
    the engine do (a file elsewhere, e.g. a stage reused where it lies, keeps its path)."""
    return lambda path: output.parent / path.name if path.parent == staging else path


def _run_stages(stages: list[Stage], staging: Staging, force: bool, step: Step) -> dict:
    """Each stage in turn: reuse its published artifact when up to date, else make it in the staging folder (where
    the next stage reads it). Returns what each stage did and the last stage's manifest (the engine's)."""
    report: dict[str, dict] = {}
    source, manifest = None, None
    for stage in stages:
        inputs = stage.inputs(source)
        record = {"chain_key": chain_key(stage=stage.name, **inputs), "chain_inputs": inputs}
        manifest = None if force else reusable(stage.artifact, record["chain_key"])
        made = stage.artifact
        if manifest is None:
            made = staging.path(stage.artifact)
            with step(stage.label(source)):
                manifest = stage.make(source, made, record).manifest
            if not stage.records_itself:
                stamp(made, record["chain_key"], inputs)
        report[stage.name] = {"artifact": str(stage.artifact), **stage.report, "reused": made == stage.artifact}
        source = made
    return {"stages": report, "manifest": manifest}
