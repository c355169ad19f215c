"""Helpers over ONNX graphs that every stage shares: loading a user's file, reading its opset, precision and
interface, and the preprocessing it expects."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError

# the tensor names export writes (here, torch-free: the chain plans a build before anything is exported)
INPUT_NAME, OUTPUT_NAME = "input", "logits"


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


def check_onnx_graph(path: str | Path) -> None:
    """InputError unless `path` parses as an ONNX model with a graph: a wrong file given to --onnx is named as such,
    not as a graph that lacks its manifest."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf raises DecodeError and others with no common base
        model = None
    if model is None or not model.graph.node:
        raise InputError(f"{path} is not an ONNX graph: give a graph from refiner-edge export, calibrate or fuse")


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


INTERFACE = "one FP32 input NCHW [B, 3, S, S] and logits [B, classes], as refiner-edge export writes"


def check_interface(path: str | Path, inputs, outputs) -> None:
    """InputError, in one line, unless the graph has the interface every runner feeds and reads: one float32 input
    [B, 3, S, S] (channels first) and a float32 first output [B, classes]. `inputs`/`outputs` are ONNX Runtime's
    NodeArgs (name, type, shape). A graph from elsewhere (FP16 or uint8 input, NHWC, two inputs, a rank-1 output)
    would otherwise fail inside ONNX Runtime or NumPy."""
    name = Path(path).name

    def shape(arg) -> str:
        return "[" + ", ".join(str(d) if d not in (None, "") else "?" for d in arg.shape) + "]"

    def refuse(why: str) -> InputError:
        return InputError(f"{name}: {why}; refiner-edge runs graphs with {INTERFACE}")

    if len(inputs) != 1:
        raise refuse(f"it has {len(inputs)} inputs ({', '.join(repr(i.name) for i in inputs)})")
    inp = inputs[0]
    if inp.type != "tensor(float)":
        raise refuse(f"its input {inp.name!r} is {inp.type.removeprefix('tensor(').rstrip(')')}, not float32")
    dims = list(inp.shape)
    if len(dims) != 4:
        raise refuse(f"its input {inp.name!r} has shape {shape(inp)}")
    if dims[1] != 3:
        hint = " (channels last, NHWC?)" if dims[3] == 3 else ""
        raise refuse(f"its input {inp.name!r} has shape {shape(inp)}{hint}")
    if not outputs:
        raise refuse("it has no output")
    out = outputs[0]
    if out.type != "tensor(float)":
        raise refuse(f"its output {out.name!r} is {out.type.removeprefix('tensor(').rstrip(')')}, not float32")
    if len(out.shape) != 2 or not isinstance(out.shape[1], int) or out.shape[1] < 1:
        raise refuse(f"its output {out.name!r} has shape {shape(out)}, not [B, classes]")


def model_interface(model):
    """(inputs, outputs) of an onnx.ModelProto in ONNX Runtime's NodeArg form (name, type, shape), for
    check_interface where no session is open (calibrate, fuse). Initializers listed as inputs (older IRs) are not
    inputs."""
    from collections import namedtuple

    from onnx import TensorProto

    arg = namedtuple("Arg", "name type shape")
    initialized = {t.name for t in model.graph.initializer}

    def of(value):
        t = value.type.tensor_type
        kind = TensorProto.DataType.Name(t.elem_type).lower() if t.elem_type else "undefined"
        kind = {"float": "float", "double": "double"}.get(kind, kind)
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        return arg(value.name, f"tensor({kind})", dims)

    return ([of(v) for v in model.graph.input if v.name not in initialized], [of(v) for v in model.graph.output])
