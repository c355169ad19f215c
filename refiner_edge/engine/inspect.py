"""`refiner-edge inspect ENGINE`: what trtexec's --dumpLayerInfo and Polygraphy's `inspect model` tell about an
engine, from its manifest without TensorRT (I/O, profiles, precision, plugin form, the size of each part, an
estimate of the device memory it needs), and the engine inspector's layer list where this machine's TensorRT can
deserialize it (the right TensorRT and a GPU it runs on); otherwise the reason it was skipped.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..artifacts import file_sha256, manifest_path
from ..defaults import INSPECT_LAYERS, default
from ..errors import InputError, RefinerEdgeError
from ..manifest import profile_for
from .checks import plugin_library_path, read_engine_manifest
from .targets import attention_bytes


def inspect_engine(engine: str | Path, layers: bool | None = None) -> dict:
    """The engine's facts (docs/engines.md, "Inspecting an engine"); `layers`: ask TensorRT for the layer list
    (None: defaults.INSPECT_LAYERS)."""
    layers = default(layers, INSPECT_LAYERS)
    engine = Path(engine)
    manifest = read_engine_manifest(engine)
    if manifest.sha256 and file_sha256(engine) != manifest.sha256:
        raise InputError(f"{engine.name} is not the engine its manifest describes (SHA-256 differs)")
    info, model, graph = manifest.engine, manifest.model, manifest.graph
    profiles = [{"input": p.input, "min": p.min, "opt": p.opt, "max": p.max,
                 "batches": profile_batches(info.profiles, i)} for i, p in enumerate(info.profiles)]
    hi = max(p.max[0] for p in info.profiles)
    weights = manifest.report.get("weights") or {}
    plan_bytes = engine.stat().st_size
    parts = {"plan": plan_bytes, "manifest": manifest_path(engine).stat().st_size}
    if info.plugin_form == "library" and info.plugin_library:
        library = plugin_library_path(engine, info.plugin_library)
        parts["plugin_library"] = library.stat().st_size if library.is_file() else None
    if weights.get("bytes") is not None:
        # the graph's initializers: what refit fills in (a stripped plan lacks them, a full one holds them as built)
        parts["weights_onnx"] = weights["bytes"]
    activations = hi * attention_bytes(model.heads, model.img_size, info.precision, model.variant)
    held = plan_bytes + (weights.get("bytes", 0) if info.weights == "stripped" else 0)
    facts = {
        "engine": str(engine), "flavour": info.flavour, "tensorrt_version": info.tensorrt_version,
        "target": info.target, "compute_capability": info.compute_capability, "device": info.device,
        "variant": model.variant, "img_size": model.img_size,
        "inputs": [{"name": graph.input, "shape": ["batch", 3, model.img_size, model.img_size], "dtype": "float32"}],
        "outputs": [{"name": graph.output, "shape": ["batch", model.num_classes], "dtype": "float32"}],
        "profiles": profiles, "precision": info.precision, "typing": info.typing, "tf32": info.tf32,
        "plugin_form": info.plugin_form, "plugin_library": info.plugin_library,
        "hardware_compatibility": info.hardware_compatibility, "version_compatible": info.version_compatible,
        "weights": info.weights, "refit": info.refit, "weights_onnx": info.weights_onnx,
        "bytes": parts,
        # an estimate from the manifest: the plan (weights and kernels) and the attention maps at the largest batch
        "device_memory_estimate": {"bytes": held + activations, "plan": held, "activations_at_max_batch": activations,
                                   "max_batch": hi},
        "build_seconds": info.build_seconds, "rebuild": info.rebuild,
    }
    facts["layers"], facts["layers_skipped"] = (engine_layers(engine, manifest) if layers else
                                                (None, "not asked (--no-layers)"))
    return facts


def profile_batches(profiles: list, index: int) -> list[int] | None:
    """[first, last]: the batches the runners take to profile `index` (manifest.profile_for); build's order makes
    them one run of batches, from just above the previous profile's MAX to this one's."""
    p = profiles[index]
    held = [b for b in range(p.min[0], p.max[0] + 1) if profile_for(profiles, b) == index]
    return [held[0], held[-1]] if held else None   # None: a manifest not in build's order, where none reach it


def engine_layers(engine: Path, manifest) -> tuple[dict | None, str | None]:
    """(the engine inspector's layer list and device memory size, None), or (None, why it was skipped)."""
    from .checks import check_engine
    from .refit import this_runtime
    from .worker import run_in_child

    info = manifest.engine
    if info.weights == "stripped":
        return None, "a weight-stripped engine: refit it first"
    try:
        runtime = this_runtime(info.flavour)
        check_engine(engine, manifest, runtime, hash_file=False)
        from .checks import check_plugin_library

        library = check_plugin_library(engine, manifest)
    except RefinerEdgeError as e:   # no TensorRT, no GPU, another GPU or version: the manifest's facts still hold
        return None, str(e)
    with tempfile.TemporaryDirectory(prefix=".refiner-edge-inspect-") as scratch:
        found = run_in_child("refiner_edge.engine.inspect:child_layers",
                             {"engine": str(engine), "flavour": info.flavour,
                              "library": str(library) if library else None,
                              "version_compatible": info.version_compatible},
                             Path(scratch) / ".result", what=f"{info.flavour} engine inspector")
    return found, None


def child_layers(job: dict) -> dict:
    """In a child process: deserialize the engine and ask its inspector for every layer (JSON), and the device
    memory its execution context needs."""
    import json

    from .backend import deserialize_engine

    trt, _logger, engine = deserialize_engine(job)
    inspector = engine.create_engine_inspector()
    data = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    # device_memory_size_v2 from TensorRT 10.1 (TensorRT-RTX has only it)
    memory = engine.device_memory_size_v2 if hasattr(engine, "device_memory_size_v2") else engine.device_memory_size
    return {"layers": data.get("Layers", []), "device_memory_bytes": int(memory)}


def print_facts(facts: dict, echo) -> None:
    """`inspect` without --json: one fact a line."""
    def size(n):
        return "-" if n is None else f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"

    echo(f"engine        {facts['engine']}")
    echo(f"built by      {facts['flavour']} {facts['tensorrt_version']} for {facts['target']} "
         f"(sm_{facts['compute_capability'].replace('.', '')}, {facts['device']})")
    echo(f"model         {facts['variant']} at {facts['img_size']}")
    for io in facts["inputs"]:
        echo(f"input         {io['name']} {io['dtype']} {'x'.join(map(str, io['shape']))}")
    for io in facts["outputs"]:
        echo(f"output        {io['name']} {io['dtype']} {'x'.join(map(str, io['shape']))}")
    for i, p in enumerate(facts["profiles"]):
        runs = (" (runs no batch)" if p["batches"] is None else f" (runs batches {p['batches'][0]}.."
                f"{p['batches'][1]})") if len(facts["profiles"]) > 1 else ""
        echo(f"profile {i}     {p['input']} min {p['min'][0]} opt {p['opt'][0]} max {p['max'][0]}{runs}")
    echo(f"precision     {facts['precision']} ({facts['typing']}ly typed, tf32 {facts['tf32']})")
    echo(f"plugin        {facts['plugin_form']}" + (f" ({facts['plugin_library']})" if facts['plugin_library'] else ""))
    refit = f", refit {facts['refit']}" if facts["refit"] else ""
    echo(f"weights       {facts['weights']}{refit}" + (f" (from {facts['weights_onnx']})" if facts["weights_onnx"]
                                                      else ""))
    echo("sizes         " + ", ".join(f"{k} {size(v)}" for k, v in facts["bytes"].items()))
    mem = facts["device_memory_estimate"]
    echo(f"device memory about {size(mem['bytes'])} (estimate: plan {size(mem['plan'])} + attention maps at batch "
         f"{mem['max_batch']} {size(mem['activations_at_max_batch'])})")
    if facts["layers"] is None:
        echo(f"layers        skipped: {facts['layers_skipped']}")
    else:
        layers = facts["layers"]["layers"]
        echo(f"device memory {size(facts['layers']['device_memory_bytes'])} (TensorRT, for an execution context)")
        echo(f"layers        {len(layers)}")
        for layer in layers:
            echo(f"  {layer if isinstance(layer, str) else layer.get('Name', layer)}")
