#!/usr/bin/env bash
# On a GPU: builds librefiner_edge_plugin.so for this GPU against TensorRT's headers (no libnvinfer needed) and runs
# its enqueue path (gpu_driver.cpp: FP32/FP16, captured graphs, large E, large batch, empty maps, each checked against
# float64) plain, then under compute-sanitizer memcheck and racecheck. Called by benchmarks/gpu_check.sh.
#   tests/plugin_harness/gpu_sanitize.sh OUT [SM]       (SM: e.g. 90; default: the GPU's)
# Headers: $TensorRT_ROOT/include, $REFINER_EDGE_TENSORRT_HEADERS/10.13.3/include, ../shared/tensorrt-headers/10.13.3
# beside the checkout, or /usr/include/x86_64-linux-gnu.
set -euo pipefail
OUT=$1
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SRC="$ROOT/plugins/refiner_dla"
SM=${2:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}
mkdir -p "$OUT"
INC=""
for cand in "${TensorRT_ROOT:+$TensorRT_ROOT/include}" \
    "${REFINER_EDGE_TENSORRT_HEADERS:+$REFINER_EDGE_TENSORRT_HEADERS/10.13.3/include}" \
    "$ROOT/../shared/tensorrt-headers/10.13.3/include" "$ROOT/shared/tensorrt-headers/10.13.3/include" \
    /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu /usr/local/tensorrt/include; do
  if [ -n "$cand" ] && [ -f "$cand/NvInferRuntime.h" ]; then INC=$cand; break; fi
done
if [ -z "$INC" ]; then
  echo "TensorRT headers not found (set TensorRT_ROOT or REFINER_EDGE_TENSORRT_HEADERS)" >&2
  exit 3
fi
echo "TensorRT headers: $INC; sm_$SM"
nvcc -std=c++17 -O3 -lineinfo -shared -Xcompiler -fPIC,-fvisibility=hidden -cudart shared \
  -gencode="arch=compute_$SM,code=sm_$SM" -I"$SRC" -isystem "$INC" \
  "$SRC/refinerDLAKernel.cu" "$SRC/refinerDLAPlugin.cpp" -ldl -o "$OUT/librefiner_edge_plugin.so"
nvcc -std=c++17 -O2 -cudart shared -isystem "$INC" "$HERE/gpu_driver.cpp" -ldl -o "$OUT/gpu_driver"
"$OUT/gpu_driver" "$OUT/librefiner_edge_plugin.so"
for tool in memcheck racecheck; do
  echo "== compute-sanitizer --tool $tool"
  compute-sanitizer --tool "$tool" --error-exitcode 9 "$OUT/gpu_driver" "$OUT/librefiner_edge_plugin.so"
done
