#!/usr/bin/env bash
# What each install brings: packages and size on disk, for the core, the JetPack 6 set (aarch64, Python 3.10, as
# pip would install it on the device; TensorRT comes from JetPack and is not counted) and the full development set
# (this checkout's .venv: x86-64, Python 3.11, torch's CPU build). Figures go to docs/jetson.md.
# Usage: bash benchmarks/footprint.sh [VENV]   (needs the registry; downloads ~200 MB of aarch64 wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$VENV/bin/python" -m pip wheel -q --no-deps -w "$work/dist" . >/dev/null
wheel=$(ls "$work"/dist/refiner_edge-*.whl)
# JetPack 6: Ubuntu 22.04, glibc 2.35; --platform takes exact tags, so every manylinux tag up to it
tags=(--platform manylinux2014_aarch64)
for i in $(seq 17 35); do tags+=(--platform "manylinux_2_${i}_aarch64"); done

measure() {   # name folder: packages (dist-info folders) and size on disk
  printf '%-28s %4d packages %8s\n' "$1" "$(find "$2" -maxdepth 1 -name '*.dist-info' | wc -l)" "$(du -sh "$2" | cut -f1)"
}
for extra in "" "[jetpack6]"; do
  target="$work/jetpack6${extra}"
  "$VENV/bin/python" -m pip install -q --only-binary=:all: "${tags[@]}" --python-version 3.10 --target "$target" \
    "$wheel$extra" 2>/dev/null
  measure "aarch64 py3.10 core${extra}" "$target"
done
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
measure "x86-64 dev set ($VENV)" "$site"
if [ -d "${REFINER_EDGE_SERVE_ENV:-.venv-serve}" ]; then
  measure "serve's environment" "$(ls -d "${REFINER_EDGE_SERVE_ENV:-.venv-serve}"/lib/python3*/site-packages)"
fi
