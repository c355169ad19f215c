"""ONNX: export from PyTorch, graph helpers, ONNX Runtime sessions for our graphs, and the memory a graph's
activations take (memory.py: the batch that fits a budget)."""
