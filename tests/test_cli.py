import json

import numpy as np
import pytest
import torch

from refiner_edge import __version__
from refiner_edge.models.factory import create_model
from refiner_edge.images.preprocess import Preprocess

from .helpers import assert_clean_failure, invoke

TINY = ["--variant", "refiner-vit-tiny"]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, tiny_checkpoint):
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    result = invoke("export", *TINY, "--checkpoint", tiny_checkpoint, "-o", out)
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout
    return out


def test_version_and_help():
    assert invoke("--version").stdout.strip() == f"refiner-edge {__version__}"
    result = invoke("--help")
    assert result.exit_code == 0
    for cmd in ("export", "fuse", "infer", "calibrate", "validate", "info"):
        assert cmd in result.stdout


def test_info_lists_runtimes():
    result = invoke("info")
    assert result.exit_code == 0
    for key in ("torch", "onnxruntime", "tensorrt", "tensorrt_rtx", "cuda devices", "nvcc"):
        assert key in result.stdout


def test_infer_torch_json_on_real_photos(sample_photos, tiny_checkpoint):
    result = invoke("infer", *sample_photos, *TINY, "--checkpoint", tiny_checkpoint, "--json", "--topk", "3")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["image"] for d in data] == [str(p) for p in sample_photos]
    for d in data:
        preds = d["predictions"]
        assert len(preds) == 3
        assert preds[0]["prob"] >= preds[1]["prob"] >= preds[2]["prob"] > 0
        assert {"index", "label", "prob"} == set(preds[0])
        assert isinstance(preds[0]["label"], str) and preds[0]["label"]


def test_same_logits_through_create_model_infer_and_onnx(sample_photos, tiny_checkpoint, tiny_onnx):
    """Done-when of the foundation: official-style checkpoint -> same predictions on all three paths."""
    model = create_model("refiner-vit-tiny", checkpoint=tiny_checkpoint)
    pre = Preprocess.from_config(model.cfg)
    x = torch.from_numpy(np.stack([pre.load(p) for p in sample_photos]))
    with torch.no_grad():
        probs = torch.softmax(model(x).double(), -1).numpy()
    via_torch = json.loads(invoke("infer", *sample_photos, *TINY, "--checkpoint", tiny_checkpoint,
                                  "--json", "--topk", "5").stdout)
    via_ort = json.loads(invoke("infer", *sample_photos, "--backend", "onnxruntime", "--onnx", tiny_onnx,
                                "--json", "--topk", "5").stdout)
    for i, (t, o) in enumerate(zip(via_torch, via_ort)):
        top = np.argsort(-probs[i])[:5]
        assert [p["index"] for p in t["predictions"]] == top.tolist()
        assert [p["index"] for p in o["predictions"]] == top.tolist()
        for p_t, p_o in zip(t["predictions"], o["predictions"]):
            assert p_t["prob"] == pytest.approx(probs[i, p_t["index"]], rel=1e-5)
            assert p_o["prob"] == pytest.approx(p_t["prob"], rel=1e-4)


def test_infer_table_and_directory(sample_photos, tiny_onnx):
    folder = sample_photos[0].parent
    result = invoke("infer", folder, "--backend", "onnxruntime", "--onnx", tiny_onnx, "--topk", "2",
                    "--batch-size", "1")
    assert result.exit_code == 0, result.output
    assert "china.jpg" in result.stdout and "flower.jpg" in result.stdout
    assert "random" not in result.stderr  # the ONNX came from a checkpoint


def test_random_weights_are_announced(sample_photos):
    result = invoke("infer", sample_photos[0], *TINY, "--json")
    assert result.exit_code == 0
    assert "weights are random" in result.stderr


def test_export_fixed_batch_and_manifest(tmp_path):
    out = tmp_path / "m.onnx"
    result = invoke("export", *TINY, "--batch", "2", "--img-size", "96", "-o", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "m.onnx.json").read_text())
    assert manifest["graph"]["batch"] == 2 and manifest["model"]["img_size"] == 96
    assert manifest["model"]["checkpoint_sha256"] is None


