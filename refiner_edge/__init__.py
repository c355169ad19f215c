"""refiner-edge: Refiner-ViT from PyTorch to ONNX and TensorRT, with the attention refinement as one fused op.

One subpackage per stage, in layers, lowest first (tools/import_check.py holds the same order and lets a module
import only its own layer or a lower one):

    models -> images -> onnx -> refine -> precision -> engine -> runners -> deploy -> pipeline -> cli

models (Refiner-ViT), images (preprocessing), onnx (export), refine (fuse: the RefinerDLA op), precision
(calibrate), engine (build), runners (infer, validate, bench), deploy (Triton, DeepStream); pipeline runs the
stages in the order an engine is made (export -> calibrate -> fuse -> build, each returning a StageResult), and cli
is the command line over them all. Modules directly in the package (manifest, the record beside every artifact;
artifacts, errors, compare, result ...) are shared by every layer.

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
