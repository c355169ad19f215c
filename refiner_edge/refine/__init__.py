"""The fused attention refinement (DLA + adapt_bn + scale as one op, "RefinerDLA"): folding, reference
implementations, ONNX graph surgery, the ONNX Runtime CPU op and the PyTorch op (docs/kernel.md)."""
from ..onnx.session import register_custom_op

PLUGIN_NAME = "RefinerDLA"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "refiner_edge"
ONNX_DOMAIN = "refiner_edge"


# ONNX Runtime runs fused graphs through the reference op (onnxruntime-extensions); registered on this stage's
# import, so that onnx/session.py, below this stage, imports nothing from it
register_custom_op(PLUGIN_NAME, "refiner_edge.refine.ort_op:session_options_and_bytes")
