"""The defaults of options that the library and the command line share, each written once, here.

A library function takes None for "not given" and resolves it with `default` (Polygraphy's util.default); the CLI's
options default to None and their help states these values. This module imports nothing, so `--help` stays fast.
"""
from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def default(value: T | None, fallback: T) -> T:
    """`value`, or `fallback` where it is None."""
    return fallback if value is None else value


# export (onnx/export.py)
EXPORT_OPSET = 17                  # up to the newest the installed torch exports
EXPORT_BATCH = "dynamic"           # or a fixed batch size

# fuse (refine/fuse.py): images the fused graph is checked on against the plain one, and the plugin form its
# nodes take (refine/plugin_form.FORMS)
FUSE_NUM = 8
FUSE_FORM = "library"
FUSE_VERIFY = True                 # run the fused graph against the plain one before keeping it

# calibrate (precision/calibrate.py)
CALIBRATE_PRECISION = "int8"
CALIBRATE_NUM = 512                # calibration images (a seeded sample where the folder holds more)
CALIBRATE_METHOD = "percentile"
CALIBRATE_EVAL_NUM = 64            # images the accuracy budget and the report evaluate on
CALIBRATE_BATCH_SIZE = 16
CALIBRATE_SEED = 0
CALIBRATE_MEMORY_GB = 1.0          # activations held at once (onnx/memory.py); whole-process peaks: docs/benchmarks.md
TENSORRT_CACHE_VERSION = "10.3.0"  # JetPack 6's TensorRT, the main weakly typed target (precision/tensorrt_cache.py)

# inspect (engine/inspect.py): ask TensorRT's engine inspector for the layer list
INSPECT_LAYERS = True

# bench (runners/bench.py, runners/triton_client.py)
BENCH_BATCH = 1
BENCH_ITERATIONS = 50              # timed calls
BENCH_WARMUP = 5                   # untimed calls first
BENCH_CONCURRENCY = 1              # a Triton server's requests in flight at once

# infer and validate (runners/classify.py, runners/validate.py)
RUN_BATCH_SIZE = 8                 # images per forward pass (fewer where a graph's activations would pass 1 GB)
INFER_TOPK = 5
VALIDATE_REFERENCE = "torch"       # PyTorch FP32 from the checkpoint, or an ONNX file

# serve (deploy/serve.py)
SERVE_NAME = "refiner"
SERVE_HOST = "127.0.0.1"
SERVE_HTTP_PORT = 8000
SERVE_GRPC_PORT = 8001
SERVE_MAX_BATCH = 8
SERVE_QUEUE_DELAY_US = 2000

# deploy triton (deploy/triton.py): the model repository's config.pbtxt
TRITON_NAME = "refiner"
TRITON_MAX_BATCH = 8               # capped by an engine's profile maximum
TRITON_QUEUE_DELAY_US = 100
TRITON_INSTANCES = 1               # instance_group count, per device
TRITON_ENSEMBLE = True             # the Python-backend preprocessing model and the ensemble for encoded images

# deploy deepstream (deploy/deepstream.py): nvinfer's classifier-threshold (in logits) and gpu-id
DEEPSTREAM_THRESHOLD = 0.0
DEEPSTREAM_GPU_ID = 0

# build (engine/plan.py): FP32 layers stay FP32 unless --tf32. TensorRT and trtexec default to TF32, whose 10-bit
# mantissa products put FP32 engines outside the FP32 accuracy budget `validate` holds them to (compare.py); an
# FP32 engine is the exact reference, FP16 and INT8 are the fast ones.
BUILD_TF32 = False
BUILD_TARGET = "auto"              # the local GPU's row of engine/targets.py

# bench --layers (runners/layer_profile.py): the profiled calls at most (--warmup and --iterations are capped
# there); every call's records are kept for the medians, a few hundred layers a call
BENCH_MAX_PROFILED_CALLS = 1000
