"""What calibration costs: one forward pass per image for range collection (the FP32 reference comes from it), a
segment count bounded whatever the memory budget, and the same accuracy as before."""
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from refiner_edge.compare import Comparison
from refiner_edge.images.imageset import load_image_set
from refiner_edge.images.preprocess import Preprocess
from refiner_edge.models.variants import get_variant
from refiner_edge.onnx import memory as memory_module
from refiner_edge.onnx.memory import GraphMemory
from refiner_edge.precision.int8 import activation_inputs, quantizable_nodes, run_logits

TINY_PRE = Preprocess.from_config(get_variant("refiner-vit-tiny"))


@pytest.fixture
def session_runs(monkeypatch):
    """Every ONNX Runtime run of a graph in this test: (session's input names, images fed). The real run, only
    counted. The shared arena's release (a one-node run on no image: onnx/session.SharedArena) runs no graph."""
    from refiner_edge.onnx.session import SharedArena

    runs: list[tuple[tuple[str, ...], int]] = []
    real = ort.InferenceSession.run

    def counted(self, output_names, input_feed, *args, **kwargs):
        if list(input_feed) == [SharedArena.INPUT]:
            return real(self, output_names, input_feed, *args, **kwargs)
        first = next(iter(input_feed.values()), None)   # (a segment of constants alone reads nothing)
        runs.append((tuple(sorted(input_feed)), int(first.shape[0]) if first is not None and first.ndim else 0))
        return real(self, output_names, input_feed, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "run", counted)
    return runs


def _images(folder: Path, photos: list[Path], count: int) -> Path:
    """`count` images: the sample photographs and their mirror images, as files."""
    from PIL import Image

    folder.mkdir()
    for i in range(count):
        with Image.open(photos[i % len(photos)]) as im:
            (im if i < len(photos) else im.transpose(Image.FLIP_LEFT_RIGHT)).convert("RGB").save(
                folder / f"{i:02d}.png")
    return folder


def test_segments_are_bounded_whatever_the_budget(tiny_plain):
    from refiner_edge.precision.ranges import plan_segments

    memory = GraphMemory.of(onnx.load(str(tiny_plain)))
    floats = set(memory.sizes)
    nodes = len(memory.nodes)
    assert len(memory.segments(1.0, max_segments=nodes)) > 8   # a byte per piece: one piece per node or so
    for limit in (1, 3, 8):
        pieces = memory.segments(1.0, max_segments=limit)
        assert 1 <= len(pieces) <= limit
        assert [p.start for p in pieces][0] == 0 and pieces[-1].stop == nodes
        assert all(a.stop == b.start for a, b in zip(pieces, pieces[1:]))
    segments, batch = plan_segments(memory, 1.0, 16, floats)   # a budget of one byte
    assert len(segments) <= memory_module.MAX_SEGMENTS and batch == 1


def test_tiny_budget_ranges_within_the_bound_equal_all_outputs(tiny_plain, sample_photos, monkeypatch):
    """A budget far below one tensor: the segment count stays at the bound, and the ranges are still exact."""
    from refiner_edge.precision.ranges import _collect_ranges_all_outputs, collect_ranges

    monkeypatch.setattr(memory_module, "MAX_SEGMENTS", 6)
    model = onnx.load(str(tiny_plain))
    quantized = activation_inputs(model, quantizable_nodes(model, set()))
    x = load_image_set(sample_photos, TINY_PRE).arrays
    batches = [x[i:i + 1] for i in range(len(x))]   # the budget runs one image at a time: so does the reference
    new = collect_ranges(tiny_plain, batches, "percentile", "input", quantized, memory_gb=1e-12)
    old = _collect_ranges_all_outputs(tiny_plain, batches, "percentile", "input", quantized)
    assert 1 < new.segments <= 6
    assert new.minmax.keys() == old.minmax.keys() and new.amax.keys() == old.amax.keys() and old.amax
    for name, (lo, hi) in old.minmax.items():
        np.testing.assert_allclose(new.minmax[name], (lo, hi), rtol=1e-5, atol=1e-6, err_msg=name)
    for name, a in old.amax.items():
        np.testing.assert_allclose(new.amax[name], a, rtol=1e-5, atol=1e-6, err_msg=name)


def test_range_collection_runs_each_image_once_and_keeps_the_logits(tiny_plain, sample_photos, session_runs):
    from refiner_edge.precision.ranges import collect_ranges

    model = onnx.load(str(tiny_plain))
    quantized = activation_inputs(model, quantizable_nodes(model, set()))
    x = load_image_set(sample_photos, TINY_PRE).arrays
    batches = [x, np.ascontiguousarray(x[..., ::-1])]
    ranges = collect_ranges(tiny_plain, batches, "percentile", "input", quantized, memory_gb=0.002,
                            keep_outputs=3)
    assert ranges.segments > 1
    # each segment's session sees every image once, and nothing else runs
    assert len(session_runs) == ranges.segments * len(batches)
    assert sum(n for names, n in session_runs if names == ("input",)) == 2 * len(x)
    reference = run_logits(model, np.concatenate(batches))
    np.testing.assert_allclose(ranges.outputs, reference[:3], rtol=1e-4, atol=1e-5)


