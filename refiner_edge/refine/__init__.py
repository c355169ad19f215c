"""The fused attention refinement (DLA + adapt_bn + scale as one op, "RefinerDLA"): folding, reference
implementations, ONNX graph surgery, the ONNX Runtime CPU op and the PyTorch op. DESIGN.md section 3."""

PLUGIN_NAME = "RefinerDLA"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "refiner_edge"
ONNX_DOMAIN = "refiner_edge"
