"""Weight-stripped engines, refit and `inspect` (issue 26, items 1 and 4).

TensorRT-RTX 1.7.1 builds plain engines on a CPU but compiles refittable weights with CUDA, so a stripped or
refittable build needs a GPU: here it is refused in one line before the build, and the tests that build stripped
plans and refit them run on a GPU (benchmarks/gpu_check.sh). What a stripped engine's manifest says is tested here on
the tiny engine with its manifest set as `build --strip-weights` writes it (the plan itself is the full one: every
check under test reads the manifest before TensorRT)."""
import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from refiner_edge.artifacts import file_sha256, manifest_path
from refiner_edge.engine import plan as plan_module
from refiner_edge.engine.backend import refit_flags
from refiner_edge.engine.refit import onnx_weights
from refiner_edge.engine.targets import TARGETS, detect_gpu
from refiner_edge.manifest import read_manifest

from .helpers import assert_clean_failure, invoke

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")
HAS_GPU = detect_gpu() is not None
gpu = pytest.mark.skipif(not (HAS_RTX and HAS_GPU), reason="TensorRT-RTX compiles refittable weights with CUDA and "
                         "runs engines on a GPU: this machine has none (benchmarks/gpu_check.sh runs these)")
no_gpu = pytest.mark.skipif(HAS_GPU, reason="checks the refusal on a machine without a GPU")


def export_tiny(folder: Path, name: str, seed: int, **model) -> Path:
    from refiner_edge.models.factory import create_model
    from refiner_edge.onnx.export import export_onnx

    from .helpers import randomize

    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(randomize(create_model("refiner-vit-tiny", **model), seed=seed), folder / name)
    return folder / name


@pytest.fixture(scope="module")
def other_graphs(tmp_path_factory) -> dict:
    """Another checkpoint of the tiny variant (same layout, other values), and the tiny variant with a 10-class
    head and at 32x32 (other variants of it: other shapes)."""
    folder = tmp_path_factory.mktemp("other_graphs")
    return {"checkpoint": export_tiny(folder, "seed2.onnx", seed=2),
            "head": export_tiny(folder, "head10.onnx", seed=1, num_classes=10),
            "size": export_tiny(folder, "size32.onnx", seed=1, img_size=32)}


def as_stripped(engine: Path, folder: Path, source: Path, refit: str = "identical", weights: str = "stripped") -> Path:
    """A copy of `engine` whose manifest says what `build --strip-weights` (refit identical) or `--strip-weights
    --refittable` (refit any) records, with `source` as the graph its weights come from."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / "stripped.engine"
    shutil.copyfile(engine, copy)
    data = json.loads(manifest_path(engine).read_text())
    data["artifact"] = copy.name
    data["engine"].update(weights=weights, refit=refit, weights_onnx=str(source.absolute()),
                          weights_sha256=file_sha256(source))
    data["report"]["weights"] = onnx_weights(source)
    manifest_path(copy).write_text(json.dumps(data))
    return copy


def assert_nothing_written(*paths: Path) -> None:
    for path in paths:
        assert not path.exists() and not manifest_path(path).exists(), path
        leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".refiner-edge")]
        assert not leftovers, leftovers


# --- build --strip-weights / --refittable: the plan's lines and flags -------------------------------------------

@rtx
def test_strip_weights_sets_the_flags_and_the_rebuild_and_trtexec_lines(tiny_plain, tmp_path):
    """STRIP_PLAN with REFIT_IDENTICAL (or REFIT with --refittable), and both lines repeat the options: the rebuild
    line as --strip-weights/--refittable, trtexec's as --stripWeights (its default, REFIT_IDENTICAL) and --refit."""
    base = plan_module.resolve(plan_module.BuildOptions(TARGETS["rtx-sm89"], batch=(1, 2, 8)),
                               plan_module.read_network(tiny_plain))
    assert base.refit is None and refit_flags(base) == []

    def with_options(plan, **changes):
        return dataclasses.replace(plan, options=dataclasses.replace(plan.options, **changes))

    stripped = with_options(base, strip_weights=True)
    assert stripped.refit == "identical" and refit_flags(stripped) == ["REFIT_IDENTICAL", "STRIP_PLAN"]
    refittable = with_options(base, strip_weights=True, refittable=True)
    assert refittable.refit == "any" and refit_flags(refittable) == ["REFIT", "STRIP_PLAN"]
    assert refit_flags(with_options(base, refittable=True)) == ["REFIT"]
    line = plan_module.rebuild_command(tmp_path / "s.engine", refittable)
    assert "--strip-weights --refittable" in line
    assert "--strip-weights" not in plan_module.rebuild_command(tmp_path / "s.engine", base)
    # the trtexec line is TensorRT's (none for TensorRT-RTX): the same plan for a TensorRT target
    orin = dataclasses.replace(stripped, tensorrt_version="10.3.0",
                               options=dataclasses.replace(stripped.options, target=TARGETS["orin-agx-jp6"]))
    assert "--stripWeights" in plan_module.trtexec_command(orin, tmp_path / "s.engine").split()
    assert "--refit" not in plan_module.trtexec_command(orin, tmp_path / "s.engine").split()
    both = dataclasses.replace(orin, options=dataclasses.replace(orin.options, refittable=True))
    assert {"--stripWeights", "--refit"} <= set(plan_module.trtexec_command(both, tmp_path / "s.engine").split())


