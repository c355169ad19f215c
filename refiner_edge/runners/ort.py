"""ONNX Runtime runner: an ONNX graph (plain, calibrated or fused) on the CPU or CUDA provider."""
from __future__ import annotations

import functools

from pathlib import Path

import numpy as np

from .. import refine  # noqa: F401 (registers how ONNX Runtime runs fused graphs; imports no torch)
from ..errors import InputError
from ..manifest import read_manifest
from ..onnx.graph import check_interface, graph_preprocess
from .base import Runner


def onnxruntime_runner(onnx: str | Path | None = None, variant: str | None = None, img_size: int | None = None,
                       **_) -> Runner:
    if onnx is None:
        raise InputError("the onnxruntime backend needs --onnx MODEL.onnx (write one with `refiner-edge export`)")
    from ..onnx.session import ort_session

    path = Path(onnx)
    if not path.is_file():
        raise InputError(f"ONNX model not found: {path}")
    manifest = read_manifest(path)
    session = ort_session(path)
    check_interface(path, session.get_inputs(), session.get_outputs())   # before anything indexes them
    inp = session.get_inputs()[0]
    pre = graph_preprocess(path, manifest, inp.shape, variant, img_size)
    num_classes = session.get_outputs()[0].shape[-1]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    name = inp.name  # graphs from elsewhere may name their input differently: the first input is the image

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x})[0]

    # without a manifest nothing says whether the weights are random
    random_weights = manifest is not None and manifest.random_weights
    @functools.lru_cache(maxsize=None)   # the estimate loads the graph: once per batch size, not per call (serve)
    def fits(wanted: int) -> int:
        from ..onnx.memory import graph_batch

        return graph_batch(path, wanted)

    return Runner("onnxruntime", run, pre, int(num_classes), random_weights, f"ONNX Runtime {path.name}",
                  fixed_batch=fixed, manifest=manifest, fits=fits)
