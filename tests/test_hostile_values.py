"""Hostile values (issue 27, items 5-10, 18, 19): inputs whose numbers, not their files, are the problem. Each one
ends in one `error:` line and a documented exit code before any work, or is computed as documented."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from refiner_edge.errors import InputError
from refiner_edge.images import transform

from .helpers import assert_clean_failure, invoke


# ------------------------------------------------------------------------------------------------ 5: aspect ratio

def test_extreme_aspect_ratio_is_refused_before_resampling():
    # the bound is the C++ library's (cpp/src/image.cpp): the resized image may hold 4 x MAX_PIXELS pixels
    size = transform.resize_size(224, 0.9)
    longest = 4 * transform.MAX_PIXELS // size
    assert transform.resized_shape(1, longest // size, size) == (size, longest // size * size)
    with pytest.raises(transform.ImageError):
        transform.resized_shape(1, longest // size + 1, size)
    assert transform.resized_shape(640, 480, size) == (int(size * 640 / 480), size)
    # 1 x 30000 pixels passes the decompression-bomb limit; its short-side resize to 248 would be 248 x 7.4M
    img = Image.new("RGB", (1, 30000), (10, 20, 30))
    with pytest.raises(transform.ImageError, match=r"aspect ratio \(1x30000\) cannot be resized"):
        transform.evaluate(img, 224, 0.9, (0.5,) * 3, (0.5,) * 3, "bicubic")


def test_infer_refuses_the_extreme_image_and_classifies_the_others(tiny_plain, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    # the tiny model's short side is 71: 1 x 6M pixels (a 6 kB PNG) would resize to 71 x 426M
    Image.new("L", (1, 6_000_000), 200).save(folder / "a_strip.png")
    Image.new("RGB", (80, 60), (10, 200, 10)).save(folder / "b_good.png")
    r = invoke("infer", folder, "--onnx", tiny_plain, "--json")
    assert r.exit_code == 2, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "a_strip.png" in errors[0] and "aspect ratio (1x6000000)" in errors[0], r.stderr
    results = json.loads(r.stdout)
    good = [x for x in results if x["image"].endswith("b_good.png")]
    assert good and good[0]["predictions"], results


def test_serve_refuses_the_extreme_image_with_one_line():
    import io

    from refiner_edge.deploy.serve import decode_image
    from refiner_edge.images.preprocess import Preprocess

    buf = io.BytesIO()
    Image.new("L", (1, 30000), 0).save(buf, "PNG")
    pre = Preprocess(224, 0.9, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(InputError, match=r"aspect ratio \(1x30000\) cannot be resized to a short side of 248"):
        decode_image(buf.getvalue(), pre)


# ------------------------------------------------------------------------------------------------ 7, 8: zero heads

def _strict(text: str):
    """json.loads as RFC 8259 reads: a bare NaN or Infinity token is an error."""
    def refuse(token):
        raise AssertionError(f"{token} in JSON output")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def zero_head(tmp_path_factory):
    """The tiny model with a zero-initialised head: every logit is 0 (a fresh fine-tuning head looks like this)."""
    torch = pytest.importorskip("torch")
    from refiner_edge.models.factory import create_model
    from refiner_edge.onnx.export import export_onnx

    from .helpers import randomize

    model = randomize(create_model("refiner-vit-tiny"), seed=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("head.", "aux_head.")):
                p.zero_()
    path = tmp_path_factory.mktemp("zero_head") / "zero.onnx"
    export_onnx(model, path)
    return path


def test_cosine_of_identical_zero_outputs_is_one():
    from refiner_edge.compare import Comparison

    zeros = np.zeros((3, 10))
    c = Comparison.of(zeros, zeros, {"min_cosine": 0.99999, "min_sqnr_db": 60.0, "min_agreement": 99.0})
    assert c.cosine == 1.0 and c.sqnr_db == math.inf and c.max_abs == 0.0 and bool(c), str(c)
    one_zero = Comparison.of(np.zeros((1, 4)), np.ones((1, 4)))
    assert one_zero.cosine == 0.0
    mixed = Comparison.of(np.array([[0.0, 0.0], [1.0, 2.0]]), np.array([[0.0, 0.0], [1.0, 2.0]]))
    assert mixed.cosine == pytest.approx(1.0)
    nan = Comparison.of(np.full((1, 4), np.nan), np.ones((1, 4)), {"min_cosine": 0.5})
    assert not nan   # NaN still fails


def test_manifest_of_a_zero_head_is_strict_json(zero_head):
    data = _strict((zero_head.parent / "zero.onnx.json").read_text())
    metrics = data["verification"][0]["metrics"]
    assert metrics["max_abs"] == 0.0 and metrics["sqnr_db"] == "Infinity", metrics


def test_validate_a_zero_head_graph_against_itself_passes_with_strict_json(zero_head, tmp_path):
    Image.new("RGB", (90, 70), (120, 30, 200)).save(tmp_path / "a.png")
    r = invoke("validate", "--images", tmp_path, "--onnx", zero_head, "--reference", zero_head, "--json")
    assert r.exit_code == 0, r.output
    report = _strict(r.stdout)
    assert report["metrics"]["cosine"] == 1.0 and report["metrics"]["sqnr_db"] == "Infinity", report


def test_infer_json_never_prints_nan(tiny_plain, tmp_path, monkeypatch):
    from refiner_edge.runners import classify

    Image.new("RGB", (90, 70), (120, 30, 200)).save(tmp_path / "a.png")
    real = classify.topk

    def poisoned(logits, k, num_classes):   # failure injection: a broken graph's NaN logits
        return real(np.full_like(logits, np.nan), k, num_classes)

    monkeypatch.setattr(classify, "topk", poisoned)
    r = invoke("infer", tmp_path / "a.png", "--onnx", tiny_plain, "--json", "--topk", "2")
    probs = [p["prob"] for p in _strict(r.stdout)[0]["predictions"]]
    assert probs == ["NaN", "NaN"], r.stdout


def test_manifest_reader_refuses_bare_nan(tiny_plain, tmp_path):
    from refiner_edge.manifest import read_manifest

    import shutil
    graph = tmp_path / "g.onnx"
    shutil.copy(tiny_plain, graph)
    text = (tiny_plain.parent / (tiny_plain.name + ".json")).read_text()
    (tmp_path / "g.onnx.json").write_text(text.replace('"crop_pct": 0.9', '"crop_pct": NaN'))
    with pytest.raises(InputError, match="NaN is not a JSON value"):
        read_manifest(graph, verify=False)


# ------------------------------------------------------------------------------------------------ 6, 18: options

@pytest.mark.parametrize("args, needle", [
    (["--iterations", "1000000000000"], "--iterations"),
    (["--warmup", "1000000000000"], "--warmup"),
    (["--triton", "localhost:1", "--concurrency", "100000000"], "--concurrency"),
])
def test_bench_bounds_its_counts_before_any_work(args, needle):
    # no model is named: a bound checked before the work fails on the option, not on the missing model
    r = invoke("bench", *args)
    assert r.exit_code == 2
    assert_clean_failure(r, needle)


def test_bench_refuses_a_batch_larger_than_memory(tiny_plain):
    r = invoke("bench", "--onnx", tiny_plain, "--batch", "1000000000000", "--iterations", "1")
    assert r.exit_code == 2
    assert_clean_failure(r, "--batch 1000000000000", "GiB")


def test_bench_help_states_the_bound():
    r = invoke("bench", "--help")
    assert "1,000,000" in " ".join(r.stdout.split())


@pytest.fixture
def no_work(monkeypatch):
    """Failure injection: calibration must not begin; reaching it fails the test."""
    from refiner_edge.precision import calibrate as stage

    def forbidden(*a, **k):
        raise AssertionError("calibration ran before the option was checked")

    monkeypatch.setattr(stage, "collect_ranges", forbidden)
    monkeypatch.setattr(stage, "load_float_graph", forbidden)


@pytest.mark.parametrize("args, needle", [
    (["--memory", "1e400"], "--memory"),
    (["--memory", "inf"], "--memory"),
    (["--memory", "nan"], "--memory"),
    (["--tensorrt-version", "foo"], "--tensorrt-version"),
    (["--tensorrt-version", "10"], "--tensorrt-version"),
    (["--seed", "-1"], "--seed"),
    (["--min-sqnr", "nan", "--precision", "int8"], "--min-sqnr"),
    (["--min-sqnr", "inf", "--precision", "int8"], "--min-sqnr"),
])
def test_calibrate_refuses_bad_options_before_the_work(tiny_plain, tmp_path, no_work, args, needle):
    Image.new("RGB", (80, 60), (1, 2, 3)).save(tmp_path / "a.png")
    r = invoke("calibrate", "--onnx", tiny_plain, "--images", tmp_path, "-o", tmp_path / "c.onnx", *args)
    assert r.exit_code == 2, r.output
    assert_clean_failure(r, needle)
    assert not (tmp_path / "c.onnx").exists()


@pytest.mark.parametrize("line, needle", [
    ("/etc/hostname\n", "not a name relative to --images"),
    ("../outside.png\n", "not a name relative to --images"),
    (b"caf\xe9.png\n", "not UTF-8"),
])
def test_calibration_list_names_only_images_inside_the_folder(tiny_plain, tmp_path, line, needle):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (80, 60), (1, 2, 3)).save(images / "a.png")
    Image.new("RGB", (80, 60), (1, 2, 3)).save(tmp_path / "outside.png")
    listing = tmp_path / "list.txt"
    listing.write_bytes(line if isinstance(line, bytes) else line.encode())
    r = invoke("calibrate", "--onnx", tiny_plain, "--images", images, "-o", tmp_path / "c.onnx", "--list", listing)
    assert r.exit_code == 2, r.output
    assert_clean_failure(r, needle)


# ------------------------------------------------------------------------------------------------ 9, 18: checkpoints

def _checkpoint(tmp_path, tiny_model, name, change):
    torch = pytest.importorskip("torch")
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    change(state)
    path = tmp_path / name
    torch.save({"state_dict": state}, path)
    return path


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_checkpoint_with_nonfinite_weights_is_refused_naming_the_tensor(tmp_path, tiny_model, value):
    def poison(state):
        state["blocks.1.attn.DLA.conv_exp.weight"].view(-1)[3] = value

    ckpt = _checkpoint(tmp_path, tiny_model, "bad.pth", poison)
    Image.new("RGB", (80, 60), (1, 2, 3)).save(tmp_path / "a.png")
    for args in (["infer", tmp_path / "a.png"], ["export", "-o", tmp_path / "x.onnx"]):
        r = invoke(*args, "--variant", "refiner-vit-tiny", "--checkpoint", ckpt)
        assert r.exit_code == 2, r.output
        assert_clean_failure(r, "NaN or infinite weights", "blocks.1.attn.DLA.conv_exp.weight (1 of")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("shape", [(1, 0, 48), (0,), (1, 1, 48)])
def test_checkpoint_with_an_empty_pos_embed_is_one_line(tmp_path, tiny_model, shape):
    import torch

    def empty(state):
        state["pos_embed"] = torch.zeros(shape)

    ckpt = _checkpoint(tmp_path, tiny_model, "empty.pth", empty)
    r = invoke("export", "-o", tmp_path / "x.onnx", "--variant", "refiner-vit-tiny", "--checkpoint", ckpt)
    assert r.exit_code == 2, r.output
    assert_clean_failure(r, "empty.pth: pos_embed has shape")


# ------------------------------------------------------------------------------------------------ 19: manifests

def test_the_good_manifest_of_the_case_table_is_read():
    from refiner_edge.manifest import parse_manifest

    from .manifest_cases import good_manifest

    assert parse_manifest(good_manifest(), "M").engine.profiles[0].max == [8, 3, 224, 224]


@pytest.mark.parametrize("case", __import__("tests.manifest_cases", fromlist=["CASES"]).CASES, ids=lambda c: c[0])
def test_hand_edited_manifests_are_refused_when_read(case):
    from refiner_edge.manifest import parse_manifest

    from .manifest_cases import edited, text

    name, path, value, message = case
    with pytest.raises(InputError) as e:
        parse_manifest(json.loads(text(edited(path, value))), "M")
    assert str(e.value) == f"M: {message}"


def test_deploy_triton_refuses_a_hand_edited_manifest(tiny_plain, tmp_path):
    import shutil

    graph = tmp_path / "g.onnx"
    shutil.copy(tiny_plain, graph)
    data = json.loads((tiny_plain.parent / (tiny_plain.name + ".json")).read_text())
    data["preprocess"]["std"] = [0.0, 0.0, 0.0]
    (tmp_path / "g.onnx.json").write_text(json.dumps(data))
    r = invoke("deploy", "triton", "--onnx", graph, "-o", tmp_path / "repo")
    assert r.exit_code == 2, r.output
    assert_clean_failure(r, "mean and std must be finite and std non-zero")
    assert not (tmp_path / "repo").exists()


def test_infer_refuses_a_manifest_with_crop_pct_zero(tiny_plain, tmp_path):
    import shutil

    graph = tmp_path / "g.onnx"
    shutil.copy(tiny_plain, graph)
    data = json.loads((tiny_plain.parent / (tiny_plain.name + ".json")).read_text())
    data["preprocess"]["crop_pct"] = -1.0
    (tmp_path / "g.onnx.json").write_text(json.dumps(data))
    Image.new("RGB", (80, 60), (1, 2, 3)).save(tmp_path / "a.png")
    r = invoke("infer", tmp_path / "a.png", "--onnx", graph)
    assert r.exit_code == 2, r.output
    assert_clean_failure(r, "crop_pct -1 must be a finite number above 0")


# ------------------------------------------------------------------------------------------------ 10: FP16 overflow

@pytest.fixture(scope="module")
def big_logits(tmp_path_factory):
    """The tiny model with one class's head bias at 83,000: its logit is beyond FP16's 65504 on every image."""
    torch = pytest.importorskip("torch")
    from refiner_edge.models.factory import create_model
    from refiner_edge.onnx.export import export_onnx

    from .helpers import randomize

    model = randomize(create_model("refiner-vit-tiny"), seed=1)
    with torch.no_grad():
        model.head.bias[3] = 83_000.0
    root = tmp_path_factory.mktemp("big_logits")
    export_onnx(model, root / "big.onnx")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return root / "big.onnx", images


def test_fp16_keeps_an_overflowing_head_in_fp32_to_the_output(big_logits, tmp_path):
    from refiner_edge.onnx.session import ort_session

    graph, images = big_logits
    out = tmp_path / "big.fp16.onnx"
    r = invoke("calibrate", "--onnx", graph, "--images", images, "--precision", "fp16", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    report = _strict(r.stdout)
    assert math.isfinite(report["evaluation"]["cosine"]) and report["evaluation"]["sqnr_db"] > 40, report
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64), dtype=np.float32)
    logits = ort_session(out, ["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.isfinite(logits).all() and logits[:, 3].min() > 65504, logits[:, 3]


def test_fp16_kept_gemm_reads_its_bias_in_fp32():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from refiner_edge.onnx.session import ort_session
    from refiner_edge.precision.fp16 import convert_to_fp16

    bias = np.array([1e5, 1.0, 2.0], np.float32)   # beyond FP16: the converter clips it to 65504
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu"),
             helper.make_node("Gemm", ["h", "W", "B"], ["y"], name="gemm"),
             helper.make_node("Add", ["y", "B"], ["z"], name="add")]   # an FP16 node sharing the bias
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 3]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(np.ones((4, 3), np.float32), "W"),
                               numpy_helper.from_array(bias, "B")])
    graph.node.append(helper.make_node("Identity", ["y"], ["y2"], name="out"))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    converted = convert_to_fp16(model, ["gemm", "out"])
    inits = {i.name: i for i in converted.graph.initializer}
    gemm = next(n for n in converted.graph.node if n.name == "gemm")
    assert inits[gemm.input[2]].data_type == TensorProto.FLOAT, gemm.input
    assert numpy_helper.to_array(inits[gemm.input[2]])[0] == 1e5
    y = ort_session(_saved(converted), ["CPUExecutionProvider"]).run(
        ["y2"], {"x": np.ones((1, 4), np.float32)})[0]
    np.testing.assert_array_equal(y, [[4 + 1e5, 5, 6]])
    onnx.checker.check_model(converted)


def _saved(model):
    import tempfile

    import onnx

    path = tempfile.mkdtemp() + "/m.onnx"
    onnx.save(model, path)
    return path


def test_calibrate_refuses_to_publish_a_graph_whose_report_is_not_finite(big_logits, tmp_path, monkeypatch):
    from refiner_edge.precision import calibrate as stage

    from refiner_edge.onnx.graph import graph_precision

    # failure injection: the FP16 graph's logits overflow (as a GPU computing the head in FP16 would give them);
    # only the calibrated graph's run is changed (the FP32 reference comes from range collection's pass)
    real, calls = stage.run_logits, []

    def overflowing(model, x, batch):
        out = real(model, x, batch)
        if graph_precision(model) == "fp32":
            return out
        calls.append(model)
        return np.where(out > 65504, np.inf, out)

    monkeypatch.setattr(stage, "run_logits", overflowing)
    graph, images = big_logits
    out = tmp_path / "bad.fp16.onnx"
    r = invoke("calibrate", "--onnx", graph, "--images", images, "--precision", "fp16", "-o", out)
    assert r.exit_code == 4, r.output
    assert calls   # the injection ran
    assert_clean_failure(r, "NaN or infinite logits", "nothing written")
    assert not out.exists() and not (tmp_path / "bad.fp16.onnx.json").exists()
