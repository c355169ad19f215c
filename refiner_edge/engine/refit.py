"""Weight-stripped engines and refit: `refiner-edge refit ENGINE --onnx GRAPH -o FULL` fills the weights of a plan
built with `build --strip-weights` (or `--refittable`) in from an ONNX graph, with TensorRT's Refitter and its
ONNX parser's refitter (trtexec's --stripWeights/--refit, Polygraphy's --strip-plan).

Every refusal that needs no TensorRT comes first, from the manifests and the graph's initializers: the engine is not
refittable, the graph is another variant or another precision, its layer names or shapes differ from the weights
the engine was built with, or (REFIT_IDENTICAL) it is not the graph the engine was built from. The refit itself
deserializes the engine, so it needs a runtime and a GPU; it runs in a child process (engine/worker.py) so Ctrl-C
stops it.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Callable

from ..artifacts import check_artifact, file_sha256, manifest_path, staged_outputs
from ..errors import InputError, VerificationError
from ..manifest import Manifest, read_manifest, write_manifest
from ..result import StageResult


def onnx_weights(onnx: str | Path) -> dict:
    """The weights a graph gives a build: its initializers' count, bytes (in the graph, and as a plan holds them:
    int8 for those a QuantizeLinear reads), and a digest of their names, types and shapes (not values), the layout
    two checkpoints of one variant share. Read without loading external data."""
    import onnx as onnx_lib

    model = onnx_lib.load(str(onnx), load_external_data=False)
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    lines, total, in_plan = [], 0, 0
    for init in model.graph.initializer:
        count = 1
        for d in init.dims:
            count *= d
        size = count * onnx_lib.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        total += size
        in_plan += count if init.name in quantized else size   # an INT8 plan holds a quantized weight as int8
        lines.append(f"{init.name}:{init.data_type}:{'x'.join(map(str, init.dims))}")
    digest = hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()
    return {"initializers": len(lines), "bytes": total, "plan_bytes": in_plan, "layout_sha256": digest}


def check_refit(engine: Path, manifest: Manifest, onnx: Path) -> tuple[Manifest, str]:
    """The refusals of a refit of `engine` from `onnx`, before TensorRT; returns the graph's manifest and SHA-256."""
    info, name = manifest.engine, engine.name
    if info.refit is None:
        raise InputError(f"{name} is not refittable: build it with --strip-weights (or --refittable)")
    if not onnx.is_file():
        raise InputError(f"ONNX model not found: {onnx}")
    graph = read_manifest(onnx, verify=False)
    if graph is None:
        raise InputError(f"{onnx.name} has no manifest ({manifest_path(onnx).name}): refit takes a graph made by "
                         "refiner-edge export/calibrate/fuse")
    if graph.stage == "build":
        raise InputError(f"{onnx} is an engine, not an ONNX graph: refit takes the graph the weights come from")
    ours, theirs = manifest.model, graph.model
    if (ours.variant, ours.img_size, ours.num_classes) != (theirs.variant, theirs.img_size, theirs.num_classes):
        raise InputError(f"{onnx.name} is {theirs.variant} at {theirs.img_size} with {theirs.num_classes} classes "
                         f"and {name} is {ours.variant} at {ours.img_size} with {ours.num_classes}: refit takes a "
                         "graph of the same variant, size and head (another checkpoint of it)")
    if graph.graph.fused != manifest.graph.fused:
        raise InputError(f"{onnx.name} is {'' if graph.graph.fused else 'not '}fused and {name} was built from "
                         f"a{'' if manifest.graph.fused else 'n un'}fused graph: refit from the same kind of graph")
    sha = file_sha256(onnx)
    if graph.sha256 and sha != graph.sha256:
        raise InputError(f"{manifest_path(onnx).name} does not describe {onnx.name} (SHA-256 differs): the file "
                         "changed after its manifest was written; make it again")
    if info.refit == "identical" and info.weights_sha256 and sha != info.weights_sha256:
        source = info.weights_onnx or "the graph it was built from"
        raise InputError(f"{name} was built with REFIT_IDENTICAL and takes only the weights of {source} (SHA-256 "
                         f"{info.weights_sha256[:12]}...), which {onnx.name} is not: give that graph, or build with "
                         "--strip-weights --refittable to refit other weights")
    recorded = (manifest.report.get("weights") or {}).get("layout_sha256")
    if recorded and onnx_weights(onnx)["layout_sha256"] != recorded:
        raise InputError(f"{onnx.name}'s weights do not match {name}'s (layer names or shapes differ): refit "
                         "takes a graph of the same variant made the same way (export, calibrate, fuse options)")
    return graph, sha


