"""refiner-edge: Refiner-ViT from PyTorch to ONNX and TensorRT, with the attention refinement as one fused op.

One subpackage per pipeline stage: models -> onnx (export) -> precision (calibrate) -> refine (fuse) -> engine
(build) -> runners (infer, validate, bench); images feeds them all, manifest is the record beside every artifact,
cli is the command line over them.

Heavy modules (torch, onnx, tensorrt) are imported only when the attribute that needs them is used.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "create_model": ("refiner_edge.models.factory", "create_model"),
    "export_onnx": ("refiner_edge.onnx.export", "export_onnx"),
    "fuse_onnx": ("refiner_edge.refine.fuse", "fuse_onnx"),
    "calibrate_onnx": ("refiner_edge.precision.calibrate", "calibrate_onnx"),
    "CalibrateOptions": ("refiner_edge.precision.calibrate", "CalibrateOptions"),
    "validate_onnx": ("refiner_edge.runners.validate", "validate_onnx"),
    "load_runner": ("refiner_edge.runners.runtime", "load_runner"),
    "classify": ("refiner_edge.runners.classify", "classify"),
    "read_manifest": ("refiner_edge.manifest", "read_manifest"),
    "VARIANTS": ("refiner_edge.models.variants", "VARIANTS"),
    "Preprocess": ("refiner_edge.images.preprocess", "Preprocess"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'refiner_edge' has no attribute {name!r}")
