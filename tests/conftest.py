import os
from pathlib import Path

import numpy as np
import pytest
import torch

from refiner_edge.models.factory import create_model

from .helpers import randomize

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def sample_photos() -> list[Path]:
    """The two photographs that ship inside scikit-learn (china.jpg, flower.jpg)."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    folder = Path(sklearn_datasets.__file__).parent / "images"
    photos = sorted(folder.glob("*.jpg"))
    assert len(photos) == 2, f"expected scikit-learn's two sample photographs in {folder}"
    return photos


@pytest.fixture(scope="session")
def tiny_model():
    return randomize(create_model("refiner-vit-tiny"), seed=1)


@pytest.fixture(scope="session")
def tiny_plain(tmp_path_factory, tiny_model) -> Path:
    """The tiny model's plain ONNX graph and its manifest, shared by the precision and engine tests."""
    from refiner_edge.onnx.export import export_onnx

    path = tmp_path_factory.mktemp("tiny_plain") / "tiny.onnx"
    export_onnx(tiny_model, path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model) -> Path:
    """A checkpoint file shaped like the official ones: timm dict with args Namespace, EMA and raw weights."""
    import argparse

    path = tmp_path_factory.mktemp("ckpt") / "refiner_tiny.pth.tar"
    ema = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    raw = {k: torch.zeros_like(v) for k, v in ema.items()}  # the non-EMA weights must not be the ones loaded
    torch.save({"epoch": 299, "arch": "Refiner_ViT_tiny", "state_dict": raw, "state_dict_ema": ema,
                "args": argparse.Namespace(model="Refiner_ViT_tiny", lr=1e-3, img_size=64, drop_path=0.1),
                "version": 2}, path)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def refiner_s_graphs(tmp_path_factory, sample_photos) -> dict:
    """Refiner-ViT-S (non-trivial random weights, saved as a checkpoint), its plain ONNX and the FP16 and INT8
    graphs `refiner-edge calibrate` makes from it on the two photographs."""
    from refiner_edge.onnx.export import export_onnx
    from refiner_edge.precision.calibrate import calibrate_onnx

    root = tmp_path_factory.mktemp("refiner_s")
    checkpoint = root / "refiner_s.pth"
    torch.save(randomize(create_model("refiner-vit-s"), seed=3).state_dict(), checkpoint)
    graphs = {"checkpoint": checkpoint, "fp32": root / "s.onnx"}
    export_onnx(create_model("refiner-vit-s", checkpoint=checkpoint), graphs["fp32"])
    for precision in ("fp16", "int8"):
        graphs[precision] = root / f"s.{precision}.onnx"
        calibrate_onnx(graphs["fp32"], sample_photos[0].parent, graphs[precision], precision=precision)
    return graphs