@rtx
@no_gpu
@pytest.mark.parametrize("flag", ["--strip-weights", "--refittable"])
def test_a_refittable_build_without_a_gpu_is_one_line(tiny_plain, tmp_path, flag):
    """TensorRT-RTX's compiler needs CUDA for refittable weights (a bare MyelinCheckException after the parse
    otherwise): refused before the build, exit 2, nothing written."""
    out = tmp_path / "s.engine"
    result = invoke("build", "--onnx", tiny_plain, "--target", "rtx-sm89", flag, "-o", out)
    assert result.exit_code == 2
    assert_clean_failure(result, "refittable", "no GPU")
    assert_nothing_written(out)
    # the chain refuses before its export
    chain = tmp_path / "chain" / "t.engine"
    result = invoke("build", "--variant", "refiner-vit-tiny", "--target", "rtx-sm89", flag, "-o", chain)
    assert result.exit_code == 2
    assert_clean_failure(result, "refittable", "no GPU")
    assert not chain.parent.exists()


def test_the_weights_layout_is_the_same_for_another_checkpoint(tiny_plain, other_graphs):
    """refit compares names, types and shapes, not values: another checkpoint of the variant matches, another
    head or size does not; the bytes are the graph's initializers."""
    import onnx

    ours = onnx_weights(tiny_plain)
    assert ours == {**onnx_weights(other_graphs["checkpoint"]), "bytes": ours["bytes"],
                    "plan_bytes": ours["plan_bytes"]}
    assert ours["layout_sha256"] != onnx_weights(other_graphs["head"])["layout_sha256"]
    assert ours["layout_sha256"] != onnx_weights(other_graphs["size"])["layout_sha256"]
    inits = onnx.load(str(tiny_plain)).graph.initializer
    assert ours["bytes"] == sum(onnx.numpy_helper.to_array(i).nbytes for i in inits) > 0
    assert ours["plan_bytes"] == ours["bytes"]   # no QuantizeLinear in a plain graph
    assert ours["initializers"] == len(inits)


# --- a stripped engine is refused by the runners before TensorRT ----------------------------------------------

@rtx
def test_infer_refuses_a_stripped_engine_in_one_line(tiny_engine, tiny_plain, tmp_path, sample_photos):
    engine = as_stripped(tiny_engine, tmp_path / "e", tiny_plain)
    out = tmp_path / "out.json"
    result = invoke("infer", "--engine", engine, sample_photos[0], "--json")
    assert result.exit_code == 2
    assert_clean_failure(result, "weight-stripped", f"refiner-edge refit {engine} --onnx {tiny_plain.absolute()}")
    assert not out.exists() and result.stdout == ""


@rtx
def test_the_stripped_fields_are_read_and_range_checked(tiny_engine, tiny_plain, tmp_path):
    engine = as_stripped(tiny_engine, tmp_path / "e", tiny_plain, refit="any")
    info = read_manifest(engine).engine
    assert (info.weights, info.refit, info.weights_sha256) == ("stripped", "any", file_sha256(tiny_plain))
    data = json.loads(manifest_path(engine).read_text())
    for field, value, message in (("weights", "none", "weights 'none' is not one of included, stripped"),
                                  ("refit", "always", "refit 'always' is not one of identical, any")):
        bad = json.loads(json.dumps(data))
        bad["engine"][field] = value
        manifest_path(engine).write_text(json.dumps(bad))
        result = invoke("inspect", engine)
        assert result.exit_code == 2
        assert_clean_failure(result, message)
    # a manifest written before the fields: an engine with its weights, not refittable
    for field in ("weights", "refit", "weights_onnx", "weights_sha256"):
        data["engine"].pop(field)
    manifest_path(engine).write_text(json.dumps(data))
    info = read_manifest(engine).engine
    assert (info.weights, info.refit, info.weights_onnx) == ("included", None, None)


