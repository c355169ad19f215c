"""Accuracy of the calibrated graphs on real images (CPU, ONNX Runtime), through the CLI as users run it.

- a tiny Refiner-ViT trained here on scikit-learn's handwritten digits (real, labelled images) loses at most
  1.0 top-1 point in INT8 and 0.2 in FP16 on held-out digits;
- Refiner-ViT-S with non-trivial random weights reports SQNR and cosine against PyTorch on real photographs.
"""
import json

import numpy as np
import pytest

from refiner_edge.models.factory import create_model
from refiner_edge.onnx.export import export_onnx

from .digits import HELD_OUT, train_tiny_on_digits, write_digit_folders
from .helpers import invoke


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Digit PNGs in class folders, a tiny Refiner-ViT trained on train/, and its plain ONNX."""
    pytest.importorskip("sklearn.datasets")
    root = write_digit_folders(tmp_path_factory.mktemp("digits"))
    checkpoint = train_tiny_on_digits(root / "train", root / "digits.pth")
    onnx_path = root / "digits.onnx"
    export_onnx(create_model("refiner-vit-tiny", num_classes=10, checkpoint=checkpoint), onnx_path)
    return {"root": root, "checkpoint": checkpoint, "onnx": onnx_path}


def _calibrate_and_validate(digits, precision):
    out = digits["root"] / f"digits.{precision}.onnx"
    cal = invoke("calibrate", "--onnx", digits["onnx"], "--images", digits["root"] / "train", "-o", out,
                 "--precision", precision, "--num", 256, "--json")
    assert cal.exit_code == 0, cal.output
    val = invoke("validate", "--onnx", out, "--images", digits["root"] / "test", "--labels", "imagenet-folder",
                 "--checkpoint", digits["checkpoint"], "--json")
    report = json.loads(val.stdout)
    print(f"{precision}: calibrated in {json.loads(cal.stdout)['calibration']['seconds']} s; held-out "
          f"{report['metrics']}")
    assert val.exit_code == (0 if report["passed"] else 4), val.output
    return report


def test_digits_int8_loses_at_most_one_point(digits):
    report = _calibrate_and_validate(digits, "int8")
    m = report["metrics"]
    assert m["images"] == HELD_OUT
    assert m["reference_accuracy"] >= 95.0  # the training worked: the comparison is meaningful
    assert m["accuracy_drop"] <= 1.0 and report["passed"]


def test_digits_fp16_loses_at_most_a_fifth_of_a_point(digits):
    report = _calibrate_and_validate(digits, "fp16")
    assert report["metrics"]["accuracy_drop"] <= 0.2 and report["passed"]


@pytest.mark.slow
def test_refiner_s_reports_sqnr_and_cosine_on_photos(refiner_s_graphs, sample_photos):
    figures = {}
    for precision in ("fp16", "int8"):
        result = invoke("validate", "--onnx", refiner_s_graphs[precision], "--images", sample_photos[0].parent,
                        "--checkpoint", refiner_s_graphs["checkpoint"], "--json")
        report = json.loads(result.stdout)
        m = report["metrics"]
        print(f"Refiner-ViT-S {precision} vs PyTorch on 2 photographs: SQNR {m['sqnr_db']:.2f} dB, cosine "
              f"{m['cosine']:.6f}, top-1 agreement {m['agreement']:.0f}%, max abs {m['max_abs']:.4g}")
        assert report["precision"] == precision and np.isfinite(m["sqnr_db"]) and m["images"] == 2
        figures[precision] = m
    assert figures["fp16"]["sqnr_db"] > figures["int8"]["sqnr_db"] > 10.0
    assert figures["fp16"]["cosine"] > 0.999 and figures["int8"]["cosine"] > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_refiner_s_calibrated_graphs_fuse(refiner_s_graphs, precision, tmp_path):
    pytest.importorskip("onnxruntime_extensions")
    from refiner_edge.refine.fuse import fuse_onnx

    result = fuse_onnx(refiner_s_graphs[precision], tmp_path / "fused.onnx")
    assert result.report["fused_nodes"] == 8 and result.comparison


@pytest.mark.slow
def test_demo_int8_graph_fuses_as_the_readme_says(tmp_path, sample_photos):
    """The README's chain on `make demo`'s own model (Refiner-ViT-S, seeded random weights): export, calibrate INT8
    on the photographs, `refiner-edge fuse`. Its check used to feed uniform noise and fail (max relative error
    1.4e-2 > 1e-2); on the photographs the fused graph gives the INT8 graph's predictions."""
    pytest.importorskip("onnxruntime_extensions")
    plain, int8, fused = tmp_path / "s.onnx", tmp_path / "s.int8.onnx", tmp_path / "s.int8.fused.onnx"
    assert invoke("export", "--variant", "refiner-vit-s", "-o", plain).exit_code == 0
    assert invoke("calibrate", "--onnx", plain, "--images", sample_photos[0].parent, "-o", int8).exit_code == 0
    result = invoke("fuse", int8, "-o", fused, "--json")
    assert result.exit_code == 0, result.output
    check = json.loads(result.stdout)["verification"]
    assert check["passed"] and check["images"] == 2 and check["agreement"] == 100.0
    manifest = json.loads(fused.with_name(fused.name + ".json").read_text())
    assert [v["stage"] for v in manifest["verification"]] == ["export", "calibrate", "fuse"]
    assert manifest["graph"]["precision"] == "int8" and manifest["graph"]["plugin"]["nodes"] == 8