def test_calibrate_runs_the_fp32_graph_once_per_image(tiny_plain, sample_photos, tmp_path, session_runs):
    """Range collection's pass gives the FP32 reference: one FP32 pass per image, then one INT8 check."""
    from refiner_edge.precision.calibrate import CalibrateOptions, calibrate_onnx

    images = _images(tmp_path / "images", sample_photos, 4)
    result = calibrate_onnx(tiny_plain, images, tmp_path / "t.int8.onnx", CalibrateOptions(eval_num=4))
    calibration = result.report["calibration"]
    assert calibration["used"] == 4
    fed = sum(n for names, n in session_runs if names == ("input",))   # sessions that read images
    assert fed == 4 + 4   # 4 images through the FP32 graph's segments, the same 4 through the INT8 graph
    # accuracy as an independent FP32 run measures it (within 0.2 dB of the report; over all the images, so in
    # any order)
    x = load_image_set([images], TINY_PRE).arrays
    model = onnx.load(str(tiny_plain))
    reference = run_logits(model, x)
    mine = Comparison.of(run_logits(onnx.load(str(tmp_path / "t.int8.onnx")), x), reference)
    assert abs(mine.sqnr_db - result.report["evaluation"]["sqnr_db"]) < 0.2
    assert mine.agreement == result.report["evaluation"]["agreement"]



