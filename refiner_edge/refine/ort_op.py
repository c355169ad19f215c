"""RefinerDLA on ONNX Runtime (CPU) through onnxruntime-extensions, so fused graphs run without TensorRT.

onnxruntime-extensions' Python ops take only scalar attributes and live in the ai.onnx.contrib domain, so a fused
graph is rewritten for it (a copy, never the file): RefinerDLA nodes move to that domain and their weight lists
become one base64 string. FP16 maps are cast to FP32 around the op.
"""
from __future__ import annotations

import base64
import copy

import numpy as np

from ..errors import InputError, MissingDependencyError
from ..extras import install_hint
from . import PLUGIN_NAME
from .reference import refiner_dla_numpy

CONTRIB_DOMAIN = "ai.onnx.contrib"
_registered = False


def available() -> bool:
    try:
        import onnxruntime_extensions  # noqa: F401
    except ImportError:
        return False
    return True


def _register() -> None:
    global _registered
    if _registered:
        return
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    from .fold import FoldedDLA

    @onnx_op(op_type=PLUGIN_NAME, inputs=[PyCustomOpDef.dt_float], outputs=[PyCustomOpDef.dt_float],
             attrs={"num_heads": PyCustomOpDef.dt_int64, "weights": PyCustomOpDef.dt_string})
    def refiner_dla(a, num_heads, weights):
        folded = FoldedDLA.unpack(np.frombuffer(base64.b64decode(weights), np.float32), int(num_heads))
        return refiner_dla_numpy(np.asarray(a, np.float32), folded)

    _registered = True


def for_onnxruntime(model, copy_model: bool = True):
    """The fused model as ONNX Runtime + onnxruntime-extensions can run it: a copy, or `model` itself rewritten
    (copy_model=False: a model read for this alone, as session_options_and_bytes' is)."""
    import onnx
    from onnx import TensorProto, helper

    from .attributes import folded_from_attributes
    from .plugin_form import is_aot

    if copy_model:
        model = copy.deepcopy(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(_without_weights(model))
        types = {v.name: v.type.tensor_type.elem_type for v in
                 list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    except Exception:  # shape inference is only used to spot FP16 maps; FP32 is the default
        types = {}
    nodes = []
    for node in model.graph.node:
        if node.op_type != PLUGIN_NAME:
            nodes.append(node)
            continue
        if is_aot(node):
            raise InputError(f"{node.name} is in the AOT plugin form, which only TensorRT runs: fuse with "
                             "--plugin-form library to run the graph on ONNX Runtime")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        packed = folded_from_attributes(attrs).packed()
        inp, out = node.input[0], node.output[0]
        half = types.get(inp) == TensorProto.FLOAT16
        if half:
            nodes.append(helper.make_node("Cast", [inp], [inp + "__f32"], to=TensorProto.FLOAT))
            inp, out = inp + "__f32", out + "__f32"
        nodes.append(helper.make_node(PLUGIN_NAME, [inp], [out], name=node.name, domain=CONTRIB_DOMAIN,
                                      num_heads=int(attrs["num_heads"]),
                                      weights=base64.b64encode(packed.tobytes()).decode("ascii")))
        if half:
            nodes.append(helper.make_node("Cast", [out], [node.output[0]], to=TensorProto.FLOAT16))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == CONTRIB_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    return model


def _without_weights(model):
    """The graph with its initializers as inputs of the same type and shape, no data: what shape inference needs to
    find the FP16 maps, without copying the weights twice (2 x 325 MB at Refiner-ViT-L@448)."""
    from onnx import helper

    inputs = {i.name for i in model.graph.input}
    weights = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in model.graph.initializer
               if t.name not in inputs]
    graph = helper.make_graph(model.graph.node, model.graph.name, [*model.graph.input, *weights],
                              model.graph.output, value_info=model.graph.value_info)
    light = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    light.functions.extend(model.functions)
    return light


def session_options_and_bytes(path, model):
    """(SessionOptions with the extensions library registered, serialized model) for the fused graph `model` read
    from `path`: how onnx/session.py runs fused graphs (registered in refine/__init__.py)."""
    import onnxruntime as ort

    if not available():
        raise MissingDependencyError(f"{path} holds fused RefinerDLA nodes; running them on ONNX Runtime needs "
                                     f"onnxruntime-extensions ({install_hint('onnxruntime_extensions')})")
    from onnxruntime_extensions import get_library_path

    _register()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.register_custom_ops_library(get_library_path())
    return opts, for_onnxruntime(model, copy_model=False).SerializeToString()
