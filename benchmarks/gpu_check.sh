#!/usr/bin/env bash
# Everything about RefinerDLA that needs a GPU, in one run (docs/kernel.md): the kernels' resource use for this GPU,
# the CUDA C++ extension build, the GPU tests (Triton and CUDA kernels against a float64 reference, GPU
# detection, and the TensorRT engine runner and C++ classifier where tensorrt is importable), the CUDA-graph
# capture after a failed enqueue, an engine with two optimisation profiles through both runners, a library-form
# engine served by tritonserver with the plugins= backend option
# (where tensorrt and a tritonserver with its TensorRT backend exist; skipped with the reason otherwise),
# compute-sanitizer memcheck and racecheck, and the benchmarks. Each step's log and status go to $OUT (default
# out/gpu); a step that fails or times out is recorded and the next one still runs. A short table is printed last.
#   bash benchmarks/gpu_check.sh            # from the checkout; needs python3 with torch (CUDA), triton, cupy
# GPU_CHECK_BUDGET_S (default 460) caps the whole run: each step gets at most what is left of it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
PY="${PYTHON:-python3}"
BUDGET="${GPU_CHECK_BUDGET_S:-460}"
START=$SECONDS
: > "$OUT/steps.tsv"
failed=0

# step NAME LIMIT_S COMMAND...: run with a timeout, log to $OUT/NAME.log, record name/status/seconds
step() {
  local name=$1 limit=$2 left t0 rc status
  shift 2
  left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt 20 ]; then
    printf '%s\tskipped (budget spent)\t0\n' "$name" >> "$OUT/steps.tsv"; failed=1; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s)"
  t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="TIMEOUT after ${limit}s"; failed=1 ;;
    *) status="FAILED (exit $rc)"; failed=1 ;;
  esac
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >> "$OUT/steps.tsv"
  tail -n 6 "$OUT/$name.log"
}

# skip NAME REASON: a step this machine cannot run, recorded with its reason (not a failure)
skip() {
  printf '%s\tskipped (%s)\t0\n' "$1" "$2" >> "$OUT/steps.tsv"
  echo "== $1 skipped: $2"
}

step gpu_info 60 bash -c "nvidia-smi --query-gpu=name,compute_cap,memory.total,clocks.sm,clocks.max.sm,driver_version \
  --format=csv && $PY -c 'import sys, torch, triton; print(sys.version.split()[0], torch.__version__, torch.version.cuda, \
  triton.__version__, torch.cuda.get_device_name())'"

cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
cap=${cap:-90}
step resources 120 bash -c "nvcc -std=c++17 -O3 -c plugins/refiner_dla/refinerDLAKernel.cu -o \"$OUT/refinerDLAKernel.o\" \
  -gencode=arch=compute_$cap,code=sm_$cap -Xptxas -v 2>&1 | grep -E 'registers|spill' | sort | uniq -c; \
  $PY -c 'from refiner_edge.refine import triton_kernel as t
