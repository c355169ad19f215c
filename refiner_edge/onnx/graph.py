"""Helpers over ONNX graphs that every stage shares: loading a user's file, reading its opset, precision and
interface, and the preprocessing it expects."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def load_onnx(path: str | Path, load_external_data: bool = True):
    """An ONNX model from a file the user named, or InputError with one clear line."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as e:  # protobuf raises DecodeError and others with no common base
        raise InputError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:200]})") from None


def opset_of(model) -> int:
    """The default-domain opset of an onnx.ModelProto."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def graph_precision(model) -> str:
    """fp32, fp16 or int8, read from the graph itself (Q/DQ nodes mean int8, FP16 weights mean fp16)."""
    from onnx import TensorProto

    ops = {n.op_type for n in model.graph.node}
    if "QuantizeLinear" in ops or "DequantizeLinear" in ops:
        return "int8"
    if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def graph_preprocess(path: str | Path, manifest, input_shape, variant: str | None = None,
                     img_size: int | None = None):
    """The preprocessing a graph expects: from its manifest, else from the variant and its input shape."""
    from ..images.preprocess import Preprocess
    from ..models.variants import DEFAULT_VARIANT, get_variant

    size = input_shape[-1] if isinstance(input_shape[-1], int) else None
    if manifest is not None:
        pre = Preprocess.from_record(manifest.preprocess)
    else:
        pre = Preprocess.from_config(get_variant(variant or DEFAULT_VARIANT), img_size=img_size or size)
    if size is not None and size != pre.img_size:
        raise InputError(f"{path} takes {size}x{size} images but its preprocessing says {pre.img_size}")
    return pre
