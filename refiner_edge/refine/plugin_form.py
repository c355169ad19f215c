"""Which plugin form a fused graph's RefinerDLA nodes take in TensorRT.

A fused node (refine/surgery.py) carries its weights as attributes, the fields of the IPluginV3 library
(plugins/refiner_dla). TensorRT's ahead-of-time quickly-deployable form (refine/aot.py) does not serialize
attributes into the engine, so `aot_form` moves the weights into a second input, one FP32 initializer in
layout.PACK_ORDER, and marks the node with `aot` = 1, the attribute TensorRT's ONNX parser reads to pick the AOT
implementation. num_heads, num_expanded, plugin_version and plugin_namespace stay.
"""
from __future__ import annotations

import copy

from ..errors import InputError
from . import PLUGIN_NAME
from .layout import PACK_ORDER

FORMS = ("library", "aot")  # the forms a fused graph's nodes take: the IPluginV3 library's, the AOT plugin's
AOT_ATTRIBUTE = "aot"


def is_aot(node) -> bool:
    return any(a.name == AOT_ATTRIBUTE and a.i for a in node.attribute)


def aot_form(model):
    """A copy of the fused onnx.ModelProto whose RefinerDLA nodes use the AOT plugin form (see the module doc)."""
    import numpy as np
    from onnx import helper, numpy_helper

    from .attributes import folded_from_attributes

    model = copy.deepcopy(model)
    nodes = [n for n in model.graph.node if n.op_type == PLUGIN_NAME]
    if not nodes:
        raise InputError("the graph has no RefinerDLA nodes: fuse it first (refiner-edge fuse)")
    names = {i.name for i in model.graph.initializer} | {v for n in model.graph.node for v in n.output}
    for node in nodes:
        if is_aot(node):
            raise InputError(f"node {node.name} is already in the AOT form")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        packed = folded_from_attributes(attrs).packed()
        weights = f"{node.name or node.output[0]}/weights"
        while weights in names:  # keep tensor names unique even for unnamed or oddly named nodes
            weights += "_"
        names.add(weights)
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(packed, np.float32), weights))
        node.input.append(weights)
        kept = [a for a in node.attribute if a.name not in PACK_ORDER]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.append(helper.make_attribute(AOT_ATTRIBUTE, 1))
    return model