for h in (12, 16, 32):
    for d in (\"fp16\", \"fp32\"):
        print(\"triton\", h, d, t.resource_usage(t.compile_for(h, 3 * h, d, $cap)))'"

# torch's own CUDA_HOME detection and C++20 (tests/cuda_extension.py); MAX_JOBS lets ninja use every core
step build_extension 200 env MAX_JOBS="$(nproc)" "$PY" -c "
from tests.cuda_extension import cuda_extension
assert cuda_extension() is not None, 'the RefinerDLA CUDA extension did not build (see the warning above)'
print('extension built')"

# every GPU test: the kernels against float64, GPU detection and pycuda from a worker thread, and where tensorrt is
# importable the engine runner (shape changes between CUDA-graph replays, the batch refusal, two runners in one
# process) and the C++ classifier; without tensorrt those skip and -rs prints why
step pytest_gpu 240 "$PY" -m pytest -q -m "gpu or tensorrt" -p no:cacheprovider -rs tests/
step pytest_cpp_engine 120 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cpp.py -k engine_runs_through

# the runner's CUDA-graph path after an enqueue that fails inside the capture (real cuda-python: the stream leaves
# capture mode and the next capture replays; with tensorrt, a real engine whose first capture's enqueue fails),
# and the warm-up and failure-injection tests beside it
step cuda_graph_failed_enqueue 120 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_engine_first_day.py \
  -k "capture or warm_up or failed_enqueue"

# several optimisation profiles in one engine (docs/engines.md): a two-profile engine (--batch 1 --batch 1:4:8) built
# by TensorRT on this GPU, batches 1 and 8 and back through the Python runner (plain and CUDA graphs) against ONNX
# Runtime's logits, and through the C++ classifier (1 image; 9: a batch of 8, then 1) against `infer --onnx`; about
# a minute (the tiny graph, one build, the C++ app); skipped with the reason without tensorrt
step profiles 150 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_profiles.py -k run_through_both_runners

# without PyTorch's caching allocator every tensor is its own allocation, so small out-of-bounds accesses show
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    step "sanitizer_$tool" 90 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" \
      --error-exitcode 9 "$PY" benchmarks/sanitize_refine.py
  done
else
  printf 'sanitizer\tFAILED (compute-sanitizer not found)\t0\n' >> "$OUT/steps.tsv"; failed=1
fi

# the TensorRT plugin library's own enqueue path (tests/plugin_harness/gpu_sanitize.sh: built for this GPU against
# TensorRT's headers, checked against float64, a CUDA graph of the first enqueue), plain then memcheck and racecheck
if command -v compute-sanitizer > /dev/null; then
  step plugin_sanitizer 150 bash tests/plugin_harness/gpu_sanitize.sh "$OUT/plugin" "$cap"
fi

# weight-stripped engines and refit (docs/engines.md): TensorRT-RTX compiles refittable weights with CUDA, so here
# and not on a CPU: stripped plans (tiny, and S@224 INT8 after its export and calibration) smaller than the full
# ones by at least their weights, refit from the build's graph and (--refittable) from another checkpoint predicting
# what the full engines predict, and inspect's layer list from TensorRT; skipped with the reason without tensorrt-rtx
step strip_refit 300 "$PY" -m pytest -q -s -p no:cacheprovider -rs tests/test_strip_refit.py \
  -k "smaller_by_its_weights or refit_fills"

# bench --layers (docs/engines.md, "Per-layer times"): an S@224 engine built here (export, fuse, build for this GPU
# with the target's plugin form), its layers timed by TensorRT's profiler: one RefinerDLA layer per refining block,
# its share reported, and the layers' sum within a profiled call's host wall time (at most it, and at least half:
# the rest is copies, launch and the profiler's synchronization); skipped without tensorrt (TensorRT-RTX refuses
# Hopper)
if ! "$PY" -c "import tensorrt" 2> /dev/null; then
  skip bench_layers "tensorrt is not importable"
else
  step bench_layers 240 bash benchmarks/bench_layers.sh "$OUT/layers"
fi

step bench 300 "$PY" benchmarks/bench_refine.py --out "$OUT"

# a library-form engine through a real tritonserver with --backend-config=tensorrt,plugins=... (deploy triton's
# repository), last: it takes what the budget has left. It needs tensorrt, tritonclient and a tritonserver with
# the TensorRT backend (the NGC tritonserver container has them; PyTriton's has only the Python backend)
triton_backends="${TRITON_BACKENDS:-/opt/tritonserver/backends}"
if ! command -v tritonserver > /dev/null; then
  skip triton_library_engine "no tritonserver binary on PATH"
elif [ ! -d "$triton_backends/tensorrt" ]; then
  skip triton_library_engine "tritonserver has no TensorRT backend in $triton_backends"
elif ! "$PY" -c "import tensorrt, tritonclient.http" 2> /dev/null; then
  skip triton_library_engine "tensorrt or tritonclient is not importable"
else
  step triton_library_engine 240 bash benchmarks/triton_library_engine.sh "$OUT/triton_library"
fi

echo
echo "== summary ($((SECONDS - START)) s; logs in $OUT)"
column -t -s $'\t' "$OUT/steps.tsv" 2>/dev/null || cat "$OUT/steps.tsv"
grep -E "passed|failed|error" "$OUT/pytest_gpu.log" 2>/dev/null | tail -1
sed -n '/copy bandwidth/,$p' "$OUT/bench.log" 2>/dev/null
exit $failed