# --- refit: its refusals before TensorRT ----------------------------------------------------------------------

@rtx
def test_refit_refuses_an_engine_that_is_not_refittable(tiny_engine, tiny_plain, tmp_path):
    out = tmp_path / "full.engine"
    result = invoke("refit", tiny_engine, "--onnx", tiny_plain, "-o", out)
    assert result.exit_code == 2
    assert_clean_failure(result, "is not refittable", "--strip-weights")
    assert_nothing_written(out)


@rtx
@pytest.mark.parametrize("other,words", [("head", "with 10 classes"), ("size", "refiner-vit-tiny at 32")])
def test_refit_refuses_another_variant(tiny_engine, tiny_plain, other_graphs, tmp_path, other, words):
    engine = as_stripped(tiny_engine, tmp_path / "e", tiny_plain, refit="any")
    out = tmp_path / "full.engine"
    result = invoke("refit", engine, "--onnx", other_graphs[other], "-o", out)
    assert result.exit_code == 2
    assert_clean_failure(result, words, "same variant")
    assert_nothing_written(out)


@rtx
def test_refit_identical_refuses_another_checkpoint(tiny_engine, tiny_plain, other_graphs, tmp_path):
    """REFIT_IDENTICAL takes only the weights it was built with: another checkpoint's graph (and the recorded graph
    once changed) is refused by SHA-256."""
    engine = as_stripped(tiny_engine, tmp_path / "e", tiny_plain, refit="identical")
    out = tmp_path / "full.engine"
    result = invoke("refit", engine, "--onnx", other_graphs["checkpoint"], "-o", out)
    assert result.exit_code == 2
    assert_clean_failure(result, "REFIT_IDENTICAL", str(tiny_plain.absolute()), "--refittable")
    assert_nothing_written(out)


@rtx
def test_refit_refuses_other_layer_names_or_shapes(tiny_engine, tiny_plain, other_graphs, tmp_path):
    """A graph of the same variant whose initializers differ (here: the recorded layout is another graph's) is
    refused before TensorRT would fail on it."""
    engine = as_stripped(tiny_engine, tmp_path / "e", tiny_plain, refit="any")
    data = json.loads(manifest_path(engine).read_text())
    data["report"]["weights"] = onnx_weights(other_graphs["size"])
    manifest_path(engine).write_text(json.dumps(data))
    out = tmp_path / "full.engine"
    result = invoke("refit", engine, "--onnx", other_graphs["checkpoint"], "-o", out)
    assert result.exit_code == 2
    assert_clean_failure(result, "layer names or shapes differ")
    assert_nothing_written(out)


@rtx
def test_refit_refuses_an_engine_or_a_graph_without_manifest_as_the_graph(tiny_engine, tiny_plain, tmp_path):
    engine = as_stripped(tiny_engine, tmp_path / "e", tiny_plain, refit="any")
    out = tmp_path / "full.engine"
    result = invoke("refit", engine, "--onnx", tiny_engine, "-o", out)
    assert result.exit_code == 2
    assert_clean_failure(result, "is an engine, not an ONNX graph")
    bare = tmp_path / "bare.onnx"
    shutil.copyfile(tiny_plain, bare)
    result = invoke("refit", engine, "--onnx", bare, "-o", out)
    assert result.exit_code == 2
    assert_clean_failure(result, "has no manifest")
    assert_nothing_written(out)


@rtx
@no_gpu
def test_refit_with_another_checkpoint_passes_the_checks_and_needs_a_gpu(tiny_engine, tiny_plain, other_graphs,
                                                                        tmp_path):
    """A refittable (any) engine takes another checkpoint's graph: every check passes, and the refit stops at the
    GPU it needs, in one line, nothing written."""
    engine = as_stripped(tiny_engine, tmp_path / "e", tiny_plain, refit="any")
    out = tmp_path / "full.engine"
    result = invoke("refit", engine, "--onnx", other_graphs["checkpoint"], "-o", out)
    assert result.exit_code == 2
    assert_clean_failure(result, "runs on a CUDA GPU", "has none")
    assert_nothing_written(out)


