"""refiner-edge: Refiner-ViT from PyTorch to ONNX and TensorRT, with the attention refinement as one fused op.

Heavy modules (torch, onnx, tensorrt) are imported only when the attribute that needs them is used.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "create_model": ("refiner_edge.api", "create_model"),
    "export_onnx": ("refiner_edge.export", "export_onnx"),
    "classify": ("refiner_edge.infer", "classify"),
    "VARIANTS": ("refiner_edge.variants", "VARIANTS"),
    "Preprocess": ("refiner_edge.preprocess", "Preprocess"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'refiner_edge' has no attribute {name!r}")
