"""Precision stage on CPU: metrics, ranges, Q/DQ placement, FP16 decisions, budget, TensorRT cache, CLI errors."""
import json
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper

from refiner_edge.errors import InputError, VerificationError
from refiner_edge.images.imageset import load_image_set, load_labels, sample
from refiner_edge.onnx.graph import graph_precision
from refiner_edge.precision.calibrate import calibration_cache_path
from refiner_edge.precision.fp16 import convert_to_fp16, fp32_nodes
from refiner_edge.precision.int8 import Budget, meet_budget, quantizable_nodes, run_logits
from refiner_edge.compare import Comparison
from refiner_edge.precision.ranges import Ranges, mse_amax
from refiner_edge.precision.tensorrt_cache import cache_calibrator, for_tensorrt, read_cache, version_tag, \
    write_cache
from refiner_edge.images.preprocess import Preprocess
from refiner_edge.refine.fuse import fuse_onnx
from refiner_edge.refine.surgery import refinement_subgraphs
from refiner_edge.models.variants import get_variant

from .helpers import assert_clean_failure, invoke

TINY_PRE = Preprocess.from_config(get_variant("refiner-vit-tiny"))


# ---------------------------------------------------------------- metrics, MSE, TensorRT cache (pure functions)

def test_compare_logits_figures():
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.5, 0.0]])
    same = Comparison.of(ref, ref, labels=np.array([0, 1, 2, 1]))
    assert same.agreement == 100.0 and same.sqnr_db == float("inf") and same.cosine == pytest.approx(1.0)
    assert same.accuracy == same.reference_accuracy == 75.0 and same.accuracy_drop == 0.0
    scaled = Comparison.of(ref * 1.1, ref)  # error = 0.1 ref: SQNR exactly 20 dB, same direction
    assert scaled.sqnr_db == pytest.approx(20.0) and scaled.cosine == pytest.approx(1.0)
    flipped = ref.copy()
    flipped[3] = [0.0, 1.0, 0.0]
    labels = np.array([0, 1, 2, 0])
    c = Comparison.of(flipped, ref, {"min_agreement": 80, "min_cosine": 0.5, "min_sqnr_db": 0,
                                     "max_accuracy_drop": 30}, labels=labels)
    assert c.agreement == 75.0 and c.accuracy == 75.0 and c.reference_accuracy == 100.0
    assert c.failures() == ["top-1 agreement 75.00% < 80%"] and not c
    strict = Comparison.of(flipped, ref, {"min_agreement": 0, "min_cosine": 1.0, "min_sqnr_db": 99,
                                          "max_accuracy_drop": 1}, labels=labels)
    assert len(strict.failures()) == 3


def test_mse_clips_rare_outliers_but_not_a_dense_range():
    edges = np.linspace(-100, 100, 1025)
    centers = 0.5 * (edges[:-1] + edges[1:])
    outliers = np.where(np.abs(centers) < 5, 1e6, 0.0)
    outliers[-1] = 1  # one value near 100
    assert mse_amax(outliers, edges) < 20
    uniform = np.ones(1024)
    assert mse_amax(uniform, edges) > 90


def test_tensorrt_cache_round_trip(tmp_path):
    assert version_tag("10.3.0") == 100300 and version_tag("10.13.3.9") == 101303 and version_tag("8.6.1") == 8601
    path = write_cache(tmp_path / "m.calib", {"input": 2.0, "/blocks.0/attn/Softmax_output_0": 1.0}, "10.3.0")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2"
    assert lines[1] == "input: " + struct.pack(">f", np.float32(2.0 / 127)).hex()
    header, scales = read_cache(path)
    assert scales["/blocks.0/attn/Softmax_output_0"] == pytest.approx(1 / 127, rel=1e-7)
    assert for_tensorrt(path, "10.13.3").decode().splitlines()[0] == "TRT-101303-EntropyCalibration2"
    (tmp_path / "bad.calib").write_text("TRT-100300-EntropyCalibration2\ninput: zz\n")
    with pytest.raises(InputError, match="8 hex digits"):
        read_cache(tmp_path / "bad.calib")


