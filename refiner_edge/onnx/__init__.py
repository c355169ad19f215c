"""ONNX: export from PyTorch, graph helpers, and ONNX Runtime sessions for our graphs."""
