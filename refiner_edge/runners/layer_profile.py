"""Per-layer times of a TensorRT engine (`bench --engine E --layers`): what trtexec's `--dumpProfile
--separateProfileRun` and Polygraphy's `run --trt` profiling give, with the RefinerDLA plugin's share of the total.

TensorRT's IProfiler on the runner's execution context reports (layer name, ms) for every layer of every call. A
profiled call synchronizes after each layer, so it runs slower than a plain one: the latency figures come from
bench's own run, and the layer times from a separate run after it (warm-up calls first, not counted), as trtexec's
--separateProfileRun does. While the profiler is set the runner enqueues plainly, never replaying a CUDA graph,
whose launch reports no layer times.

`aggregate` (a pure function of the records) is the figures: per layer the mean, median, min and max over the calls
and its share of the total; the refinement op's share is the sum over the plugin layers. A plugin layer carries the
name `fuse` gave its ONNX node (refine/surgery.py: `<block>/RefinerDLA`), which TensorRT's ONNX parser gives the
layer and TensorRT never fuses into another; the copies TensorRT adds to convert formats at a plugin's input or
output ("Reformatting CopyNode for Input Tensor 0 to <plugin layer>") are counted beside it, not in it.
"""
from __future__ import annotations

import re
import statistics
import time
from typing import Callable, Sequence

import numpy as np

from .. import defaults
from ..defaults import BENCH_MAX_PROFILED_CALLS, default
from ..errors import InputError, VerificationError
from ..refine import PLUGIN_NAME
from .base import Runner

# one node's name: a layer TensorRT made of several nodes is named "a + b", a format copy "Reformatting ... to a"
PLUGIN_LAYER = re.compile(rf"^(?:\S*/)?{PLUGIN_NAME}$")
REFORMAT_LAYER = re.compile(r"^Reformatting CopyNode for (?:Input|Output) Tensor \d+ to (.+)$")


def layer_kind(name: str) -> str | None:
    """"refinement" for a RefinerDLA plugin layer, "refinement_reformat" for a format copy TensorRT put at one's
    input or output, None for any other layer."""
    if PLUGIN_LAYER.match(name):
        return "refinement"
    found = REFORMAT_LAYER.match(name)
    if found and PLUGIN_LAYER.match(found.group(1)):
        return "refinement_reformat"
    return None


def _summary(values: Sequence[float]) -> dict:
    return {"mean": float(np.mean(values)), "median": float(statistics.median(values)),
            "min": float(min(values)), "max": float(max(values))}


def aggregate(runs: Sequence[Sequence[tuple[str, float]]], plugin_nodes: int | None = None) -> dict:
    """The figures of profiled calls: `runs` holds, per call, the (layer name, ms) records TensorRT reported in
    execution order. A name reported twice in one call (it does not happen in a Refiner engine) is summed.
    `plugin_nodes`: the RefinerDLA nodes the engine's graph holds (its manifest), checked against the plugin layers
    found. Layers are listed in execution order; `percent` is a layer's mean over the sum of all layers' means."""
    if not runs:
        raise VerificationError("no profiled calls to aggregate")
    order: dict[str, int] = {}
    per_call: list[dict[str, float]] = []
    for i, records in enumerate(runs):
        if not records:
            raise VerificationError(f"TensorRT reported no layer times for profiled call {i + 1} of {len(runs)}")
        times: dict[str, float] = {}
        for name, ms in records:
            order.setdefault(name, len(order))
            times[name] = times.get(name, 0.0) + float(ms)
        per_call.append(times)
    layers = []
    for name in order:
        stats = _summary([t.get(name, 0.0) for t in per_call])
        layers.append({"name": name, "kind": layer_kind(name), **{f"{k}_ms": v for k, v in stats.items()}})
    total = sum(layer["mean_ms"] for layer in layers)
    for layer in layers:
        layer["percent"] = 100.0 * layer["mean_ms"] / total if total > 0 else 0.0

    def share(kind: str) -> dict:
        chosen = [layer for layer in layers if layer["kind"] == kind]
        ms = sum(layer["mean_ms"] for layer in chosen)
        return {"layers": len(chosen), "mean_ms": ms, "percent": 100.0 * ms / total if total > 0 else 0.0}

    refinement = share("refinement")
    refinement["reformat"] = share("refinement_reformat")
    refinement["graph_nodes"] = plugin_nodes
    if plugin_nodes is not None and refinement["layers"] != plugin_nodes:
        refinement["warning"] = (f"{refinement['layers']} RefinerDLA layers reported, and the engine's graph holds "
                                 f"{plugin_nodes} RefinerDLA nodes")
    return {"calls": len(runs), "layer_count": len(layers),
            "total_ms": _summary([sum(t.values()) for t in per_call]),
            "refinement": refinement, "layers": layers}


def profile_layers(runner: Runner, batch: int | None = None, iterations: int | None = None,
                   warmup: int | None = None, seed: int = 0,
                   on_iteration: Callable[[int], None] = lambda n: None) -> dict:
    """Profile `runner` (a TensorRT engine's) on the input bench times: `warmup` profiled calls not counted, then
    `iterations` whose layer times are aggregated (each at most BENCH_MAX_PROFILED_CALLS). Also the host's wall
    time of each profiled call (copies in and out included), which the layers' sum stays below."""
    if runner.set_profiler is None:
        raise InputError("--layers times a TensorRT engine's layers: give --engine MODEL.engine")
    batch, iterations = default(batch, defaults.BENCH_BATCH), default(iterations, defaults.BENCH_ITERATIONS)
    warmup = default(warmup, defaults.BENCH_WARMUP)
    if batch < 1 or iterations < 1 or warmup < 0:
        raise InputError(f"--batch and --iterations must be >= 1 and --warmup >= 0 (got {batch}, {iterations}, "
                         f"{warmup})")
    iterations, warmup = min(iterations, BENCH_MAX_PROFILED_CALLS), min(warmup, BENCH_MAX_PROFILED_CALLS)
    size = runner.preprocess.img_size
    # the same seeded input runners/bench.py times
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size), dtype=np.float32)
    records: list[tuple[str, float]] = []
    runs: list[list[tuple[str, float]]] = []
    wall = np.empty(iterations)
    names: dict[str, str] = {}   # one string per layer name: TensorRT passes a new one at every call
    runner.set_profiler(lambda name, ms: records.append((names.setdefault(name, name), ms)))
    try:
        for _ in range(warmup):
            runner.run(x)
        records.clear()
        for i in range(iterations):
            t = time.perf_counter()
            runner.run(x)
            wall[i] = time.perf_counter() - t
            runs.append(records[:])
            records.clear()
            on_iteration(1)
    finally:
        runner.set_profiler(None)
    manifest = runner.manifest
    plugin = getattr(getattr(manifest, "graph", None), "plugin", None)
    result = aggregate(runs, plugin_nodes=plugin.nodes if plugin is not None else 0 if manifest else None)
    call = _summary(list(wall * 1e3))
    result["call_ms"] = call
    # the layers' share of a profiled call's wall time (the rest: the copies, the launch and the profiler's own
    # synchronization); above 1 would mean the records are wrong
    result["coverage"] = result["total_ms"]["mean"] / call["mean"] if call["mean"] > 0 else None
    result.update(iterations=iterations, warmup=warmup, batch=batch)
    return result
