"""`refiner-edge bench --engine E --layers` (issue 26, item 4): per-layer times from TensorRT's profiler.

The profiled run needs TensorRT and a GPU (benchmarks/gpu_check.sh runs it on an S@224 engine). Here: the
aggregation of per-layer records (a pure function of them), the plugin-layer identification on the node names of a
real fused graph, the table, and the refusals, each one `error:` line with its exit code and nothing on stdout."""
import importlib.util
import json
import math
import shutil

import pytest

from refiner_edge.artifacts import manifest_path
from refiner_edge.engine.targets import detect_gpu
from refiner_edge.errors import InputError, VerificationError
from refiner_edge.refine import PLUGIN_NAME
from refiner_edge.runners.layer_profile import aggregate, layer_kind, profile_layers

from .helpers import assert_clean_failure, invoke
from .manifest_cases import good_manifest

pytestmark = pytest.mark.torch_free

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def fused_names(tiny_plain):
    """(names of the RefinerDLA nodes, names of every other node) of the tiny graph fused by the surgery, and the
    plain graph's node names (its refinement subgraphs unfused)."""
    import onnx

    from refiner_edge.refine.surgery import fuse_graph

    from refiner_edge.refine.plugin_form import aot_form

    plain = onnx.load(str(tiny_plain))
    fused, count = fuse_graph(plain)
    plugins = [n.name for n in fused.graph.node if n.op_type == PLUGIN_NAME]
    others = [n.name for n in fused.graph.node if n.op_type != PLUGIN_NAME]
    assert count == len(plugins) > 0 and others
    # the AOT form keeps the node names and adds the packed weights (a constant layer in TensorRT) per node
    aot = aot_form(fused)
    assert [n.name for n in aot.graph.node if n.op_type == PLUGIN_NAME] == plugins
    others += [n.name for n in aot.graph.node if n.op_type != PLUGIN_NAME] + [i.name for i in aot.graph.initializer]
    return plugins, others, [n.name for n in plain.graph.node]


def test_layer_kind_finds_exactly_the_plugin_nodes_of_a_fused_graph(fused_names):
    """TensorRT's ONNX parser names a layer after its node: the RefinerDLA nodes `fuse` named are the refinement,
    no other node of the fused graph nor any node of the plain graph (whose DLA convolutions are named .../DLA/...)
    is, and the format copies TensorRT adds around a plugin are told apart from it."""
    plugins, others, plain = fused_names
    assert [layer_kind(n) for n in plugins] == ["refinement"] * len(plugins)
    assert [n for n in others + plain if layer_kind(n) is not None] == []
    assert any("/DLA/" in n for n in plain)   # the unfused refinement is there, under other names
    for name in plugins:
        assert layer_kind(f"Reformatting CopyNode for Input Tensor 0 to {name}") == "refinement_reformat"
        assert layer_kind(f"Reformatting CopyNode for Output Tensor 0 to {name}") == "refinement_reformat"
        # a layer holding more than the plugin is not it
        assert layer_kind(f"{name} + {others[0]}") is None and layer_kind(f"{others[0]} + {name}") is None
    assert layer_kind(f"Reformatting CopyNode for Input Tensor 0 to {others[0]}") is None
    assert layer_kind(PLUGIN_NAME + "Extra") is None and layer_kind("x/" + PLUGIN_NAME.lower()) is None


