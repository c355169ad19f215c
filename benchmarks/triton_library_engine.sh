#!/usr/bin/env bash
# A library-form engine served by a real tritonserver (its TensorRT backend) that loads the RefinerDLA library the
# way `deploy triton` says: --backend-config=tensorrt,plugins=REPO/NAME/plugins/<library>. One request of two
# images through tritonclient must give the logits the refiner-edge TensorRT runner gives for the same input.
# Run by benchmarks/gpu_check.sh, which first checks what it needs (gpu_check.sh: triton_prerequisites).
#   bash benchmarks/triton_library_engine.sh [WORK]      # WORK default out/gpu/triton_library
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WORK="${1:-out/gpu/triton_library}"
PORT="${TRITON_CHECK_PORT:-18000}"
rm -rf "$WORK"
mkdir -p "$WORK"

# the whole chain for the tiny variant: export, fuse (library form), build the library against the installed
# TensorRT's headers when build/plugin has none, build the engine on this GPU
"$PY" -c "from refiner_edge.cli import run; run()" build --variant refiner-vit-tiny --precision fp32 --target auto \
  --plugin library --batch 1:2:4 -o "$WORK/tiny.engine"
"$PY" -c "from refiner_edge.cli import run; run()" deploy triton --engine "$WORK/tiny.engine" -o "$WORK/repo" \
  --name refiner --no-ensemble
library=$(ls "$WORK"/repo/refiner/plugins/*)
echo "plugin library in the repository: $library"

tritonserver --model-repository="$WORK/repo" --backend-config=tensorrt,plugins="$library" \
  --http-port="$PORT" --grpc-port=$((PORT + 1)) --metrics-port=$((PORT + 2)) > "$WORK/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null' EXIT
for _ in $(seq 90); do
  if "$PY" -c "import tritonclient.http as h, sys; sys.exit(0 if h.InferenceServerClient('localhost:$PORT')\
.is_model_ready('refiner') else 1)" 2> /dev/null; then
    break
  fi
  kill -0 "$server" 2> /dev/null || { tail -n 20 "$WORK/server.log"; echo "tritonserver exited"; exit 1; }
  sleep 1
done

"$PY" - "$WORK/tiny.engine" "$PORT" <<'EOF'
import sys

import numpy as np
import tritonclient.http as http

from refiner_edge.runners.tensorrt import tensorrt_runner

engine, port = sys.argv[1], sys.argv[2]
runner = tensorrt_runner(engine)
manifest = runner.manifest
size = manifest.model.img_size
x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
client = http.InferenceServerClient(f"localhost:{port}")
inp = http.InferInput(manifest.graph.input, list(x.shape), "FP32")
inp.set_data_from_numpy(x)
served = client.infer("refiner", [inp]).as_numpy(manifest.graph.output)
local = runner.run(x)
runner.close()
diff = float(np.abs(served - local).max())
print(f"tritonserver (plugins= backend option) vs the TensorRT runner: shape {served.shape}, max |diff| {diff:.3g}")
assert served.shape == (2, manifest.model.num_classes) and np.isfinite(served).all()
assert diff <= 1e-3 * max(1.0, float(np.abs(local).max())), diff
EOF
grep -n "RefinerDLA\|plugin" "$WORK/server.log" | head -5 || true
