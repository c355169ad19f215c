"""A real TensorRT builder (TensorRT-RTX, CPU-only machine, explicit compute capability) accepts our graphs."""
import pytest

pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")

from refiner_edge.errors import VerificationError  # noqa: E402
from refiner_edge.onnx.export import export_onnx  # noqa: E402
from refiner_edge.engine.builder import build_engine  # noqa: E402

pytestmark = pytest.mark.rtx


@pytest.mark.parametrize("variant", ["refiner-vit-tiny", "refiner-vit-s"])
def test_plain_graph_builds(tmp_path, variant):
    from refiner_edge.models.factory import create_model

    from .helpers import randomize

    path = tmp_path / "m.onnx"
    export_onnx(randomize(create_model(variant), seed=1), path)
    result = build_engine(path, "tensorrt-rtx", compute_capability="SM89", batch=(1, 2, 8))
    assert len(result.engine) > 100_000 and result.layers > 50


def test_fused_graph_is_refused_without_the_plugin(tmp_path, tiny_model):
    pytest.importorskip("onnxruntime_extensions")
    from refiner_edge.refine.fuse import fuse_onnx

    plain = tmp_path / "p.onnx"
    export_onnx(tiny_model, plain)
    fuse_onnx(plain, tmp_path / "f.onnx", verify=False)
    with pytest.raises(VerificationError, match="RefinerDLA|plugin|parse"):
        build_engine(tmp_path / "f.onnx", "tensorrt-rtx", compute_capability="SM89")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_calibrated_refiner_s_builds(refiner_s_graphs, precision):
    """Our Q/DQ placement and FP16 typing are accepted by a real TensorRT builder (strongly typed network)."""
    result = build_engine(refiner_s_graphs[precision], "tensorrt-rtx", compute_capability="SM89", batch=(1, 2, 8))
    print(f"Refiner-ViT-S {precision}: {result.layers} layers, engine {len(result.engine) / 1e6:.1f} MB")
    assert len(result.engine) > 1_000_000 and result.layers > 50
