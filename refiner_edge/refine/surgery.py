"""ONNX graph surgery (a pure rewrite of an onnx.ModelProto): each attention-refinement subgraph becomes one
RefinerDLA plugin node. The `fuse` stage around it (files, verification, manifest) is refine/fuse.py.

The subgraph is found by structure, not by tensor names (those differ between exporters and torch versions):

    A -> Conv1x1 -> Clip(0,6) -> Conv3x3(depthwise) -> Clip(0,6) -> Conv1x1 -> Add(., A)
      -> BatchNormalization -> Mul(scalar)

(the plain graph from `export`, with the DLA BatchNorms already folded into the convolutions). The weights are
folded into the node's attributes with refiner_edge.refine.fold.compose. Works on FP32 and FP16 graphs and on
graphs that carry Q/DQ nodes elsewhere; intermediate tensors used outside the subgraph prevent a match.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError, VerificationError
from . import ONNX_DOMAIN, PLUGIN_NAME
from .attributes import plugin_attributes
from .fold import FoldedDLA, compose


def _gs():
    import onnx_graphsurgeon as gs  # a core dependency, imported on first use: the CLI's startup stays fast

    return gs


def const_value(tensor) -> np.ndarray | None:
    """The value of a tensor that is constant: an initializer, a Constant node's output, or an Identity of one."""
    gs = _gs()
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    if node.op == "Constant":
        value = node.attrs.get("value")
        return np.asarray(value.values if isinstance(value, gs.Constant) else value)
    if node.op == "Identity":
        return const_value(node.inputs[0])
    if node.op == "Cast":  # FP16 graphs cast constants for the ops they keep in FP32
        from onnx import helper

        value = const_value(node.inputs[0])
        return None if value is None else value.astype(helper.tensor_dtype_to_np_dtype(node.attrs["to"]))
    return None


def _consumer(tensor, op: str, graph_outputs):
    """The single node consuming `tensor`, if it has type `op` and the tensor is not needed anywhere else."""
    if len(tensor.outputs) != 1 or id(tensor) in graph_outputs:
        return None
    node = tensor.outputs[0]
    return node if node.op == op else None


def _producer(tensor, op: str):
    if len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    return node if node.op == op else None


def _is_relu6(node) -> bool:
    if node is None or len(node.inputs) != 3:
        return False
    lo, hi = const_value(node.inputs[1]), const_value(node.inputs[2])
    return lo is not None and hi is not None and float(lo) == 0.0 and float(hi) == 6.0


