# Two entry points for a fresh machine: `make demo` (set up, export Refiner-ViT-S, classify two photographs,
# calibrate INT8 on them, validate it, fuse its attention refinements, build an INT8 engine from nothing with
# TensorRT-RTX for an RTX (sm_89) target, and benchmark the FP32 graph on ONNX Runtime)
# and `make test` (set up, run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
OUT ?= out
# torch 2.13.0 is pinned: on the project's CPU machines it is a local CPU wheel; an unpinned torch pulls a
# multi-GB CUDA build.
TORCH ?= torch==2.13.0
# serve's own environment (PyTriton with numpy<2: refiner_edge/deploy/serve_env.py), kept inside the checkout here
export REFINER_EDGE_SERVE_ENV ?= $(CURDIR)/.venv-serve
# The torch-free leg of `make test`: JetPack 6's Python 3.10 in an environment without torch (`.[test]`), as on a
# Jetson. It runs the tests of ONNX Runtime inference, validate against an ONNX reference, bench, TensorRT-RTX builds,
# deploy and the C++ parity on the tiny graph the 3.11 leg writes: the test files marked `torch_free` (the others are
# not even imported there; tests/conftest.py); the server tests run in the 3.11 leg. A python3.10 on PATH, else pyenv's.
PY310 ?= $(shell for p in python3.10 $$(pyenv root 2>/dev/null)/versions/3.10*/bin/python3.10; do \
	"$$p" -c "" 2>/dev/null && { echo "$$p"; break; }; done)
VENV310 ?= .venv310
TEST_GRAPHS := build/test-graphs

.PHONY: setup serve-env system-deps demo lint test test-fast test-py310 gpu-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

serve-env: setup
	@$(BIN)/refiner-edge serve --setup >/dev/null \
	  || echo "note: serve's environment could not be made: the server tests will skip with the reason" >&2

$(VENV310)/.installed: pyproject.toml
	$(PY310) -m venv $(VENV310)
	$(VENV310)/bin/python -m pip install -q --upgrade pip
	$(VENV310)/bin/python -m pip install -q -e ".[test]"
	touch $@

# The main job on a built-in default: no weights, no data downloaded (the photographs ship inside scikit-learn).
demo: setup
	$(BIN)/refiner-edge info
	$(BIN)/refiner-edge export --variant refiner-vit-s -o $(OUT)/refiner-vit-s.onnx
	$(BIN)/refiner-edge infer --onnx $(OUT)/refiner-vit-s.onnx --topk 3 \
		"$$($(PY) -m refiner_edge.images.samples)"
	$(BIN)/refiner-edge calibrate --onnx $(OUT)/refiner-vit-s.onnx --images "$$($(PY) -m refiner_edge.images.samples)" \
		-o $(OUT)/refiner-vit-s.int8.onnx
	$(BIN)/refiner-edge validate --onnx $(OUT)/refiner-vit-s.int8.onnx --images "$$($(PY) -m refiner_edge.images.samples)" \
		--reference $(OUT)/refiner-vit-s.onnx
	$(BIN)/refiner-edge fuse $(OUT)/refiner-vit-s.int8.onnx -o $(OUT)/refiner-vit-s.int8.fused.onnx
	$(BIN)/refiner-edge build --precision int8 --target rtx-sm89 -o $(OUT)/engine/refiner-vit-s.int8.engine
	$(BIN)/refiner-edge bench --onnx $(OUT)/refiner-vit-s.onnx --batch 1 --iterations 5 --warmup 1

# tests/test_cpp.py checks the C++ image decoding against Python's with libjpeg-turbo (libjpeg-dev: Debian's
# libjpeg62-turbo-dev, Ubuntu's libjpeg-turbo8-dev) and stb_image (libstb-dev): installed here where apt-get is
# allowed; without them those tests skip with the reason.
system-deps:
	@if { [ ! -f /usr/include/stb/stb_image.h ] || [ ! -f /usr/include/jpeglib.h ]; } && command -v apt-get >/dev/null 2>&1; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libstb-dev libjpeg-dev; } >/dev/null 2>&1 \
	    || echo "note: could not install libstb-dev and libjpeg-dev: C++ image tests skip or use stb_image bounds" >&2; \
	fi

# pyflakes' checks through ruff's F rules (pyproject.toml [tool.ruff]): undefined names and unused imports fail the run.
lint: setup
	$(PY) -m ruff check --no-cache .

test: setup lint system-deps serve-env
	$(PY) -m pytest -q
	@$(MAKE) --no-print-directory test-py310

test-fast: setup system-deps serve-env
	$(PY) -m pytest -q -m "not slow"

test-py310: setup system-deps
	@if [ -z "$(PY310)" ]; then \
	  echo "note: no Python 3.10 interpreter (python3.10 or pyenv's): the torch-free Python 3.10 leg is skipped"; \
	else \
	  $(MAKE) --no-print-directory PY310="$(PY310)" $(VENV310)/.installed \
	  && $(PY) -m tests.graphs $(TEST_GRAPHS) >/dev/null \
	  && REFINER_EDGE_TEST_GRAPHS=$(TEST_GRAPHS) $(VENV310)/bin/python -m pytest -q -m "torch_free and not serve"; \
	fi

# Everything that needs a GPU, in one run (docs/kernel.md); figures go to docs/benchmarks.md.
gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf $(OUT) .pytest_cache $(TEST_GRAPHS)
