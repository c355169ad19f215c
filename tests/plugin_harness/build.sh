#!/usr/bin/env bash
# Builds the RefinerDLA plugin host harness: the plugin library compiled against one or more TensorRT header sets with
# -Wall -Wextra -Werror under AddressSanitizer + UBSan (LeakSanitizer comes with ASan), its kernel's host code
# compiled by nvcc for one architecture with the same flags, a host-memory CUDA runtime and a stand-in libnvinfer.
#   tests/plugin_harness/build.sh OUT PLUGIN_SOURCE_DIR HEADERS_ROOT VERSION...
# OUT/<VERSION>/ gets librefiner_edge_plugin.so (headers only, as a build without libnvinfer),
# librefiner_edge_plugin_linked.so (linked to libnvinfer, as CMake does where it finds it), libnvinfer.so.<major>
# and harness. The kernel object and the CUDA runtime are built once for all versions. NVCC, CXX and CUDA_INCLUDE
# override the tools.
set -euo pipefail
OUT=$1 SRC=$2 HEADERS=$3
shift 3
HERE="$(cd "$(dirname "$0")" && pwd)"
NVCC=${NVCC:-nvcc}
CXX=${CXX:-g++}
if [ -z "${CUDA_INCLUDE:-}" ]; then
  CUDA_INCLUDE=$(dirname "$(dirname "$(readlink -f "$(command -v "$NVCC")")")")/include
  [ -f "$CUDA_INCLUDE/cuda_runtime.h" ] || CUDA_INCLUDE=${CUDA_HOME:-/usr/local/cuda}/include
fi
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1"
WARN="-Wall -Wextra -Werror"
mkdir -p "$OUT"

# nvcc's host code (the launcher, its size guards, the registration stubs) under the same sanitizers; REUSE_FROM
# names an earlier OUT whose kernel object and runtime serve again (they need no TensorRT header)
if [ -n "${REUSE_FROM:-}" ]; then
  cp "$REUSE_FROM/refinerDLAKernel.o" "$REUSE_FROM/libfakecudart.so" "$OUT/"
else
  "$NVCC" -std=c++17 -O1 -g -c "$SRC/refinerDLAKernel.cu" -o "$OUT/refinerDLAKernel.o" \
    -gencode=arch=compute_90,code=sm_90 -Werror all-warnings \
    -Xcompiler "-fPIC,-fvisibility=hidden,-Wall,-Wextra,-fsanitize=address,-fsanitize=undefined,-fno-sanitize-recover=all,-fno-omit-frame-pointer" &
  kernel=$!
  "$CXX" -std=c++17 -shared -fPIC $WARN $SAN -isystem "$CUDA_INCLUDE" "$HERE/fake_cudart.cpp" \
    -Wl,-soname,libfakecudart.so -o "$OUT/libfakecudart.so"
  wait "$kernel"
fi

build_version() {
  local ver=$1 dir="$OUT/$1" inc="$HEADERS/$1/include" major
  major=$(sed -n 's/^#define \(NV_TENSORRT_MAJOR\|TRT_MAJOR_ENTERPRISE\) \([0-9]*\).*/\2/p' "$inc/NvInferVersion.h" | head -1)
  mkdir -p "$dir"
  local inc_flags="-isystem $inc -isystem $CUDA_INCLUDE"
  "$CXX" -std=c++17 -fPIC $WARN $SAN -fvisibility=hidden -fvisibility-inlines-hidden -I"$SRC" $inc_flags \
    -c "$SRC/refinerDLAPlugin.cpp" -o "$dir/refinerDLAPlugin.o"
  # the stand-in libnvinfer overrides TensorRT 10's deprecated IPluginV2 registry methods
  "$CXX" -std=c++17 -shared -fPIC $WARN -Wno-deprecated-declarations $SAN $inc_flags "$HERE/fake_nvinfer.cpp" \
    -Wl,-soname,"libnvinfer.so.$major" -ldl -o "$dir/libnvinfer.so.$major"
  # -z defs: every symbol the plugin imports must come from the fake runtime, libdl or the C++ runtime
  "$CXX" -shared $SAN -Wl,-z,defs "$dir/refinerDLAPlugin.o" "$OUT/refinerDLAKernel.o" -L"$OUT" -lfakecudart \
    -Wl,-rpath,"$OUT" -ldl -o "$dir/librefiner_edge_plugin.so"
  "$CXX" -shared $SAN -Wl,-z,defs "$dir/refinerDLAPlugin.o" "$OUT/refinerDLAKernel.o" -L"$OUT" -lfakecudart \
    -L"$dir" -l:"libnvinfer.so.$major" -Wl,-rpath,"$OUT:$dir" -ldl -o "$dir/librefiner_edge_plugin_linked.so"
  "$CXX" -std=c++17 $WARN $SAN -I"$HERE" $inc_flags "$HERE/harness.cpp" -L"$OUT" -lfakecudart -Wl,-rpath,"$OUT" \
    -ldl -pthread -o "$dir/harness"
  echo "$dir/harness" > "$dir/.built"
}

pids=()
for ver in "$@"; do
  build_version "$ver" > "$OUT/build-$ver.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "build for TensorRT headers $(echo "$@" | cut -d' ' -f$((i + 1))) failed:" >&2
    cat "$OUT/build-$(echo "$@" | cut -d' ' -f$((i + 1))).log" >&2
    status=1
  fi
done
exit $status