# --- inspect --------------------------------------------------------------------------------------------------

@rtx
def test_inspect_reads_the_engine_facts_from_its_manifest(tiny_engine):
    result = invoke("inspect", tiny_engine, "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["profiles"] == [{"input": "input", "min": [1, 3, 64, 64], "opt": [2, 3, 64, 64],
                                  "max": [8, 3, 64, 64], "batches": [1, 8]}]   # the batches it runs
    assert facts["inputs"] == [{"name": "input", "shape": ["batch", 3, 64, 64], "dtype": "float32"}]
    assert facts["outputs"] == [{"name": "logits", "shape": ["batch", 1000], "dtype": "float32"}]
    assert (facts["precision"], facts["plugin_form"], facts["weights"], facts["flavour"]) == \
        ("fp32", "none", "included", "tensorrt-rtx")
    assert facts["bytes"]["plan"] == tiny_engine.stat().st_size
    assert facts["bytes"]["manifest"] == manifest_path(tiny_engine).stat().st_size
    memory = facts["device_memory_estimate"]
    assert memory["max_batch"] == 8 and memory["bytes"] == memory["plan"] + memory["activations_at_max_batch"]
    assert memory["plan"] == tiny_engine.stat().st_size
    if not HAS_GPU:
        assert facts["layers"] is None and "has none" in facts["layers_skipped"]
    human = invoke("inspect", tiny_engine)
    assert human.exit_code == 0, human.output
    for words in ("input float32 batchx3x64x64", "profile 0     input min 1 opt 2 max 8", "precision     fp32",
                  "device memory about", "layers        "):
        assert words in human.stdout, human.stdout


@rtx
def test_inspect_of_a_stripped_engine_names_its_weights(tiny_engine, tiny_plain, tmp_path):
    engine = as_stripped(tiny_engine, tmp_path / "e", tiny_plain)
    facts = json.loads(invoke("inspect", engine, "--json").stdout)
    weights = onnx_weights(tiny_plain)
    assert (facts["weights"], facts["refit"], facts["weights_onnx"]) == \
        ("stripped", "identical", str(tiny_plain.absolute()))
    assert facts["bytes"]["weights_onnx"] == weights["bytes"]
    assert facts["device_memory_estimate"]["plan"] == engine.stat().st_size + weights["bytes"]
    assert facts["layers"] is None and "refit it first" in facts["layers_skipped"]