def test_cache_calibrator_on_tensorrt(tmp_path):
    trt = pytest.importorskip("tensorrt", reason="tensorrt is not installed (NVIDIA's index is unreachable here)")
    path = write_cache(tmp_path / "m.calib", {"input": 2.0})
    calibrator = cache_calibrator(trt, path)
    assert isinstance(calibrator, trt.IInt8EntropyCalibrator2)
    assert calibrator.get_batch(["input"]) is None
    assert calibrator.read_calibration_cache().decode().startswith(f"TRT-{version_tag(trt.__version__)}-")


# ---------------------------------------------------------------- image sets and labels

def _write_png(path, value):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 30, 3), value, np.uint8)).save(path)


def test_image_sample_is_deterministic_and_skips_unreadable_files(tmp_path):
    for i in range(12):
        _write_png(tmp_path / "imgs" / f"c{i % 3}" / f"{i:02d}.png", i * 20)
    (tmp_path / "imgs" / "c0" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    paths = sorted((tmp_path / "imgs").rglob("*.*"))
    assert sample(paths, 0) == sample(list(reversed(paths)), 0) != sample(paths, 1)
    full = load_image_set([tmp_path / "imgs"], TINY_PRE)
    assert len(full) == 12 and full.found == 13 and len(full.skipped) == 1 and "broken.jpg" in full.skipped[0][0]
    some = load_image_set([tmp_path / "imgs"], TINY_PRE, num=5, seed=3)
    assert len(some) == 5 and some.arrays.shape == (5, 3, 64, 64)
    again = load_image_set([tmp_path / "imgs"], TINY_PRE, num=5, seed=3)
    assert some.paths == again.paths and np.array_equal(some.arrays, again.arrays)
    labels = load_labels("imagenet-folder", full, tmp_path / "imgs")
    assert list(labels) == [int(p.parent.name[1]) for p in full.paths]
    table = tmp_path / "labels.txt"
    table.write_text("# path index\n" + "".join(f"{p.relative_to(tmp_path / 'imgs').as_posix()}, {7}\n"
                                                 for p in full.paths[:-1]))
    with pytest.raises(InputError, match="no label for 1 image"):
        load_labels(table, full, tmp_path / "imgs")
    table.write_text("".join(f"{p.relative_to(tmp_path / 'imgs').as_posix()}\t{i}\n" for i, p in enumerate(full.paths)))
    assert list(load_labels(table, full, tmp_path / "imgs")) == list(range(12))
    with pytest.raises(InputError, match="no readable images"):
        load_image_set([tmp_path / "imgs" / "c0" / "broken.jpg"], TINY_PRE)


# ---------------------------------------------------------------- the graphs, on the tiny model

@pytest.fixture(scope="module")
def tiny_int8(tiny_plain, sample_photos):
    out = tiny_plain.with_name("tiny.int8.onnx")
    result = invoke("calibrate", "--onnx", tiny_plain, "--images", sample_photos[0].parent, "-o", out,
                    "--method", "mse", "--sensitivity")
    assert result.exit_code == 0, result.output
    assert "most sensitive layers" in result.stdout and "top-1 agreement" in result.stdout
    return out


def _consumers(model):
    out = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def test_int8_qdq_placement_is_what_tensorrt_wants(tiny_plain, tiny_int8):
    plain, model = onnx.load(str(tiny_plain)), onnx.load(str(tiny_int8))
    assert graph_precision(model) == "int8"
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consumers = _consumers(model)
    refinement = {n for unit in refinement_subgraphs(plain) for n in unit}
    quantized = set()
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":  # activations: per-tensor, zero point 0, INT8
            assert inits[node.input[1]].size == 1 and inits[node.input[2]].dtype == np.int8
            assert not inits[node.input[2]].any()
        if node.op_type != "DequantizeLinear":
            continue
        users = consumers[node.output[0]]
        assert [u.op_type for u in users] in (["Conv"], ["MatMul"], ["Gemm"]), users  # Q/DQ only into these
        assert not (refinement & {u.name for u in users})
        quantized.add(users[0].name)
        zero = inits[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any()
        if node.input[0] in inits:  # a weight: per channel on the output-channel axis
            w, scale = inits[node.input[0]], inits[node.input[1]]
            axis = next(a.i for a in node.attribute if a.name == "axis")
            op = users[0].op_type
            expected = {"Conv": 0, "MatMul": 1, "Gemm": 0}[op]
            assert w.dtype == np.int8 and axis == expected and scale.shape == (w.shape[expected],), node.name
    # every Conv/MatMul/Gemm outside the refinement subgraphs is quantized; the refinement stays float
    assert quantized == set(quantizable_nodes(plain, refinement))
    manifest = json.loads(tiny_int8.with_name(tiny_int8.name + ".json").read_text())
    report = manifest["report"]
    assert manifest["stage"] == "calibrate" and manifest["graph"]["precision"] == "int8"
    assert [v["stage"] for v in manifest["verification"]] == ["export", "calibrate"]
    assert report["int8"]["quantized_layers"] == len(quantized) and len(report["int8"]["sensitivity"]) == len(quantized)
    assert report["calibration"]["used"] == 2 and report["evaluation"]["sqnr_db"] > 20


def test_int8_graph_still_fuses(tiny_int8, tmp_path):
    pytest.importorskip("onnxruntime_extensions")
    result = fuse_onnx(tiny_int8, tmp_path / "f.onnx")
    assert result.report["fused_nodes"] == 2 and result.comparison


def test_int8_tensorrt_cache_names_plain_graph_tensors(tiny_plain, tiny_int8):
    _, scales = read_cache(calibration_cache_path(tiny_int8))
    plain = onnx.load(str(tiny_plain))
    produced = {o for n in plain.graph.node for o in n.output} | {"input"}
    assert len(scales) > 50 and set(scales) <= produced
    assert all(np.isfinite(s) and s > 0 for s in scales.values())
    softmax = next(n.output[0] for n in plain.graph.node if n.op_type == "Softmax")
    assert scales[softmax] <= 1.0 / 127 * 1.0001  # probabilities: amax <= 1
    # the same ranges as the Q/DQ graph: each activation's Q scale is the cache's scale (up to FP16 rounding)
    model = onnx.load(str(tiny_int8))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    q_scales = {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"}
    shared = set(q_scales) & set(scales)
    assert len(shared) >= len(q_scales) - 1  # all but the graph input, which the FP16 graph casts first
    for name in shared:
        assert q_scales[name] == pytest.approx(scales[name], rel=1e-3), name


def _ranges(model, big=()):
    """Observed ranges of 1.0 for every tensor, except `big` ones."""
    names = {t for n in model.graph.node for t in list(n.input) + list(n.output)}
    return Ranges("max", {t: (-1.0, 1.0) for t in names} | {t: (-v, v) for t, v in big})


def test_fp16_decisions_follow_the_measured_ranges(tiny_plain, tmp_path):
    model = onnx.load(str(tiny_plain))
    units = refinement_subgraphs(model)
    assert fp32_nodes(model, _ranges(model), units) == []
    ln = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    sm = next(n for n in model.graph.node if n.op_type == "Softmax")
    dw = next(n for n in model.graph.node if n.name in units[0] and n.op_type == "Conv")
    kept = fp32_nodes(model, _ranges(model, [(ln.input[0], 300.0), (sm.input[0], 25.0), (dw.output[0], 3e4)]), units)
    by_node = {k.node: k for k in kept}
    assert "x^2" in by_node[ln.name].reason and "logits" in by_node[sm.name].reason
    assert set(units[0]) <= set(by_node) and not set(units[1]) & set(by_node)  # the whole subgraph, no other
    fp16 = convert_to_fp16(model, list(by_node))
    onnx.checker.check_model(fp16)
    dtypes = {t.name: t.data_type for t in fp16.graph.initializer}
    conv_w = next(n.input[1] for n in fp16.graph.node if n.name == dw.name)
    assert dtypes[conv_w] == TensorProto.FLOAT  # kept nodes keep FP32 weights ...
    assert TensorProto.FLOAT16 in dtypes.values()  # ... the rest is FP16
    assert fp16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    path = tmp_path / "mixed.onnx"
    onnx.save(fp16, str(path))
    pytest.importorskip("onnxruntime_extensions")
    assert fuse_onnx(path, tmp_path / "mixed.fused.onnx").report["fused_nodes"] == 2


def test_budget_keeps_the_most_sensitive_layers_in_fp16(tiny_plain, tiny_int8, sample_photos):
    from refiner_edge.images.imageset import load_image_set as load
    from refiner_edge.precision.ranges import collect_ranges
    from refiner_edge.precision.int8 import activation_inputs, layer_sensitivity

    model = onnx.load(str(tiny_plain))
    refinement = {n for unit in refinement_subgraphs(model) for n in unit}
    nodes = quantizable_nodes(model, refinement)
    x = load(sample_photos, TINY_PRE).arrays
    ranges = collect_ranges(tiny_plain, [x], "max", "input", activation_inputs(model, nodes))
    reference = run_logits(model, x)
    ranking = [r["node"] for r in layer_sensitivity(tiny_plain, model, ranges, nodes, x, reference)]
    full = Comparison.of(run_logits(onnx.load(str(tiny_int8)), x), reference).sqnr_db
    target = full + 6.0  # 6 dB better than all-INT8: some layers must stay FP16
    result, kept, comparison, steps = meet_budget(tiny_plain, ranges, nodes, ranking, [], x, reference,
                                                  Budget(min_sqnr_db=target))
    assert 0 < len(kept) < len(nodes) and kept == ranking[:len(kept)] and comparison.sqnr_db >= target
    assert steps[0]["fp16_layers"] == 0 and not steps[0]["met"]
    dq_users = {u.name for n in result.graph.node if n.op_type == "DequantizeLinear"
                for u in _consumers(result)[n.output[0]]}
    assert not dq_users & set(kept) and len(dq_users) == len(nodes) - len(kept)
    with pytest.raises(VerificationError, match="every layer in FP16"):
        meet_budget(tiny_plain, ranges, nodes, ranking, [], x, reference, Budget(min_sqnr_db=300))


# ---------------------------------------------------------------- CLI: errors leave earlier artifacts alone

def test_calibrate_refuses_bad_input_in_one_line(tiny_plain, tiny_int8, sample_photos, tmp_path):
    photos = sample_photos[0].parent
    out = tmp_path / "o.onnx"
    assert_clean_failure(invoke("calibrate", "--onnx", tiny_int8, "--images", photos, "-o", out), "already")
    fuse_onnx(tiny_plain, tmp_path / "fused.onnx", verify=False)
    assert_clean_failure(invoke("calibrate", "--onnx", tmp_path / "fused.onnx", "--images", photos, "-o", out),
                         "is fused")
    assert_clean_failure(invoke("calibrate", "--onnx", tmp_path / "none.onnx", "--images", photos, "-o", out),
                         "not found")
    assert_clean_failure(invoke("calibrate", "--onnx", tiny_plain, "--images", tmp_path / "none", "-o", out),
                         "no such file")
    assert_clean_failure(invoke("calibrate", "--onnx", tiny_plain, "--images", photos, "-o", tiny_plain), "differ")
    assert_clean_failure(invoke("calibrate", "--onnx", tiny_plain, "--images", photos, "-o", out, "--precision",
                                "fp16", "--max-drop", "1"), "--precision int8")
    assert_clean_failure(invoke("calibrate", "--onnx", tiny_plain, "--images", photos, "-o", out, "--method", "kl"))
    out.write_bytes(b"earlier artifact")
    result = invoke("calibrate", "--onnx", tiny_plain, "--images", photos, "-o", out, "--min-sqnr", "300")
    assert_clean_failure(result, "not met")
    assert result.exit_code == 4 and out.read_bytes() == b"earlier artifact"
    assert not calibration_cache_path(out).exists() and not out.with_name(out.name + ".json").exists()


def test_calibration_list_is_the_recipe(tiny_plain, sample_photos, tmp_path):
    """--list calibration/NAME.txt: only the listed images, found by name in class folders too; a listed image
    that is missing is an error, not a smaller sample."""
    import shutil

    root = tmp_path / "val"
    for i, photo in enumerate(sample_photos):
        (root / f"class{i}").mkdir(parents=True)
        shutil.copy(photo, root / f"class{i}" / photo.name)
    listing = tmp_path / "recipe.txt"
    listing.write_text("# one of the two\nflower.jpg\n")
    out = tmp_path / "l.int8.onnx"
    result = invoke("calibrate", "--onnx", tiny_plain, "--images", root, "--list", listing, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["calibration"]["used"] == 1 and report["calibration"]["list"] == "recipe.txt"
    manifest = json.loads(out.with_name(out.name + ".json").read_text())
    assert manifest["report"]["calibration"]["list"] == "recipe.txt"
    # the shipped recipe for the sample photographs is a real list of them
    shipped = Path(__file__).resolve().parents[1] / "calibration" / "sample-photos.txt"
    result = invoke("calibrate", "--onnx", tiny_plain, "--images", sample_photos[0].parent, "--list", shipped,
                    "-o", tmp_path / "s.int8.onnx", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["calibration"]["used"] == 2
    listing.write_text("flower.jpg\nclass9/absent.jpg\n")
    assert_clean_failure(invoke("calibrate", "--onnx", tiny_plain, "--images", root, "--list", listing, "-o",
                                tmp_path / "m.onnx"), "1 of the 2 images in recipe.txt are not in")


def test_validate_gate_and_errors(tiny_plain, tiny_int8, sample_photos, tmp_path, tiny_checkpoint):
    photos = sample_photos[0].parent
    ok = invoke("validate", "--onnx", tiny_int8, "--images", photos, "--reference", tiny_plain, "--json")
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout)
    assert report["precision"] == "int8" and report["passed"] and report["images"]["used"] == 2
    strict = invoke("validate", "--onnx", tiny_int8, "--images", photos, "--reference", tiny_plain,
                    "--min-sqnr", "200")
    assert_clean_failure(strict, "SQNR")
    assert strict.exit_code == 4 and "FAIL" in strict.stdout
    assert_clean_failure(invoke("validate", "--onnx", tiny_int8, "--images", photos), "random weights")
    assert_clean_failure(invoke("validate", "--onnx", tiny_int8, "--images", photos, "--reference",
                                tmp_path / "none.onnx"), "--reference")
    assert_clean_failure(invoke("validate", "--onnx", tiny_int8, "--images", photos, "--reference", tiny_plain,
                                "--labels", tmp_path / "none.txt"), "labels file not found")
    # a graph exported from a checkpoint is checked against that checkpoint, and no other
    from refiner_edge.onnx.export import export_onnx
    from refiner_edge.models.factory import create_model

    exported = tmp_path / "from_ckpt.onnx"
    export_onnx(create_model("refiner-vit-tiny", checkpoint=tiny_checkpoint), exported)
    same = invoke("validate", "--onnx", exported, "--images", photos, "--checkpoint", tiny_checkpoint, "--json")
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["metrics"]["sqnr_db"] > 60  # FP32 graph vs the same PyTorch weights
    other = tmp_path / "other.pth"
    torch.save(create_model("refiner-vit-tiny", seed=5).state_dict(), other)
    assert_clean_failure(invoke("validate", "--onnx", exported, "--images", photos, "--checkpoint", other),
                         "SHA-256 differs")


def test_fixed_batch_graph_calibrates_and_validates(tiny_model, sample_photos, tmp_path):
    """A graph exported with --batch 3 gets its short batches (2 photographs) filled up, in both commands."""
    from refiner_edge.onnx.export import export_onnx

    plain = tmp_path / "b3.onnx"
    export_onnx(tiny_model, plain, batch=3)
    out = tmp_path / "b3.int8.onnx"
    result = invoke("calibrate", "--onnx", plain, "--images", sample_photos[0].parent, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["calibration"]["used"] == 2 and report["calibration"]["batch"] == 3
    check = invoke("validate", "--onnx", out, "--images", sample_photos[0].parent, "--reference", plain, "--json")
    assert check.exit_code == 0, check.output
    assert json.loads(check.stdout)["metrics"]["images"] == 2


# ---------------------------------------------------------------- ranges: segment by segment = all outputs at once

def _ranges_both_ways(path: Path, x: np.ndarray, method: str, memory_gb: float, every: int = 1):
    """(segmented, all-outputs reference) ranges of the graph at `path` on two batches: the images and their
    mirror images; `every`: histogram only every n-th quantized tensor (the entropy search is the slow part)."""
    from refiner_edge.precision.int8 import activation_inputs
    from refiner_edge.precision.ranges import _collect_ranges_all_outputs, collect_ranges

    model = onnx.load(str(path))
    refinement = {n for unit in refinement_subgraphs(model) for n in unit}
    quantized = set(sorted(activation_inputs(model, quantizable_nodes(model, refinement)))[::every])
    batches = [x, np.ascontiguousarray(x[..., ::-1])]
    new = collect_ranges(path, batches, method, "input", quantized, memory_gb=memory_gb)
    return new, _collect_ranges_all_outputs(path, batches, method, "input", quantized)


def _assert_same_ranges(new: Ranges, old: Ranges) -> None:
    assert new.minmax.keys() == old.minmax.keys() and new.amax.keys() == old.amax.keys() and old.amax
    for name, (lo, hi) in old.minmax.items():
        np.testing.assert_allclose(new.minmax[name], (lo, hi), rtol=1e-5, atol=1e-6, err_msg=name)
    for name, a in old.amax.items():
        np.testing.assert_allclose(new.amax[name], a, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("method", ["max", "entropy", "percentile", "mse"])
def test_segmented_ranges_equal_all_outputs_tiny(tiny_plain, sample_photos, method):
    x = load_image_set(sample_photos, TINY_PRE).arrays
    new, old = _ranges_both_ways(tiny_plain, x, method, memory_gb=0.002)
    assert new.segments > 5 and new.batch == len(x)  # the budget cut the graph, not the batch
    _assert_same_ranges(new, old)


@pytest.mark.parametrize("method", ["max", "entropy", "percentile", "mse"])
def test_segmented_ranges_equal_all_outputs_refiner_s(refiner_s_graphs, sample_photos, method):
    x = load_image_set(sample_photos[:1], Preprocess.from_config(get_variant("refiner-vit-s"))).arrays
    new, old = _ranges_both_ways(refiner_s_graphs["fp32"], x, method, memory_gb=0.05, every=16)
    assert new.segments > 16 and new.batch == len(x)
    _assert_same_ranges(new, old)


def test_range_batch_shrinks_to_the_budget(tiny_plain):
    from refiner_edge.onnx.memory import GraphMemory
    from refiner_edge.precision.ranges import plan_segments

    memory = GraphMemory.of(onnx.load(str(tiny_plain)))
    floats = set(memory.sizes)
    segments, batch = plan_segments(memory, 1e12, 16, floats)
    assert batch == 16 and len(segments) == 1
    per_image = sum(memory.sizes[t] for t in floats)  # every tensor at once, as the reference collector holds
    segments, batch = plan_segments(memory, per_image * 4, 16, floats)
    assert 1 < len(segments) and 4 <= batch < 16
    assert all(s.bytes_per_image * batch <= per_image * 4 for s in segments)


def test_whole_graph_batch_shrinks_to_the_budget(tiny_plain, tiny_int8, monkeypatch):
    """fuse's check, infer and validate run the whole graph: their batch shrinks to the same budget."""
    from refiner_edge.onnx import memory as memory_module
    from refiner_edge.onnx.memory import GraphMemory, graph_batch
    from refiner_edge.runners.ort import onnxruntime_runner

    memory = GraphMemory.of(onnx.load(str(tiny_plain)))
    per_image = memory.forward_peak() + 2 * max(memory.sizes.values())
    assert graph_batch(tiny_plain, 8, memory_gb=1e3) == 8
    assert graph_batch(tiny_plain, 8, memory_gb=per_image * 3.5 / 1e9) == 3
    assert graph_batch(tiny_plain, 1, memory_gb=0) == 1
    # a calibrated graph holds its Q/DQ tensors besides the float ones
    assert graph_batch(tiny_int8, 8, memory_gb=1e3) == 8 and graph_batch(tiny_int8, 8, memory_gb=per_image * 3.5 / 1e9) < 3
    monkeypatch.setattr(memory_module, "CALIBRATE_MEMORY_GB", per_image * 3.5 / 1e9)
    runner = onnxruntime_runner(tiny_plain)
    assert runner.batch_size(8) == 3 and runner.batch_size(2) == 2
    sizes = []
    run = runner.run
    runner.run = lambda x: sizes.append(len(x)) or run(x)
    size = runner.preprocess.img_size
    logits = runner.logits(np.random.default_rng(0).standard_normal((7, 3, size, size), dtype=np.float32))
    assert sizes == [3, 3, 1] and len(logits) == 7
