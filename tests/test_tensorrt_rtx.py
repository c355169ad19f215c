"""A real TensorRT builder (TensorRT-RTX, CPU-only machine, explicit compute capability) accepts our graphs."""
import pytest

pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")

from refiner_edge.errors import VerificationError  # noqa: E402
from refiner_edge.export import export_onnx  # noqa: E402
from refiner_edge.trt_build import build_engine  # noqa: E402

pytestmark = pytest.mark.rtx


@pytest.mark.parametrize("variant", ["refiner-vit-tiny", "refiner-vit-s"])
def test_plain_graph_builds(tmp_path, variant):
    from refiner_edge.api import create_model

    from .helpers import randomize

    path = tmp_path / "m.onnx"
    export_onnx(randomize(create_model(variant), seed=1), path)
    result = build_engine(path, "tensorrt-rtx", compute_capability="SM89", batch=(1, 2, 8))
    assert len(result.engine) > 100_000 and result.layers > 50


def test_fused_graph_is_refused_without_the_plugin(tmp_path, tiny_model):
    pytest.importorskip("onnxruntime_extensions")
    from refiner_edge.refine.surgery import fuse_onnx

    plain = tmp_path / "p.onnx"
    export_onnx(tiny_model, plain)
    fuse_onnx(plain, tmp_path / "f.onnx", verify=False)
    with pytest.raises(VerificationError, match="RefinerDLA|plugin|parse"):
        build_engine(tmp_path / "f.onnx", "tensorrt-rtx", compute_capability="SM89")
