"""Accuracy of the calibrated graphs on real images (CPU, ONNX Runtime), through the CLI as users run it.

- a tiny Refiner-ViT trained here on scikit-learn's handwritten digits (real, labelled images) loses at most
  1.0 top-1 point in INT8 and 0.2 in FP16 on held-out digits;
- Refiner-ViT-S with non-trivial random weights reports SQNR and cosine against PyTorch on real photographs.
"""
import json

import numpy as np
import pytest
import torch

from refiner_edge.api import create_model
from refiner_edge.export import export_onnx
from refiner_edge.preprocess import Preprocess

from .helpers import invoke

HELD_OUT = 360
EPOCHS = 10


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Digits as PNG files in class folders (train/ and test/), a tiny Refiner-ViT trained on train/, its ONNX."""
    from PIL import Image

    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    root = tmp_path_factory.mktemp("digits")
    order = np.random.default_rng(0).permutation(len(data.images))
    for split, indices in (("test", order[:HELD_OUT]), ("train", order[HELD_OUT:])):
        for i in indices:
            path = root / split / str(data.target[i]) / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((data.images[i] * (255 / 16)).astype(np.uint8), "L").save(path)

    torch.manual_seed(0)
    model = create_model("refiner-vit-tiny", num_classes=10)
    pre = Preprocess.from_config(model.cfg)  # trained on exactly what `calibrate`/`validate` will feed it
    files = sorted((root / "train").rglob("*.png"))
    x = torch.from_numpy(np.stack([pre.load(f) for f in files]))
    y = torch.tensor([int(f.parent.name) for f in files])
    model.train()
    steps = EPOCHS * ((len(x) + 63) // 64)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    checkpoint = root / "digits.pth"
    torch.save(model.state_dict(), checkpoint)
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
