#!/usr/bin/env bash
# `bench --engine E --layers` on a GPU (benchmarks/gpu_check.sh runs it; docs/engines.md, "Per-layer times"):
# Refiner-ViT-S@224 built for this GPU (export, fuse, build with the target's plugin form; random weights), then its
# layers timed by TensorRT's profiler. Checks: one RefinerDLA layer per refining block (8), their share reported
# and between 0 and 100%, the shares summing to 100%, the layers' sum within a profiled call's host wall time (at
# most it, and at least half of it: the rest is the copies, the launch and the profiler's synchronization), and
# the engine inspector's layers in detail (the build sets ProfilingVerbosity.DETAILED).
#   bash benchmarks/bench_layers.sh OUT_DIR      # from the checkout; needs tensorrt, cuda-python and a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-out/gpu/layers}"
PY="${PYTHON:-python3}"
mkdir -p "$WORK"
cli() { "$PY" cli.py "$@"; }

cli build --variant refiner-vit-s --precision fp32 --target auto -o "$WORK/s224.engine" --json > "$WORK/build.json"
cli bench --engine "$WORK/s224.engine" --batch 8 --iterations 20 --warmup 3 --layers --json > "$WORK/bench.json"
cli bench --engine "$WORK/s224.engine" --batch 8 --iterations 20 --warmup 3 --layers   # the table, for the log
cli inspect "$WORK/s224.engine" --json > "$WORK/inspect.json"

"$PY" - "$WORK/bench.json" "$WORK/inspect.json" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
profile, latency = report["layers"], report["latency_ms"]
ref = profile["refinement"]
print(f"{profile['layer_count']} layers over {profile['calls']} profiled calls: sum {profile['total_ms']['mean']:.3f} ms "
      f"of a {profile['call_ms']['mean']:.3f} ms profiled call (coverage {profile['coverage']:.2f}); unprofiled "
      f"latency p50 {latency['p50']:.3f} ms")
print(f"RefinerDLA: {ref['layers']} layers, {ref['mean_ms']:.3f} ms = {ref['percent']:.1f}% of all layers; format "
      f"copies around it {ref['reformat']['mean_ms']:.3f} ms ({ref['reformat']['percent']:.1f}%)")
assert ref["layers"] == ref["graph_nodes"] == 8 and "warning" not in ref, ref
assert 0 < ref["percent"] < 100, ref
assert abs(sum(layer["percent"] for layer in profile["layers"]) - 100) < 1e-6
assert 0.5 <= profile["coverage"] <= 1.0, f"the layers' sum is {profile['coverage']:.2f} of a profiled call"
layers = (json.load(open(sys.argv[2]))["layers"] or {}).get("layers") or []
assert layers and all(isinstance(layer, dict) and "LayerType" in layer for layer in layers), \
    f"the inspector's layers are not detailed: {layers[:2]}"
print(f"inspect: {len(layers)} layers with detailed information")
PY
