"""Engines: TensorRT and TensorRT-RTX builds of our graphs."""
