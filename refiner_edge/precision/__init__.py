"""Precision: FP16 and INT8 (Q/DQ) graphs calibrated on real images, strongly typed for TensorRT 10 and 11.

ranges   - activation ranges from ONNX Runtime's calibrators (max, entropy, percentile) and an MSE search
fp16     - which ops stay FP32 (decided from measured ranges) and the FP16 conversion
int8     - Q/DQ placement for TensorRT, per-layer sensitivity and the accuracy budget
tensorrt_cache - the TensorRT 10 (weak typing) calibration cache written from the same ranges, and its reader
calibrate - the `refiner-edge calibrate` stage tying these together
"""
from ..manifest import PRECISIONS  # noqa: F401  (fp32, fp16, int8: the manifest's schema holds the one list)
CALIBRATED = ("fp16", "int8")          # what calibrate makes from a plain FP32 graph
METHODS = ("entropy", "percentile", "max", "mse")   # how INT8 activation ranges are chosen (ranges.py)
