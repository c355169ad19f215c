"""Precision: FP16 and INT8 (Q/DQ) graphs calibrated on real images, strongly typed for TensorRT 10 and 11.

ranges   - activation ranges from ONNX Runtime's calibrators (max, entropy, percentile) and an MSE search
fp16     - which ops stay FP32 (decided from measured ranges) and the FP16 conversion
int8     - Q/DQ placement for TensorRT, per-layer sensitivity and the accuracy budget
metrics  - agreement, cosine, SQNR and accuracy against a reference, with per-precision thresholds
tensorrt_cache - the TensorRT 10 (weak typing) calibration cache written from the same ranges, and its reader
calibrate - the `refiner-edge calibrate` stage tying these together
"""
PRECISIONS = ("fp32", "fp16", "int8")


def graph_precision(model) -> str:
    """fp32, fp16 or int8, read from the graph itself (Q/DQ nodes mean int8, FP16 weights mean fp16)."""
    from onnx import TensorProto

    ops = {n.op_type for n in model.graph.node}
    if "QuantizeLinear" in ops or "DequantizeLinear" in ops:
        return "int8"
    if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"