@pytest.mark.parametrize("memory_gb", [0.0002, 0.0005, 0.001, 0.003])
def test_segment_cuts_anywhere_give_the_same_ranges(tiny_plain, sample_photos, memory_gb):
    """Wherever the budget cuts (inside attention too, where a segment reads tensors of the same rank and other
    sizes), each segment's session computes its own tensors right and the ranges equal the reference's."""
    from refiner_edge.precision.ranges import _collect_ranges_all_outputs, collect_ranges

    model = onnx.load(str(tiny_plain))
    quantized = activation_inputs(model, quantizable_nodes(model, set()))
    x = load_image_set(sample_photos, TINY_PRE).arrays
    new = collect_ranges(tiny_plain, [x], "max", "input", quantized, memory_gb=memory_gb, keep_outputs=len(x))
    old = _collect_ranges_all_outputs(tiny_plain, [x], "max", "input", quantized)
    assert new.segments > 1 and new.minmax.keys() == old.minmax.keys()
    for name, (lo, hi) in old.minmax.items():
        np.testing.assert_allclose(new.minmax[name], (lo, hi), rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(new.outputs, run_logits(model, x), rtol=1e-4, atol=1e-5)


def _histogram_batches(rng) -> list[np.ndarray]:
    """Batches as calibration meets them: a wide first one, then narrower and wider ones (the edges extended), values
    lying exactly on the first batch's edges, zeros and a tensor of one value."""
    first = rng.standard_normal((3, 50, 40)).astype(np.float32)
    _, edges = np.histogram(np.abs(first), bins=2048)
    on_edges = np.concatenate([edges.astype(np.float32), -edges.astype(np.float32)]).reshape(2, -1)
    return [first, (0.3 * rng.standard_normal((3, 50, 40))).astype(np.float32), on_edges,
            (7 * rng.standard_normal((2, 70))).astype(np.float32), np.zeros((4, 5), np.float32),
            (20 * rng.standard_t(2, (5, 300))).astype(np.float32)]


@pytest.mark.parametrize("binning", ["arithmetic", "sorted", None])
def test_the_percentile_histograms_are_onnx_runtimes_exactly(binning, monkeypatch, dtype=np.float32):
    """precision/histogram.py merges the percentile calibrator's histograms by either binning (None: the faster,
    timed on the batches): counts, edges, min and max equal ONNX Runtime's HistogramCollector's after every batch,
    and so do the ranges computed from them. (Float32 only: calibration runs the FP32 graph, and both fail alike on
    2048 float16 bins of a narrow range.)"""
    from onnxruntime.quantization.calibrate import HistogramCollector

    from refiner_edge.precision import histogram
    from refiner_edge.precision.histogram import BINNINGS, collector_class
    from refiner_edge.precision.ranges import collector_options

    monkeypatch.setattr(histogram, "TIMED_SIZE", 1)   # time these small merges, so the choice is made here
    monkeypatch.setattr(histogram, "TIMED", 2)
    monkeypatch.setattr(histogram, "ABSOLUTE_CHUNK", 777)   # tensors merged in several chunks
    rng = np.random.default_rng(7)
    make = collector_options("percentile")   # as range collection makes its collector
    ours, theirs = collector_class()(**make), HistogramCollector(**make)
    ours.binning = binning
    zero_first = {"z": np.zeros((2, 3), dtype)}
    for batch in _histogram_batches(rng):
        tensors = {"a": batch.astype(dtype), "b": (batch[..., ::-1] * 0.5).astype(dtype),
                   "z": zero_first["z"] if "z" not in theirs.histogram_dict else batch.astype(dtype)}
        ours.collect_absolute_value(dict(tensors))
        theirs.collect_absolute_value(dict(tensors))
        for name, (counts, edges, low, high) in theirs.histogram_dict.items():
            mine = ours.histogram_dict[name]
            np.testing.assert_array_equal(mine[0], counts, err_msg=name)
            np.testing.assert_array_equal(mine[1], edges, err_msg=name)
            assert mine[1].dtype == edges.dtype and (mine[2], mine[3]) == (low, high), name
    assert len(theirs.histogram_dict["a"][1]) > 2049   # a later batch did extend the edges
    assert ours.binning == binning or binning is None and ours.binning in BINNINGS   # the faster one was chosen
    mine, expected = ours.compute_collection_result(), theirs.compute_collection_result()
    assert {k: tuple(map(float, v)) for k, v in mine.items()} == {k: tuple(map(float, v)) for k, v in expected.items()}


@pytest.mark.parametrize("chunk", [1 << 18, 999])
def test_bin_counts_match_numpy_on_uneven_edges(chunk, monkeypatch):
    """The arithmetic guess is checked against the edges: duplicated, rounded or uneven edges still count as
    np.histogram counts, NaN and out-of-range values are left out, in one chunk or many."""
    from refiner_edge.precision import histogram
    from refiner_edge.precision.histogram import bin_counts

    monkeypatch.setattr(histogram, "CHUNK", chunk)

    rng = np.random.default_rng(3)
    values = np.concatenate([rng.uniform(-1, 12, 20_000), [np.nan, 10.0, 0.0, 2.5]]).astype(np.float32)
    for edges in (np.array([0, 1, 1, 2, 2.5, 2.5000002, 7, 10], np.float32),
                  np.cumsum(rng.uniform(0.001, 1, 40)).astype(np.float32),
                  np.linspace(0, 10, 2049, dtype=np.float32)):
        np.testing.assert_array_equal(bin_counts(values, edges), np.histogram(values, bins=edges)[0])


@pytest.mark.parametrize("opset", [13, 18])   # ReduceMin/ReduceMax take their axes as an attribute, then an input
def test_clipped_ranges_are_derived_and_equal_the_reference(opset, tmp_path, monkeypatch):
    """Relu and constant-bound Clip outputs are not reduced in the session but derived from their input's range
    (a clip of a clip too); a Clip with a computed bound is reduced; every range equals the all-outputs
    collector's, as do the row-wise reductions' of rank-4 tensors."""
    from onnx import TensorProto, helper

    from refiner_edge.precision import ranges as ranges_module

    scalar = lambda name, v: helper.make_tensor(name, TensorProto.FLOAT, [], [v])   # noqa: E731
    nodes = [helper.make_node("Mul", ["X", "three"], ["A"]), helper.make_node("Relu", ["A"], ["R"]),
             helper.make_node("Clip", ["A", "low", "high"], ["C"]), helper.make_node("Clip", ["R", "", "high"], ["D"]),
             helper.make_node("ReduceMin", ["X"], ["M"], keepdims=0), helper.make_node("Clip", ["A", "M"], ["E"]),
             helper.make_node("Add", ["C", "D"], ["CD"]), helper.make_node("Add", ["CD", "E"], ["Y"])]
    graph = helper.make_graph(nodes, "clips", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4, 5, 6])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4, 5, 6])],
                              [scalar("three", 3.0), scalar("low", -1.5), scalar("high", 2.0)])
    path = tmp_path / "clips.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8), str(path))
    found: list[set[str]] = []
    real = ranges_module._clipped_outputs
    monkeypatch.setattr(ranges_module, "_clipped_outputs",
                        lambda *a: found.append(set(result := real(*a))) or result)
    rng = np.random.default_rng(5)
    batches = [rng.standard_normal((2, 4, 5, 6)).astype(np.float32) for _ in range(3)]
    new = ranges_module.collect_ranges(path, batches, "max", "X", set())
    old = ranges_module._collect_ranges_all_outputs(path, batches, "max", "X", set())
    assert set().union(*found) == {"R", "C", "D"}   # E's lower bound is computed: reduced
    assert new.minmax.keys() == old.minmax.keys() >= {"A", "R", "C", "D", "E", "Y"}
    for name, (lo, hi) in old.minmax.items():
        assert new.minmax[name] == (lo, hi), name   # exactly: a clip returns an element or a bound
