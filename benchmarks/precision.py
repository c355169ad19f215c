"""CPU figures for the precision stage: accuracy of calibrated graphs, calibration time, TensorRT-RTX builds.

    python benchmarks/precision.py [--skip-digits] [--skip-s] [--crops 64]

1. Digits: a tiny Refiner-ViT trained on scikit-learn's digits (tests/digits.py), calibrated on train/ (512
   images) with each method, validated on 360 held-out digits against PyTorch FP32 (`refiner-edge validate`).
2. Refiner-ViT-S@224, random non-trivial weights (tests/helpers.randomize): calibrated on `--crops` crops of
   scikit-learn's two photographs, validated against PyTorch on the photographs; FP16 and INT8 engines built
   with TensorRT-RTX on CPU (SM89).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refiner_edge.models.factory import create_model  # noqa: E402
from refiner_edge.onnx.export import export_onnx  # noqa: E402
from refiner_edge.precision.calibrate import CalibrateOptions, calibrate_onnx  # noqa: E402
from refiner_edge.runners.validate import validate_onnx  # noqa: E402
from tests.digits import train_tiny_on_digits, write_digit_folders  # noqa: E402
from tests.helpers import randomize  # noqa: E402

RUNS = [("fp16", "max"), ("int8", "max"), ("int8", "entropy"), ("int8", "percentile"), ("int8", "mse")]


def digits(root: Path) -> None:
    write_digit_folders(root)
    t = time.perf_counter()
    checkpoint = train_tiny_on_digits(root / "train", root / "digits.pth")
    print(f"\ndigits: trained refiner-vit-tiny in {time.perf_counter() - t:.1f} s")
    plain = root / "digits.onnx"
    export_onnx(create_model("refiner-vit-tiny", num_classes=10, checkpoint=checkpoint), plain)
    print("| precision | method | calibration s | FP32 acc % | acc % | drop (points) | top-1 agreement % | SQNR dB |")
    print("|---|---|---|---|---|---|---|---|")
    for precision, method in RUNS:
        out = root / f"{precision}.{method}.onnx"
        report = calibrate_onnx(plain, root / "train", out,
                                CalibrateOptions(precision=precision, method=method, num=512)).report
        v = validate_onnx(out, root / "test", labels="imagenet-folder", checkpoint=checkpoint)["metrics"]
        print(f"| {precision} | {method} | {report['calibration']['seconds']:.1f} | {v['reference_accuracy']:.2f} | "
              f"{v['accuracy']:.2f} | {v['accuracy_drop']:.2f} | {v['agreement']:.2f} | {v['sqnr_db']:.1f} |")


def photo_crops(folder: Path, n: int) -> Path:
    """`n` random crops (with flips) of the two photographs, as JPEG files: a calibration folder of real pixels."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    images = load_sample_images().images
    for i in range(n):
        img = images[i % len(images)]
        size = int(rng.integers(200, min(img.shape[:2])))
        y, x = (int(rng.integers(0, d - size)) for d in img.shape[:2])
        crop = Image.fromarray(img[y:y + size, x:x + size])
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(folder / f"crop{i:03d}.jpg", quality=92)
    return folder


def refiner_s(root: Path, crops: int) -> None:

    from refiner_edge.images.samples import sample_image_dir

    checkpoint = root / "s.pth"
    torch.save(randomize(create_model("refiner-vit-s"), seed=3).state_dict(), checkpoint)
    plain = root / "s.onnx"
    export_onnx(create_model("refiner-vit-s", checkpoint=checkpoint), plain)
    calib = photo_crops(root / "crops", crops)
    print(f"\nrefiner-vit-s@224: calibrated on {crops} photo crops, validated on the 2 photographs vs PyTorch")
    print("| precision | method | calibration s | images/s | SQNR dB | cosine | top-1 agreement % | "
          "TensorRT-RTX build s | engine MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for precision, method in (("fp16", "max"), ("int8", "percentile")):
        out = root / f"s.{precision}.onnx"
        report = calibrate_onnx(plain, calib, out,
                                CalibrateOptions(precision=precision, method=method, num=crops)).report
        seconds = report["calibration"]["seconds"]
        v = validate_onnx(out, sample_image_dir(), checkpoint=checkpoint)["metrics"]
        build_s, size = _rtx_build(out)
        print(f"| {precision} | {method} | {seconds:.1f} | {crops / seconds:.1f} | {v['sqnr_db']:.1f} | "
              f"{v['cosine']:.6f} | {v['agreement']:.0f} | {build_s} | {size} |")
        kept = report["fp16"]["fp32_nodes"]
        ops = Counter(k["op"] for k in kept)
        print(f"  ops kept in FP32: {len(kept)} ({', '.join(f'{n} {op}' for op, n in ops.items()) or 'none'})"
              + (f", e.g. {kept[-1]['node']}: {kept[-1]['reason']}" if kept else ""))


def _rtx_build(path: Path):
    try:
        from refiner_edge.engine.build import BuildOptions, build_engine
        from refiner_edge.engine.targets import TARGETS

        t = time.perf_counter()
        engine = path.with_suffix(".engine")
        build_engine(path, engine, BuildOptions(TARGETS["rtx-sm89"], batch=(1, 8, 32)))
        return f"{time.perf_counter() - t:.1f}", f"{engine.stat().st_size / 1e6:.1f}"
    except Exception as e:  # tensorrt-rtx missing: report it in the table
        return "n/a", type(e).__name__


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--skip-s", action="store_true")
    parser.add_argument("--crops", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_digits:
            digits(Path(tmp) / "digits")
        if not args.skip_s:
            refiner_s(Path(tmp), args.crops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
