"""Handing a model to servers and pipelines: Triton Inference Server model repositories (triton.py), a real Triton
server in front of the ONNX Runtime or TensorRT runner (serve.py, through PyTriton), and DeepStream nvinfer
configurations (deepstream.py). Nothing here is imported by `refiner-edge --help`."""
