"""The one engine builder: a graph and its BuildPlan (engine/plan.py) -> a raw TensorRT engine and its manifest.

`build_engine` checks the outputs, reads the graph, resolves the plan once and builds; the chain resolves its plan
before exporting and calls `make_engine` on the graph it made. The builder itself runs in a child process
(engine/worker.py, engine/backend.py's `child_build`), so Ctrl-C stops a compile.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Callable

from ..artifacts import (MANIFEST_SUFFIX, Staging, atomic_output, check_artifact, check_outputs, manifest_path,
                         staged_outputs)
from ..errors import InputError, VerificationError
from ..manifest import EngineInfo, Manifest, Profile, write_manifest
from ..result import StageResult
from . import plugins
from .plan import BuildOptions, BuildPlan, read_network, rebuild_command, resolve, trtexec_command


def check_build_outputs(output: Path, options: BuildOptions, onnx: str | Path | None = None) -> None:
    """The engine, its manifest and the timing cache, refused before any work (artifacts.check_outputs)."""
    if output.suffix == MANIFEST_SUFFIX:
        raise InputError("-o names the engine; its manifest is written beside it as <engine>.json")
    check_artifact(output, inputs=[onnx, options.timing_cache])
    check_outputs(options.timing_cache, inputs=[onnx, output, manifest_path(output)], option="--timing-cache")


def engine_report(output: Path, manifest: Manifest, stages: dict) -> dict:
    """What `build --json` prints: the engine file, its manifest's engine record as it is, and what each stage did."""
    return {"engine": str(output), "manifest": str(manifest_path(output)), "bytes": output.stat().st_size,
            **dataclasses.asdict(manifest.engine), "trtexec": manifest.report.get("trtexec"), "stages": stages}


def build_engine(onnx: str | Path, output: str | Path, options: BuildOptions, *, rebuild: str | None = None,
                 report: dict | None = None, note: Callable[[str], None] = lambda message: None) -> StageResult:
    """Build `onnx` into the raw engine `output` and write its manifest `<output>.json` beside it; the result's
    manifest holds the engine's record.

    The engine file is TensorRT's serialized plan and nothing else, so trtexec, Triton and DeepStream load it as it
    is. Nothing is written unless the build succeeds; an earlier engine at `output` stays until then.
    """
    output = Path(output)
    check_build_outputs(output, options, onnx)
    plan = resolve(options, read_network(onnx), note=note)
    return make_engine(plan, output, rebuild=rebuild, report=report, note=note)


def make_engine(plan: BuildPlan, output: Path, *, rebuild: str | None = None, report: dict | None = None,
                note: Callable[[str], None] = lambda message: None,
                published: Callable[[Path], Path] = lambda path: path) -> StageResult:
    """Build the plan's graph into `output` (outputs already checked) and write its manifest beside it.
    `published` maps a staged file to where it lies once published (the chain's stage files), for the trtexec line."""
    network, options = plan.network, plan.options
    report = dict(report or {})
    if plan.profile_note:
        report["batch_profile"] = plan.profile_note
        note(plan.profile_note)
    if plan.refit:
        from .refit import onnx_weights

        # refit refuses a graph whose layer names or shapes differ from these; inspect shows the bytes
        report["weights"] = onnx_weights(network.parse)
    with staged_outputs(output, locks=[options.timing_cache], inputs=[network.onnx, network.parse],
                        note=note) as staging:
        built = build_isolated(plan, staging.path(output), staging, note)
        plugin: plugins.Plugin = built["plugin"]
        info = engine_info(plan, plugin, built, rebuild or rebuild_command(output, plan), published)
        graph = dataclasses.replace(network.manifest.graph, precision=plan.precision)
        record = network.manifest.derive("build", output, network.onnx, graph=graph, engine=info,
                                         report={**report, "engine_bytes": built["bytes"],
                                                 "trtexec": trtexec_command(plan, output, plugin.library, published),
                                                 **({"aot_ptx": plugin.setup} if plugin.setup else {})})
        write_manifest(staging.path(output), record)
    return StageResult(output, record, None, record.report)


def engine_info(plan: BuildPlan, plugin: plugins.Plugin, built: dict, rebuild: str,
                published: Callable[[Path], Path] = lambda path: path) -> EngineInfo:
    """The engine's manifest record: the plan, and what the child's build reported."""
    target, options, network = plan.target, plan.options, plan.network
    return EngineInfo(
        flavour=target.flavour, tensorrt_version=plan.tensorrt_version, target=target.name,
        compute_capability=target.compute_capability, device=target.devices, precision=plan.precision,
        typing=plan.typing, profiles=[Profile(network.input, *(list(plan.shape(n)) for n in batch))
                                      for batch in plan.profiles],
        plugin_form=plugin.form, plugin_library=str(plugin.library) if plugin.library else None,
        plugin_sha256=plugin.sha256, dla_core=options.dla_core, workspace=plan.workspace,
        builder_optimization_level=plan.opt_level, hardware_compatibility=target.hardware_compat,
        version_compatible=options.version_compatible,
        timing_cache=str(options.timing_cache) if options.timing_cache else None,
        build_seconds=round(built["seconds"], 2), rebuild=rebuild, tf32=plan.tf32,
        user_allocation=plan.user_allocation, plugin_tensorrt_version=built.get("plugin_tensorrt_version"),
        **weights_record(plan, published))


def weights_record(plan: BuildPlan, published: Callable[[Path], Path]) -> dict:
    """EngineInfo's weights fields: stripped or included, how it refits, and the graph its weights come from (the
    graph parsed; its SHA-256 as the graph's manifest, checked when read, records it)."""
    network = plan.network
    if plan.refit is None:
        return {}
    parsed = Path(network.parse)
    sha = network.manifest.sha256 if parsed == Path(network.onnx) else network.manifest.source.sha256
    return {"weights": "stripped" if plan.options.strip_weights else "included", "refit": plan.refit,
            "weights_onnx": str(published(parsed).absolute()), "weights_sha256": sha}


def build_isolated(plan: BuildPlan, engine: Path, staging: Staging, note: Callable[[str], None]) -> dict:
    """Build in a child process (engine/worker.py: so Ctrl-C stops the compile) into the staging folder, and
    publish the updated timing cache; the builder's phases reach engine/progress.py's listener, if any. Returns the
    child's {"seconds", "bytes", "plugin", ...}."""
    from . import progress
    from .worker import run_in_child

    given = plan.options.timing_cache
    cache = staging.folder / ".timing-cache"
    if given is not None and Path(given).is_file():
        # the builder reads and writes a private copy: Polygraphy locks a cache with a `.lock` file it leaves behind
        shutil.copyfile(given, cache)
    flavour = plan.target.flavour
    built = run_in_child("refiner_edge.engine.backend:child_build",
                         {"plan": plan, "engine": str(engine), "timing_cache": str(cache) if given else None},
                         staging.folder / ".result", what=f"{flavour} builder", progress=progress.listener())
    for line in built.get("notes", []):
        note(line)
    with open(engine, "rb") as f:
        head = f.read(1)
    if not head or head in (b"{", b"["):
        raise VerificationError(f"{flavour} returned no engine for {plan.network.onnx.name}")
    if given is not None and cache.is_file():
        with atomic_output(given) as tmp:
            shutil.copyfile(cache, tmp)
    return built