def refit_engine(engine: str | Path, onnx: str | Path, output: str | Path, *,
                 note: Callable[[str], None] = lambda message: None) -> StageResult:
    """Fill the weights of the refittable `engine` in from `onnx` and write the full engine `output` and its
    manifest (weights: included, weights_onnx/weights_sha256: `onnx`). Nothing is written unless it succeeds."""
    from .checks import check_engine, read_engine_manifest
    from .worker import run_in_child

    engine, onnx, output = Path(engine), Path(onnx), Path(output)
    manifest = read_engine_manifest(engine)
    check_artifact(output, inputs=[engine, onnx])
    _, sha = check_refit(engine, manifest, onnx)
    runtime = this_runtime(manifest.engine.flavour)
    check_engine(engine, manifest, runtime, stripped=True)
    with staged_outputs(output, inputs=[engine, onnx], note=note) as staging:
        staged = staging.path(output)
        done = run_in_child("refiner_edge.engine.refit:child_refit",
                            {"engine": str(engine), "onnx": str(onnx), "output": str(staged),
                             "flavour": manifest.engine.flavour, "library": library_of(engine, manifest),
                             "version_compatible": manifest.engine.version_compatible},
                            staging.folder / ".result", what=f"{manifest.engine.flavour} refitter")
        if not staged.is_file() or staged.stat().st_size == 0:
            raise VerificationError(f"{manifest.engine.flavour} returned no engine for the refit of {engine.name}")
        info = dataclasses.replace(manifest.engine, weights="included", weights_onnx=str(onnx.absolute()),
                                   weights_sha256=sha)
        record = manifest.derive("build", output, engine, engine=info,
                                 report={**manifest.report, "refit": {"from": str(onnx.absolute()),
                                                                      "seconds": round(done["seconds"], 2)}})
        write_manifest(staged, record)
    return StageResult(output, record, None, record.report)


def this_runtime(flavour: str):
    """This machine as engine/checks.py sees it: `flavour`'s TensorRT version and the local GPU (the runner's
    `local_runtime`, which the engine layer cannot import)."""
    from .checks import Runtime
    from .targets import detect_gpu, import_tensorrt

    trt, gpu = import_tensorrt(flavour), detect_gpu()
    return Runtime(flavour, trt.__version__, gpu.compute_capability if gpu else None,
                   gpu.name if gpu else "this machine")


def library_of(engine: Path, manifest: Manifest) -> str | None:
    from .checks import check_plugin_library

    library = check_plugin_library(engine, manifest)
    return str(library) if library else None


def child_refit(job: dict) -> dict:
    """In the child process: deserialize the engine, refit every weight from the graph with the ONNX parser's
    refitter, and serialize it with its weights (SerializationFlag.EXCLUDE_WEIGHTS cleared)."""
    import time

    from .backend import deserialize_engine

    started = time.perf_counter()
    trt, logger, engine = deserialize_engine(job)
    refitter = trt.Refitter(engine, logger)
    parser = trt.OnnxParserRefitter(refitter, logger)
    if not parser.refit_from_file(job["onnx"]):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"{Path(job['onnx']).name} does not refit {Path(job['engine']).name}: {errors}")
    missing = refitter.get_missing_weights()
    if missing:
        raise InputError(f"{Path(job['onnx']).name} lacks weights {Path(job['engine']).name} needs: "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if not refitter.refit_cuda_engine():
        raise InputError(f"{job['flavour']} refused the refit of {Path(job['engine']).name} (see the log above)")
    config = engine.create_serialization_config()
    config.clear_flag(trt.SerializationFlag.EXCLUDE_WEIGHTS)   # a stripped plan serializes without them otherwise
    data = engine.serialize_with_config(config)
    Path(job["output"]).write_bytes(bytes(memoryview(data)))
    return {"seconds": time.perf_counter() - started}