def _conv(node, kernel: int, groups: int | None = None):
    """(weight [O, I, k, k], bias [O]) of a stride-1 Conv with a k x k kernel, or None."""
    if node is None or len(node.inputs) < 2:
        return None
    w = const_value(node.inputs[1])
    if w is None or w.ndim != 4 or w.shape[2:] != (kernel, kernel):
        return None
    a = node.attrs
    pad = kernel // 2
    if list(a.get("strides", [1, 1])) != [1, 1] or list(a.get("dilations", [1, 1])) != [1, 1] \
            or list(a.get("pads", [pad] * 4)) != [pad] * 4 or a.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return None
    if a.get("group", 1) != (groups or 1):
        return None
    b = const_value(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(w.shape[0])
    return (w, b) if b is not None else None


@dataclass
class Match:
    source: object   # the attention map A
    output: object   # the refined map's tensor (the Mul's output)
    last: object     # the Mul node
    folded: FoldedDLA
    name: str
    nodes: list[str]  # names of the matched nodes, input to output


def _match(dw, graph_outputs) -> Match | None:
    """Try to match a refinement subgraph around one depthwise 3x3 Conv node."""
    w_dw = const_value(dw.inputs[1]) if len(dw.inputs) > 1 else None
    if w_dw is None or w_dw.ndim != 4 or w_dw.shape[1] != 1:
        return None
    e = w_dw.shape[0]
    dwb = _conv(dw, 3, groups=e)
    r1 = _producer(dw.inputs[0], "Clip")
    c1 = _producer(r1.inputs[0], "Conv") if _is_relu6(r1) else None
    c1w = _conv(c1, 1)
    if dwb is None or c1w is None or c1w[0].shape[0] != e or len(r1.outputs[0].outputs) != 1 \
            or len(c1.outputs[0].outputs) != 1:
        return None
    a = c1.inputs[0]
    h = c1w[0].shape[1]
    r2 = _consumer(dw.outputs[0], "Clip", graph_outputs)
    c3 = _consumer(r2.outputs[0], "Conv", graph_outputs) if _is_relu6(r2) else None
    c3w = _conv(c3, 1)
    if c3w is None or c3w[0].shape != (h, e, 1, 1):
        return None
    add = _consumer(c3.outputs[0], "Add", graph_outputs)
    if add is None or a not in add.inputs:
        return None
    bn = _consumer(add.outputs[0], "BatchNormalization", graph_outputs)
    if bn is None or len(bn.inputs) != 5 or len(bn.outputs) != 1:
        return None
    gamma, beta, mean, var = (const_value(t) for t in bn.inputs[1:])
    if any(v is None for v in (gamma, beta, mean, var)):
        return None
    mul = _consumer(bn.outputs[0], "Mul", graph_outputs)
    if mul is None:
        return None
    other = mul.inputs[1] if mul.inputs[0] is bn.outputs[0] else mul.inputs[0]
    scale = const_value(other)
    if scale is None or scale.size != 1:
        return None
    eps = float(bn.attrs.get("epsilon", 1e-5))
    s4 = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    t4 = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * s4
    folded = compose(c1w[0][:, :, 0, 0], c1w[1], w_dw[:, 0], dwb[1], c3w[0][:, :, 0, 0], c3w[1], s4, t4,
                     float(scale.reshape(())))
    name = (dw.name.rsplit("/DLA/", 1)[0] if "/DLA/" in dw.name else dw.name) + "/RefinerDLA"
    return Match(source=a, output=mul.outputs[0], last=mul, folded=folded, name=name,
                 nodes=[n.name for n in (c1, r1, dw, r2, c3, add, bn, mul)])


def count_depthwise_convs(graph) -> int:
    """Independent count of refinement sites: every DLA has exactly one depthwise 3x3 Conv; nothing else does."""
    n = 0
    for node in graph.nodes:
        if node.op == "Conv" and len(node.inputs) > 1:
            w = const_value(node.inputs[1])
            if w is not None and w.ndim == 4 and w.shape[1] == 1 and w.shape[2:] == (3, 3) \
                    and node.attrs.get("group", 1) == w.shape[0] > 1:
                n += 1
    return n


def _matches(graph) -> list[Match]:
    outputs = {id(t) for t in graph.outputs}
    return [m for m in (_match(n, outputs) for n in list(graph.nodes)
                        if n.op == "Conv" and n.attrs.get("group", 1) > 1) if m is not None]


def refinement_subgraphs(model) -> list[list[str]]:
    """The node names of each refinement subgraph of an (unfused) onnx.ModelProto, e.g. to keep them in float."""
    return [m.nodes for m in _matches(_gs().import_onnx(model))]


def fuse_graph(model, expected: int | None = None):
    """Return (fused onnx.ModelProto, number of fused nodes). Fails unless every refinement site was fused."""
    import onnx

    gs = _gs()
    graph = gs.import_onnx(model)
    if any(n.op == PLUGIN_NAME for n in graph.nodes):
        raise InputError("the graph already holds RefinerDLA nodes (fused twice?)")
    expected = count_depthwise_convs(graph) if expected is None else expected
    matches = _matches(graph)
    if expected == 0 and not matches:
        raise InputError("nothing to fuse: the graph has no attention-refinement subgraph (a Refiner-ViT refining "
                         "block's depthwise 3x3 convolution); fuse takes a graph from refiner-edge export")
    if expected == 0 or len(matches) != expected:
        raise VerificationError(f"found {len(matches)} attention-refinement subgraphs, expected {expected} "
                                "(one per refining block); the graph was not changed")
    for m in matches:
        node = gs.Node(op=PLUGIN_NAME, name=m.name, domain=ONNX_DOMAIN, attrs=plugin_attributes(m.folded),
                       inputs=[m.source], outputs=[m.output])
        m.last.outputs.clear()
        graph.nodes.append(node)
    graph.cleanup().toposort()
    fused = gs.export_onnx(graph)
    if not any(o.domain == ONNX_DOMAIN for o in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid(ONNX_DOMAIN, 1))
    return fused, len(matches)
