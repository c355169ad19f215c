import json

import numpy as np
import onnx
import pytest
import torch

from refiner_edge.onnx import export as export_mod
from refiner_edge.models.factory import create_model
from refiner_edge.errors import InputError, VerificationError
from refiner_edge.compare import Comparison
from refiner_edge.onnx.export import export_onnx, fold_batchnorms
from refiner_edge.onnx.session import ort_session

from .helpers import randomize


def _ort_vs_torch(model, path, batch, seed=0):
    x = np.random.default_rng(seed).standard_normal((batch, 3, model.cfg.img_size, model.cfg.img_size))
    x = x.astype(np.float32)
    got = ort_session(path, ["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return Comparison.of(got, ref, {"max_rel_error": 1e-4})


@pytest.mark.parametrize("img", [64, 96])
def test_tiny_export_matches_torch_at_two_resolutions_and_batches(tmp_path, img):
    model = randomize(create_model("refiner-vit-tiny", img_size=img), seed=img)
    path = tmp_path / "tiny.onnx"
    export_onnx(model, path)
    manifest = json.loads((tmp_path / "tiny.onnx.json").read_text())
    for batch in (1, 3):
        result = _ort_vs_torch(model, path, batch, seed=batch)
        assert result, str(result)
    assert manifest["model"]["img_size"] == img and manifest["graph"]["batch"] == "dynamic"
    assert manifest["graph"]["opset"] == 17 and manifest["schema_version"] == 2   # schema 2: one img_size (model.img_size)
    assert manifest["verification"][0]["metrics"]["max_rel"] < 1e-4
    assert manifest["preprocess"]["resize_size"] == int(img / 0.9)
    assert "torch" in manifest["versions"] and "onnxruntime" in manifest["versions"]


def test_refiner_s_export_matches_torch(tmp_path):
    model = randomize(create_model("refiner-vit-s"), seed=7)
    path = tmp_path / "s.onnx"
    export_onnx(model, path)
    assert _ort_vs_torch(model, path, batch=2)


def test_plain_graph_uses_standard_ops_and_folds_conv_bns(tmp_path, tiny_model):
    path = tmp_path / "tiny.onnx"
    export_onnx(tiny_model, path, batch=2, opset=18)
    graph = onnx.load(str(path))
    assert all(n.domain in ("", "ai.onnx") for n in graph.graph.node)
    ops = [n.op_type for n in graph.graph.node]
    # only adapt_bn (after the residual add, not after a conv) stays a BatchNormalization: one per refining block
    assert ops.count("BatchNormalization") == len(tiny_model.cfg.refining_blocks)
    assert graph.opset_import[0].version == 18
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 2


def test_fold_batchnorms_preserves_output(tiny_model):
    folded = fold_batchnorms(tiny_model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(folded(x), tiny_model(x), atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.patch_embed.modules())


def test_bad_options(tmp_path, tiny_model):
    with pytest.raises(InputError, match="opset"):
        export_onnx(tiny_model, tmp_path / "x.onnx", opset=13)
    with pytest.raises(InputError, match="batch"):
        export_onnx(tiny_model, tmp_path / "x.onnx", batch=0)
    assert not list(tmp_path.iterdir())


def test_failed_verification_keeps_earlier_artifact(tmp_path, tiny_model, monkeypatch):
    path = tmp_path / "tiny.onnx"
    export_onnx(tiny_model, path)
    before = path.read_bytes()
    manifest_before = (tmp_path / "tiny.onnx.json").read_text()
    # failure injection: pretend ONNX Runtime disagreed with PyTorch
    monkeypatch.setattr(export_mod.Comparison, "of", classmethod(
        lambda cls, a, b, thresholds=None, labels=None: cls(images=len(a), max_abs=1.0, max_rel=1.0, agreement=0.0,
                                                            cosine=0.0, sqnr_db=0.0, thresholds=thresholds)))
    with pytest.raises(VerificationError, match="does not match PyTorch"):
        export_onnx(tiny_model, path)
    assert path.read_bytes() == before
    assert (tmp_path / "tiny.onnx.json").read_text() == manifest_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx", "tiny.onnx.json"]


def test_comparison_object():
    ok = Comparison.of(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-6]), {"max_rel_error": 1e-4})
    bad = Comparison.of(np.array([1.0, np.nan]), np.array([1.0, 2.0]), {"max_rel_error": 1e-4})
    assert ok and "PASS" in str(ok)
    assert not bad and "FAIL" in str(bad)
