#!/usr/bin/env bash
# Everything that needs a GPU, in one run: build the kernel for the local GPU, the GPU tests, compute-sanitizer,
# and the benchmarks. Full logs go to $OUT (or ./out/gpu), a short table is printed last.
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

nvidia-smi --query-gpu=name,compute_cap,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
echo "== nvcc sm_$cap resource usage"
nvcc -std=c++17 -O3 -c plugins/refiner_dla/refinerDLAKernel.cu -o /tmp/refinerDLAKernel.o \
  -gencode=arch=compute_$cap,code=sm_$cap -Xptxas -v > "$OUT/ptxas.txt" 2>&1 || status=1
grep -E "registers|spill" "$OUT/ptxas.txt" | sort | uniq -c | head -8

echo "== GPU tests"
python -m pytest -q -m gpu -p no:cacheprovider tests/test_refine_gpu.py 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== compute-sanitizer"
if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck --error-exitcode 9 python benchmarks/sanitize_refine.py > "$OUT/sanitizer.txt" 2>&1 \
    && echo "memcheck clean" || { echo "memcheck FAILED (see sanitizer.txt)"; status=1; }
  tail -3 "$OUT/sanitizer.txt"
else
  echo "compute-sanitizer not found"
fi

echo "== benchmarks"
python benchmarks/bench_refine.py --out "$OUT" 2>&1 | tee "$OUT/bench.txt" | tail -12 || status=1
exit $status
