"""Silencing onnxruntime.quantization and its symbolic shape inference, which precision.ranges, precision.int8 and
onnx.memory call."""
from __future__ import annotations

import contextlib
import io
import logging


@contextlib.contextmanager
def quiet():
    """onnxruntime.quantization prints progress with print() and advises its quant_pre_process on the root logger
    at every call; we skip that pre-processing on purpose (its graph rewrites would hide the refinement subgraphs
    from the fusion), so neither is news to the user."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)