def test_aggregate_figures_of_known_records(fused_names):
    """Three calls of an engine whose layers carry the fused graph's names: per layer the mean, median, min and max
    over the calls and its share; the plugin layers' summed share, the format copies beside it; execution order
    kept; a name reported twice in one call summed; a layer missing from a call counts 0 there."""
    plugins, others, _ = fused_names
    assert len(plugins) > 1
    p0, p1 = plugins[0], plugins[1]
    copy = f"Reformatting CopyNode for Input Tensor 0 to {p0}"
    a, b = others[0], others[-1]
    runs = [
        [(a, 1.0), (copy, 0.1), (p0, 2.0), (b, 3.0)],
        [(a, 2.0), (copy, 0.1), (p0, 2.0), (b, 2.0), (b, 1.0)],
        [(a, 3.0), (p0, 5.0), (b, 3.0)],
    ]
    result = aggregate(runs, plugin_nodes=1)
    assert result["calls"] == 3 and result["layer_count"] == 4
    by_name = {layer["name"]: layer for layer in result["layers"]}
    assert [layer["name"] for layer in result["layers"]] == [a, copy, p0, b]
    assert by_name[a] == {"name": a, "kind": None, "mean_ms": 2.0, "median_ms": 2.0, "min_ms": 1.0, "max_ms": 3.0,
                          "percent": pytest.approx(100 * 2.0 / (2.0 + 0.2 / 3 + 3.0 + 3.0))}
    assert by_name[b]["mean_ms"] == 3.0 and by_name[b]["min_ms"] == by_name[b]["max_ms"] == 3.0
    assert by_name[copy]["kind"] == "refinement_reformat" and by_name[copy]["min_ms"] == 0.0
    assert by_name[copy]["mean_ms"] == pytest.approx(0.2 / 3) and by_name[copy]["median_ms"] == pytest.approx(0.1)
    assert by_name[p0]["median_ms"] == 2.0 and by_name[p0]["mean_ms"] == 3.0
    total = 2.0 + 0.2 / 3 + 3.0 + 3.0
    assert result["total_ms"]["mean"] == pytest.approx(total)
    assert result["total_ms"]["min"] == pytest.approx(6.1) and result["total_ms"]["max"] == pytest.approx(11.0)
    assert result["total_ms"]["median"] == pytest.approx(7.1)
    assert math.isclose(sum(layer["percent"] for layer in result["layers"]), 100.0)
    ref = result["refinement"]
    assert ref["layers"] == 1 and ref["mean_ms"] == 3.0 and ref["percent"] == pytest.approx(100 * 3.0 / total)
    assert ref["reformat"]["layers"] == 1 and ref["reformat"]["mean_ms"] == pytest.approx(0.2 / 3)
    assert ref["graph_nodes"] == 1 and "warning" not in ref
    # two plugin layers where the manifest says so; a count that differs is reported, not hidden
    both = aggregate([[(p0, 1.0), (a, 1.0), (p1, 2.0)]], plugin_nodes=2)
    assert both["refinement"]["layers"] == 2 and both["refinement"]["mean_ms"] == 3.0
    assert both["refinement"]["percent"] == pytest.approx(75.0) and "warning" not in both["refinement"]
    short = aggregate([[(p0, 1.0), (a, 1.0)]], plugin_nodes=len(plugins) + 1)
    assert short["refinement"]["warning"] == (f"1 RefinerDLA layers reported, and the engine's graph holds "
                                              f"{len(plugins) + 1} RefinerDLA nodes")
    # an unfused engine: no plugin layer, share 0, no warning when its graph holds none
    plain = aggregate([[(a, 1.0), (b, 3.0)]], plugin_nodes=0)
    assert plain["refinement"]["layers"] == 0 and plain["refinement"]["percent"] == 0.0
    assert "warning" not in plain["refinement"]
    assert json.loads(json.dumps(result)) == result   # what --json prints


def test_aggregate_refuses_calls_without_records():
    with pytest.raises(VerificationError, match="no profiled calls"):
        aggregate([])
    with pytest.raises(VerificationError, match="no layer times for profiled call 2 of 2"):
        aggregate([[("a", 1.0)], []])


def test_the_table_shows_the_slowest_layers_and_sums_the_rest(fused_names, capsys):
    """The terminal form: the TOP_LAYERS slowest layers, slowest first, the plugin marked, the rest in one row."""
    from refiner_edge.cli.bench import TOP_LAYERS, print_layers

    plugins, others, _ = fused_names
    assert len(plugins) > 1   # for the warning below: one plugin layer reported where the graph holds more
    names = (others * 2)[: TOP_LAYERS + 5]
    names = [f"{n} #{i}" for i, n in enumerate(names)]
    records = [(n, 0.01 * (i + 1)) for i, n in enumerate(names)] + [(plugins[0], 1.0)]
    profile = aggregate([records, records], plugin_nodes=len(plugins))
    profile.update(call_ms={"mean": 2 * profile["total_ms"]["mean"]}, coverage=0.5, warmup=1)
    print_layers(profile)
    out = capsys.readouterr()
    lines = out.out.splitlines()
    row = next(i for i, line in enumerate(lines) if plugins[0] in line)
    cells = [c.strip() for c in lines[row].strip("│ ").split("│")]
    assert cells[:2] == ["1", f"{plugins[0]} [plugin]"] and cells[2] == "1.0000"   # the slowest, first
    assert names[-1] in out.out and names[0] not in out.out   # the fastest are summed, not listed
    assert f"{len(records) - TOP_LAYERS} other layers" in out.out
    share = 100 * 1.0 / profile["total_ms"]["mean"]
    assert f"refinement (RefinerDLA plugin): 1 layers, 1.0000 ms, {share:.1f}% of all layers" in out.out
    assert "(50%)" in out.out
    assert "warning" in profile["refinement"] and "RefinerDLA nodes" in out.err


# --- refusals ----------------------------------------------------------------------------------------------------

def engine_with_manifest(folder, **engine_fields):
    """A file named like an engine beside an engine manifest (good_manifest: TensorRT 10.3, a fused S@224 graph),
    with `engine_fields` changed: every refusal here comes from the manifest, before any byte of the plan is read."""
    folder.mkdir(parents=True, exist_ok=True)
    engine = folder / "model.engine"
    engine.write_bytes(b"not read before the refusal")
    data = good_manifest()
    data["engine"].update(engine_fields)
    manifest_path(engine).write_text(json.dumps(data))
    return engine