@rtx
def test_inspect_refuses_what_is_not_an_engine(tiny_engine, tiny_plain, tmp_path):
    for path, words in ((tiny_plain, "an export manifest, not an engine's"), (tmp_path / "none.engine", "not found")):
        result = invoke("inspect", path)
        assert result.exit_code == 2
        assert_clean_failure(result, words)
    garbage = tmp_path / "garbage.engine"
    garbage.write_bytes(b"not an engine")
    result = invoke("inspect", garbage)
    assert result.exit_code == 2
    assert_clean_failure(result, "has no manifest")
    # a file beside an engine's manifest that is not that engine
    shutil.copyfile(manifest_path(tiny_engine), manifest_path(garbage))
    result = invoke("inspect", garbage, "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert_clean_failure(result, "is not the engine its manifest describes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.engine", "garbage.engine.json"]


# --- on a GPU (benchmarks/gpu_check.sh): stripped builds, their size, refit -------------------------------------

def build(graph: Path, out: Path, *flags) -> Path:
    result = invoke("build", "--onnx", graph, "--target", "rtx-sm89", *flags, "-o", out)
    assert result.exit_code == 0, result.output
    return out


def check_stripped_size(graph: Path, folder: Path, batch: str) -> None:
    full = build(graph, folder / "full.engine", "--batch", batch)
    stripped = build(graph, folder / "stripped.engine", "--batch", batch, "--strip-weights")
    weights = read_manifest(stripped).report["weights"]
    saved = full.stat().st_size - stripped.stat().st_size
    print(f"{graph.name}: full {full.stat().st_size} B, stripped {stripped.stat().st_size} B, weights "
          f"{weights['plan_bytes']} B as the plan holds them")
    assert saved >= weights["plan_bytes"]
    info = read_manifest(stripped).engine
    assert (info.weights, info.refit, info.weights_sha256) == ("stripped", "identical", file_sha256(graph))


@gpu
def test_a_stripped_tiny_plan_is_smaller_by_its_weights(tiny_plain, tmp_path):
    check_stripped_size(tiny_plain, tmp_path, "1:2:8")


@gpu
@pytest.mark.slow
def test_a_stripped_s224_int8_plan_is_smaller_by_its_weights(refiner_s_graphs, tmp_path):
    check_stripped_size(refiner_s_graphs["int8"], tmp_path, "1:4:8")


@gpu
def test_refit_fills_the_weights_in(tiny_plain, other_graphs, tmp_path, sample_photos):
    """The stripped plan refitted from its graph predicts what the full engine predicts; a --refittable one
    refitted from another checkpoint predicts what that checkpoint's full engine predicts."""
    def predictions(engine: Path) -> list:
        """Each image's top class and its probability."""
        result = invoke("infer", "--engine", engine, *sample_photos, "--json", "--topk", "1")
        assert result.exit_code == 0, result.output
        return [(r["predictions"][0]["index"], r["predictions"][0]["prob"]) for r in json.loads(result.stdout)]

    def same(a: list, b: list) -> bool:
        """The same classes, probabilities within 1e-3 (two builds of one graph may pick other kernels)."""
        return [i for i, _ in a] == [i for i, _ in b] and all(abs(p - q) < 1e-3 for (_, p), (_, q) in zip(a, b))

    full = build(tiny_plain, tmp_path / "full.engine", "--batch", "1:2:8")
    stripped = build(tiny_plain, tmp_path / "stripped.engine", "--batch", "1:2:8", "--strip-weights")
    refitted = tmp_path / "refitted.engine"
    result = invoke("refit", stripped, "--onnx", tiny_plain, "-o", refitted)
    assert result.exit_code == 0, result.output
    assert read_manifest(refitted).engine.weights == "included"
    assert same(predictions(refitted), predictions(full))
    any_weights = build(tiny_plain, tmp_path / "any.engine", "--batch", "1:2:8", "--strip-weights", "--refittable")
    other_full = build(other_graphs["checkpoint"], tmp_path / "other.engine", "--batch", "1:2:8")
    other = tmp_path / "other_refitted.engine"
    result = invoke("refit", any_weights, "--onnx", other_graphs["checkpoint"], "-o", other)
    assert result.exit_code == 0, result.output
    assert same(predictions(other), predictions(other_full))
    facts = json.loads(invoke("inspect", other, "--json").stdout)
    assert facts["layers"]["layers"] and facts["layers"]["device_memory_bytes"] > 0


# --- the C++ library refuses a stripped engine as Python does -------------------------------------------------

@pytest.mark.slow
def test_cpp_refuses_a_stripped_engine_as_python_does(tmp_path, request):
    from refiner_edge.engine.checks import Runtime, check_engine
    from refiner_edge.errors import InputError
    from refiner_edge.manifest import write_manifest

    from .test_cpp import _engine_manifest, _run

    build = request.getfixturevalue("cpp_build")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00plan bytes")
    for source in (str(tmp_path / "model dir" / "model.onnx"), None):
        write_manifest(engine, _engine_manifest(tmp_path, weights="stripped", refit="identical",
                                                weights_onnx=source, weights_sha256="0" * 64))
        with pytest.raises(InputError) as e:
            check_engine(engine, read_manifest(engine), Runtime("tensorrt", "10.3.0", "8.7", "Orin"))
        r = _run([build["probe"], "check-engine", engine, "tensorrt", "10.3.0", "8.7", "Orin"])
        assert r.returncode == 1 and r.stderr.strip() == f"error: {e.value}", r.stderr
        assert "weight-stripped" in str(e.value)


@pytest.fixture(scope="module")
def cpp_build(tmp_path_factory):
    """tests/test_cpp.py's build of cpp/ (its fixture, called once for this module)."""
    from . import test_cpp

    return test_cpp.build.__wrapped__(tmp_path_factory)


@rtx
@pytest.mark.parametrize("kind", ["triton", "deepstream"])
def test_deploy_refuses_a_stripped_engine(tiny_engine, tiny_plain, tmp_path, kind):
    """Triton and nvinfer load the plan as it is: a stripped one would serve without its weights."""
    engine = as_stripped(tiny_engine, tmp_path / "e", tiny_plain)
    out = tmp_path / "out"
    result = invoke("deploy", kind, "--engine", engine, "-o", out)
    assert result.exit_code == 2
    assert_clean_failure(result, "weight-stripped", "refiner-edge refit")
    assert not out.exists()
