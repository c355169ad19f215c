"""Shared fixtures. Without torch (the torch-free leg of `make test`, as on JetPack 6), tests that need it are skipped
with the reason, and the tiny graph comes from REFINER_EDGE_TEST_GRAPHS, written by `python -m tests.graphs DIR` in
an environment with torch."""
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

HAS_TORCH = importlib.util.find_spec("torch") is not None
GRAPHS_ENV = "REFINER_EDGE_TEST_GRAPHS"
NO_TORCH = "needs PyTorch, which this environment lacks (the core install has none: pip install 'refiner-edge[torch]')"
# fixtures that build a PyTorch model: a test using one needs torch as surely as one marked `torch`
TORCH_FIXTURES = {"tiny_model", "tiny_checkpoint", "refiner_s_graphs"}

if HAS_TORCH:
    import torch

    from refiner_edge.models.factory import create_model

    from .helpers import randomize

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


def marked_torch_free(path: Path) -> bool:
    """Whether a test file's module-level `pytestmark` names the torch_free marker (read, not imported)."""
    import ast

    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            return any(isinstance(n, ast.Attribute) and n.attr == "torch_free" for n in ast.walk(node.value))
    return False


def pytest_ignore_collect(collection_path: Path, config):
    # Without torch only the torch_free files are imported: the others import torch at the top, and `-m torch_free`
    # deselects only after importing. None: pytest decides as usual.
    if not HAS_TORCH and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return None if marked_torch_free(collection_path) else True
    return None


def pytest_collection_modifyitems(config, items):
    if HAS_TORCH:
        return
    skip = pytest.mark.skip(reason=NO_TORCH)
    for item in items:
        if "torch" in item.keywords or TORCH_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(skip)


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
def tiny_plain(tmp_path_factory) -> Path:
    """The tiny model's plain ONNX graph and its manifest, shared by the precision and engine tests."""
    from .graphs import TINY, write_graphs

    folder = tmp_path_factory.mktemp("tiny_plain")
    if HAS_TORCH:
        write_graphs(folder)
    else:
        made = Path(os.environ.get(GRAPHS_ENV, "")) if os.environ.get(GRAPHS_ENV) else None
        if made is None or not (made / TINY).is_file():
            pytest.skip(f"no torch to export the tiny graph, and {GRAPHS_ENV} names no folder holding {TINY} "
                        "(python -m tests.graphs DIR writes it where torch is installed)")
        for name in (TINY, TINY + ".json"):
            shutil.copy2(made / name, folder / name)
    return folder / TINY


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


@pytest.fixture(scope="session")
def tiny_engine(tmp_path_factory, tiny_plain) -> Path:
    """The tiny graph built for rtx-sm89 with a 1:2:8 profile (TensorRT-RTX on the CPU): what deploy tests deploy."""
    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]'): no engine to deploy")
    from refiner_edge.engine.build import BuildOptions, build_engine
    from refiner_edge.engine.targets import TARGETS

    out = tmp_path_factory.mktemp("deploy_engine") / "tiny.engine"
    build_engine(tiny_plain, out, BuildOptions(TARGETS["rtx-sm89"], batch=(1, 2, 8)))
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def refiner_s_graphs(tmp_path_factory, sample_photos) -> dict:
    """Refiner-ViT-S (non-trivial random weights, saved as a checkpoint), its plain ONNX and the FP16 and INT8
    graphs `refiner-edge calibrate` makes from it on the two photographs."""
    from refiner_edge.onnx.export import export_onnx
    from refiner_edge.precision.calibrate import CalibrateOptions, calibrate_onnx

    root = tmp_path_factory.mktemp("refiner_s")
    checkpoint = root / "refiner_s.pth"
    torch.save(randomize(create_model("refiner-vit-s"), seed=3).state_dict(), checkpoint)
    graphs = {"checkpoint": checkpoint, "fp32": root / "s.onnx"}
    export_onnx(create_model("refiner-vit-s", checkpoint=checkpoint), graphs["fp32"])
    for precision in ("fp16", "int8"):
        graphs[precision] = root / f"s.{precision}.onnx"
        calibrate_onnx(graphs["fp32"], sample_photos[0].parent, graphs[precision],
                       CalibrateOptions(precision=precision))
    return graphs


@pytest.fixture(scope="session")
def serve_python() -> Path:
    """The interpreter `refiner-edge serve` runs under: this one where it can serve, else serve's own environment
    (PyTriton with numpy<2; made here on first use, a minute or two); skipped with the reason where it cannot be."""
    from refiner_edge.deploy import serve_env
    from refiner_edge.deploy.serve import serving_unavailable
    from refiner_edge.errors import MissingDependencyError

    if serving_unavailable() is None:
        return Path(sys.executable)
    try:
        return serve_env.ensure(progress=lambda message: print(f"note: {message}", file=sys.stderr))
    except MissingDependencyError as e:
        pytest.skip(str(e))
