"""INT8 calibration on an onnxruntime without precomputed ranges for quantize_static (1.23.2, the newest on
Python 3.10 / JetPack 6) is refused in one line, exit 3, before any image is decoded and with nothing written."""
import time

import onnxruntime.quantization.calibrate as ort_calibrate
import pytest

from .helpers import assert_clean_failure, invoke

pytestmark = pytest.mark.torch_free


def test_int8_calibration_needs_a_quantizer_that_takes_ranges(tiny_plain, sample_photos, tmp_path, monkeypatch):
    if hasattr(ort_calibrate, "save_tensors_data"):
        # this onnxruntime has it: take it away, as Python 3.10's onnxruntime 1.23.2 lacks it
        monkeypatch.delattr(ort_calibrate, "save_tensors_data")
    out = tmp_path / "t.int8.onnx"
    started = time.perf_counter()
    result = invoke("calibrate", "--onnx", tiny_plain, "--images", sample_photos[0].parent, "-o", out)
    assert result.exit_code == 3
    assert_clean_failure(result, "INT8 calibration needs an onnxruntime", "calibrate on a workstation")
    assert list(tmp_path.iterdir()) == [] and time.perf_counter() - started < 30
