"""ONNX Runtime sessions for our graphs, on CPU (and CUDA where onnxruntime-gpu is installed)."""
from __future__ import annotations

from pathlib import Path

from .errors import InputError


def ort_session(model: str | Path | bytes, providers: list[str] | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, opts, providers=providers)
    except Exception as e:  # ORT raises its own exception types (InvalidGraph, Fail, ...) with no common base
        where = "model" if isinstance(model, bytes) else str(model)
        raise InputError(f"{where}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:300]})") from None