def assert_refused(result, code, *needles):
    assert result.exit_code == code, result.output
    assert_clean_failure(result, *needles)
    assert result.stdout == ""


def test_layers_needs_an_engine(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"")
    for args in (["--onnx", onnx], [], ["--variant", "refiner-vit-tiny"],
                 ["--triton", "localhost:1", "--engine", tmp_path / "m.engine"], ["--triton", "localhost:1"]):
        assert_refused(invoke("bench", "--layers", *args, "--json"), 2, "--layers", "give --engine")


def test_layers_refuses_a_stripped_engine(tmp_path):
    engine = engine_with_manifest(tmp_path, weights="stripped", refit="identical", weights_onnx="s.onnx")
    assert_refused(invoke("bench", "--engine", engine, "--layers", "--json"), 2, "weight-stripped",
                   "refiner-edge refit")


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the refusal where the tensorrt package is missing")
def test_layers_without_tensorrt_is_a_missing_dependency(tmp_path):
    engine = engine_with_manifest(tmp_path)
    assert_refused(invoke("bench", "--engine", engine, "--layers", "--json"), 3, "tensorrt is not installed")


@pytest.mark.skipif(not HAS_RTX or detect_gpu() is not None,
                    reason="checks the refusal of a TensorRT-RTX engine on a machine without a GPU")
def test_layers_without_a_gpu(tiny_engine, tmp_path):
    engine = tmp_path / "tiny.engine"
    shutil.copyfile(tiny_engine, engine)
    shutil.copyfile(manifest_path(tiny_engine), manifest_path(engine))
    assert_refused(invoke("bench", "--engine", engine, "--layers", "--cuda-graph", "--json"), 2,
                   "runs on a CUDA GPU", "has none")


def test_profile_layers_needs_a_tensorrt_runner(tiny_plain):
    """The library refuses a runner without TensorRT's profiler (ONNX Runtime here) in the same words."""
    from refiner_edge.runners.runtime import load_runner

    with load_runner("onnxruntime", onnx=tiny_plain) as runner:
        with pytest.raises(InputError, match="give --engine"):
            profile_layers(runner, iterations=1)


def test_profile_layers_counts_only_the_profiled_calls_after_warm_up(fused_names):
    """The profiled run's bookkeeping, on a runner standing in for a TensorRT engine (this machine has none): the
    profiler is set before the warm-up and taken off after, even when a call fails; warm-up records are dropped;
    each timed call's records are one call; the calls are capped at BENCH_MAX_PROFILED_CALLS."""
    import numpy as np

    from refiner_edge.defaults import BENCH_MAX_PROFILED_CALLS
    from refiner_edge.images.preprocess import Preprocess
    from refiner_edge.runners.base import Runner

    plugins, others, _ = fused_names
    state = {"report": None, "calls": 0, "set": [], "fail_at": None}

    def set_profiler(report):
        state["report"] = report
        state["set"].append(report is not None)

    def run(x):
        state["calls"] += 1
        if state["calls"] == state["fail_at"]:
            raise InputError("the engine could not run the batch")
        if state["report"] is not None:   # as TensorRT: every layer of the call, during the enqueue
            warm = state["calls"] <= 2
            for name, ms in ((others[0], 9.0 if warm else 1.0), (plugins[0], 9.0 if warm else 0.5)):
                state["report"](name, ms)
        return np.zeros((len(x), 10), np.float32)

    runner = Runner("tensorrt", run, Preprocess(16, 1.0, (0.5,) * 3, (0.5,) * 3, "bicubic"), 10, True, "stand-in",
                    set_profiler=set_profiler)
    result = profile_layers(runner, batch=2, iterations=4, warmup=2)
    assert state["calls"] == 6 and state["set"] == [True, False]
    assert result["calls"] == 4 and (result["iterations"], result["warmup"], result["batch"]) == (4, 2, 2)
    assert [(x["name"], x["max_ms"]) for x in result["layers"]] == [(others[0], 1.0), (plugins[0], 0.5)]
    assert result["refinement"]["percent"] == pytest.approx(100 / 3)
    assert result["call_ms"]["min"] > 0 and 0 < result["coverage"]   # a stand-in's call is not a GPU's: no bound
    state.update(calls=0, set=[], fail_at=4)
    with pytest.raises(InputError, match="could not run"):
        profile_layers(runner, iterations=3, warmup=1)
    assert state["set"] == [True, False] and state["report"] is None
    state.update(calls=0, set=[], fail_at=None)
    assert profile_layers(runner, iterations=10 ** 6, warmup=0)["calls"] == BENCH_MAX_PROFILED_CALLS
