"""Runners: one small class per runtime (PyTorch, ONNX Runtime, TensorRT) mapping a preprocessed batch to logits,
and what is built on them: classify (`infer`) and validate."""
