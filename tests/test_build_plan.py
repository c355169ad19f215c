"""A build is resolved once (engine/plan.py): every check of a build runs once per build, from the command line
with a graph and through the whole chain, counted by wrapping the real functions (they still run); the plugin form
is chosen once and its availability probe registers nothing."""
import importlib.util
import json
import sys
from collections import Counter

import pytest

from refiner_edge.engine import build, plan, plugins, worker
from refiner_edge.engine.targets import TARGETS

from .helpers import invoke

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")

# each decision or check of a build, and the call that starts the builder's child
ONCE = [(plan, "resolve"), (plan, "read_network"), (plan, "graph_files"), (plan, "check_dla"), (plan, "check_fits"),
        (plan, "check_hardware_compat"), (plan, "check_device"), (plan, "batch_profile"), (plan, "tf32"),
        (build, "check_build_outputs"), (plugins, "choose_form"), (worker, "run_in_child")]
NEVER_IN_THE_PARENT = [(plugins, "prepare"), (plugins, "available")]   # the child prepares the plugin, once


def count_calls(monkeypatch, functions) -> Counter:
    """Wrap each real function, wherever a module of the package holds it (a module that imported it by name
    calls its own binding), with a spy that counts and calls through."""
    counts: Counter = Counter()
    for module, name in functions:
        real = getattr(module, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(*args, **kwargs)

        if isinstance(module, type):   # a method
            monkeypatch.setattr(module, name, spy)
            continue
        for loaded in list(sys.modules.values()):
            if getattr(loaded, "__name__", "").startswith("refiner_edge") and getattr(loaded, name, None) is real:
                monkeypatch.setattr(loaded, name, spy)
    return counts


def assert_once(counts: Counter, children: int = 1) -> None:
    """Each check once, and `children` children started: the builder's, and in the chain the export's too."""
    assert {name: counts[name] for _, name in ONCE} == {name: children if name == "run_in_child" else 1
                                                        for _, name in ONCE}
    assert {name: counts[name] for _, name in NEVER_IN_THE_PARENT} == {name: 0 for _, name in NEVER_IN_THE_PARENT}


@rtx
def test_each_check_runs_once_in_a_build_from_a_graph(tmp_path, tiny_plain, monkeypatch):
    counts = count_calls(monkeypatch, ONCE + NEVER_IN_THE_PARENT)
    result = invoke("build", "--onnx", tiny_plain, "--target", "rtx-sm89", "--batch", "1:2:4", "--json",
                    "-o", tmp_path / "t.engine")
    assert result.exit_code == 0, result.output
    assert_once(counts)
    report = json.loads(result.stdout)
    assert report["profiles"][0]["max"][0] == 4 and report["plugin_form"] == "none"


@rtx
def test_each_check_runs_once_in_the_chain(tmp_path, monkeypatch):
    """export -> build: the plan is resolved before the export, and the build stage takes it onto the graph the
    export made (with_graph: the chain's one read of a graph)."""
    pytest.importorskip("torch", reason="the chain exports the model with torch")
    counts = count_calls(monkeypatch, ONCE + NEVER_IN_THE_PARENT + [(plan.BuildPlan, "with_graph")])
    result = invoke("build", "--variant", "refiner-vit-tiny", "--target", "rtx-sm89", "--precision", "fp32",
                    "--json", "-o", tmp_path / "t.engine")
    assert result.exit_code == 0, result.output
    assert_once(counts, children=2)   # the export runs in its own child (pipeline.child_export), then the builder
    assert counts["with_graph"] == 1
    # the batch profile the parent settled is the one the child built and the manifest records
    report = json.loads(result.stdout)
    target = TARGETS["rtx-sm89"]
    assert report["profiles"][0]["max"][0] == target.batch[2] and report["workspace"] == target.workspace


def test_the_chains_plugin_probe_registers_nothing(monkeypatch):
    """Choosing the target's form for the chain asks whether the form is available here without registering the
    AOT plugin (which the builder's child does, once); where it is not, the chain builds the plain graph."""
    aot = plugins.import_aot()
    registered = count_calls(monkeypatch, [(aot, "register"), (plugins, "prepare")])
    notes: list[str] = []
    form = plugins.choose_form(TARGETS["thor-jp7"], None, fused=None, builder_version=lambda: "10.13.3",
                               note=notes.append)
    assert registered == Counter() and not plugins._aot_registered
    if form == "none":
        assert len(notes) == 1 and "the aot plugin form is not available" in notes[0]
    else:
        assert form == "aot" and notes == []
    # too old a TensorRT for the aot form: the plain graph, said in a note, nothing registered
    notes.clear()
    assert plugins.choose_form(TARGETS["thor-jp7"], None, fused=None, builder_version=lambda: "10.3.0",
                               note=notes.append) == "none"
    assert "needs TensorRT >= 10.9" in notes[0] and registered == Counter()
    # weakly typed: the plain graph, unprobed
    assert plugins.choose_form(TARGETS["orin-agx-jp6"], None, fused=None, weak=True) == "none"


def test_list_targets_reads_the_plans_defaults():
    """--list-targets shows what a build with no options settles, through the plan's own resolvers."""
    rows = {row["name"]: row for row in json.loads(invoke("build", "--list-targets", "--json").stdout)}
    for target in TARGETS.values():
        row, options = rows[target.name], plan.BuildOptions(target)
        assert row["workspace_gib"] * (1 << 30) == plan.workspace(options) == target.workspace
        assert row["opt_level"] == plan.opt_level(options) and row["tf32"] is plan.tf32(options)
        assert row["plugin"] == ("none" if target.rtx else target.plugin)


@rtx
def test_every_stage_returns_one_result_type(tmp_path, tiny_model, sample_photos):
    """export, calibrate, fuse and build each return a StageResult: the artifact, the manifest written beside it
    (read back equal), the comparison it was verified by (None where nothing was compared) and its report."""
    from refiner_edge.engine.build import BuildOptions, build_engine
    from refiner_edge.manifest import read_manifest
    from refiner_edge.onnx.export import export_onnx
    from refiner_edge.precision.calibrate import CalibrateOptions, calibrate_onnx
    from refiner_edge.result import StageResult

    plain, fp16 = tmp_path / "t.onnx", tmp_path / "t.fp16.onnx"
    results = {"export": export_onnx(tiny_model, plain),
               "calibrate": calibrate_onnx(plain, sample_photos[0].parent, fp16,
                                           CalibrateOptions(precision="fp16", num=2, eval_num=2)),
               "build": build_engine(fp16, tmp_path / "t.engine", BuildOptions(TARGETS["rtx-sm89"], batch=(1, 1, 2)))}
    if importlib.util.find_spec("onnxruntime_extensions") is not None:   # the fused graph's check needs it
        from refiner_edge.refine.fuse import fuse_onnx

        results["fuse"] = fuse_onnx(plain, tmp_path / "t.fused.onnx")
        assert results["fuse"].report == {"fused_nodes": 2, "form": "library"} and results["fuse"].comparison
    for stage, result in results.items():
        assert type(result) is StageResult and result.manifest.stage == stage
        assert result.manifest == read_manifest(result.artifact)
    assert results["export"].comparison and results["calibrate"].comparison.images == 2
    assert results["calibrate"].report == results["calibrate"].manifest.report
    assert results["build"].comparison is None and "trtexec" in results["build"].report


def test_the_package_docstring_states_the_import_checks_layers(tmp_path, monkeypatch):
    """tools/import_check.py holds the layer order (the pipeline above the stages, the CLI on top) and refuses a
    package docstring that states another."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root / "tools"))
    import import_check

    assert import_check.STAGES[-2:] == ("pipeline", "cli") and import_check.stage_order_problems(root) == []
    assert import_check.stage_of("refiner_edge.pipeline") > import_check.stage_of("refiner_edge.engine.build")
    package = tmp_path / import_check.PACKAGE
    package.mkdir()
    package.joinpath("__init__.py").write_text('"""Stages: models -> onnx -> precision -> refine -> engine."""\n')
    assert len(import_check.stage_order_problems(tmp_path)) == 1


def test_option_refusals_are_the_librarys(tmp_path, tiny_plain):
    """A refusal of the options belongs to the plan, so a Python caller meets the one the command line prints."""
    from refiner_edge.engine.build import BuildOptions, build_engine
    from refiner_edge.errors import InputError

    with pytest.raises(InputError, match="TensorRT-RTX engines are not version compatible"):
        build_engine(tiny_plain, tmp_path / "t.engine", BuildOptions(TARGETS["rtx-sm89"], version_compatible=True))
    result = invoke("build", "--onnx", tiny_plain, "--target", "rtx-sm89", "--version-compatible",
                    "-o", tmp_path / "t.engine")
    assert result.exit_code == 2 and "not version compatible" in result.stderr
    assert not list(tmp_path.iterdir())