def test_missing_image(tmp_path):
    assert_clean_failure(invoke("infer", tmp_path / "nope.jpg", *TINY), "no such file")


def test_corrupt_image(tmp_path, sample_photos):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    result = invoke("infer", bad, *TINY)
    assert_clean_failure(result, "bad.jpg")
    assert result.exit_code == 2
    # with good images beside it, the good ones are still classified
    mixed = invoke("infer", bad, sample_photos[0], *TINY, "--json")
    assert mixed.exit_code == 2
    data = json.loads(mixed.stdout)
    assert "error" in data[0] and data[1]["predictions"]


def test_empty_directory(tmp_path):
    assert_clean_failure(invoke("infer", tmp_path, *TINY), "holds no images")


def test_wrong_and_malformed_checkpoint(tmp_path, sample_photos, tiny_checkpoint):
    assert_clean_failure(invoke("infer", sample_photos[0], "--variant", "refiner-vit-s",
                                "--checkpoint", tiny_checkpoint), "does not match refiner-vit-s")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    assert_clean_failure(invoke("infer", sample_photos[0], *TINY, "--checkpoint", junk),
                         "not a readable PyTorch checkpoint")


def test_bad_options(tmp_path, sample_photos):
    assert_clean_failure(invoke("export", *TINY, "--opset", "11", "-o", tmp_path / "x.onnx"), "opset")
    assert_clean_failure(invoke("infer", sample_photos[0], "--variant", "refiner-vit-xl"), "unknown variant")
    assert_clean_failure(invoke("infer", sample_photos[0], "--backend", "onnxruntime", "--onnx",
                                tmp_path / "absent.onnx"), "not found")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    assert_clean_failure(invoke("infer", sample_photos[0], "--backend", "onnxruntime", "--onnx", garbage),
                         "ONNX Runtime cannot load")
    assert not (tmp_path / "x.onnx").exists()


def test_fuse_command_and_export_fuse(tmp_path, tiny_onnx, sample_photos):
    pytest.importorskip("onnxruntime_extensions", reason="the reference RefinerDLA op needs it")
    fused = tmp_path / "fused.onnx"
    result = invoke("fuse", tiny_onnx, "-o", fused)
    assert result.exit_code == 0, result.output
    assert "fused 2 refinement subgraphs" in result.stdout and "PASS" in result.stdout
    plain_preds = json.loads(invoke("infer", sample_photos[0], "--backend", "onnxruntime", "--onnx", tiny_onnx,
                                    "--json").stdout)
    fused_preds = json.loads(invoke("infer", sample_photos[0], "--backend", "onnxruntime", "--onnx", fused,
                                    "--json").stdout)
    assert [p["index"] for p in fused_preds[0]["predictions"]] == [p["index"] for p in plain_preds[0]["predictions"]]
    direct = tmp_path / "direct.onnx"
    result = invoke("export", *TINY, "--fuse", "-o", direct)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "direct.onnx.json").read_text())["graph"]["plugin"]["nodes"] == 2


def test_fuse_bad_input(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk")
    assert_clean_failure(invoke("fuse", junk, "-o", tmp_path / "out.onnx"), "not a readable ONNX model")
    assert_clean_failure(invoke("fuse", tmp_path / "absent.onnx", "-o", tmp_path / "out.onnx"), "not found")
    assert not (tmp_path / "out.onnx").exists()


def test_export_fuse_failure_keeps_earlier_artifact(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime_extensions", reason="the reference RefinerDLA op needs it")
    from refiner_edge.errors import VerificationError
    from refiner_edge.refine import fuse as fuse_stage

    out = tmp_path / "m.onnx"
    out.write_bytes(b"earlier fused graph")

    def broken(*args, **kwargs):  # failure injection: the fusion step fails after a good export
        raise VerificationError("found 0 attention-refinement subgraphs, expected 2")

    monkeypatch.setattr(fuse_stage, "fuse_onnx", broken)
    result = invoke("export", *TINY, "--fuse", "-o", out)
    assert_clean_failure(result, "found 0 attention-refinement subgraphs")
    assert out.read_bytes() == b"earlier fused graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
