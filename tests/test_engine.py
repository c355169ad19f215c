"""`refiner-edge build`: the targets table, real TensorRT-RTX builds (no GPU needed) of Refiner-ViT-S and the tiny
variant through the one Polygraphy-based builder and the CLI, the build chain's reuse, raw engines with manifests,
the load-time checks, and every refusal. TensorRT and GPU tests skip here with their reason."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from refiner_edge.engine import plugins
from refiner_edge.cli.build import parse_batch, parse_size
from refiner_edge.engine.build import BuildOptions, build_engine
from refiner_edge.engine.checks import Runtime, batch_in_profile, check_engine, read_engine_manifest
from refiner_edge.engine.targets import TARGETS, Gpu, detect_gpu, get_target, match_target
from refiner_edge.errors import InputError, MissingDependencyError
from refiner_edge.manifest import Profile, read_manifest

from .helpers import assert_clean_failure, invoke

pytestmark = pytest.mark.torch_free

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
HAS_TRT = importlib.util.find_spec("tensorrt") is not None
rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "engines.md"


def build_rtx(onnx, out, cc="89", **kw):
    return build_engine(onnx, out, BuildOptions(TARGETS[f"rtx-sm{cc}"], batch=kw.pop("batch", (1, 2, 8)), **kw)
                        ).manifest


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory, tiny_plain):
    if not HAS_RTX:
        pytest.skip("tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")
    out = tmp_path_factory.mktemp("tiny_engine") / "tiny.engine"
    build_rtx(tiny_plain, out)
    return out


# --- targets as data -------------------------------------------------------------------------------------------

def test_target_table_covers_the_devices_and_is_documented():
    names = set(TARGETS)
    for needed in ("orin-nano-jp6", "orin-nx-jp6", "orin-agx-jp6", "orin-agx-jp7", "thor-jp7", "a100", "a10", "l4",
                   "l40s", "h100", "h200", "b200", "rtx-sm75", "rtx-sm86", "rtx-sm89", "rtx-sm120"):
        assert needed in names
    docs = DOCS.read_text()
    for t in TARGETS.values():
        assert f"`{t.name}`" in docs, f"{t.name} missing from docs/engines.md"
        assert t.flavour in ("tensorrt", "tensorrt-rtx") and t.plugin in plugins.FORMS
        assert 1 <= t.batch[0] <= t.batch[1] <= t.batch[2] and t.workspace >= 1 << 30
        assert t.hardware_compat in ("none", "ampere+", "same-cc") and 0 <= t.opt_level <= 5
        if t.rtx:
            assert t.plugin == "none" and t.dla_cores == 0   # TensorRT-RTX has no custom plugins, no DLA
    assert TARGETS["thor-jp7"].dla_cores == 0 and TARGETS["thor-jp7"].sm == "sm_110"
    assert TARGETS["orin-agx-jp6"].dla_cores == 2 and TARGETS["orin-agx-jp6"].tensorrt == "10.3"
    assert TARGETS["orin-agx-jp6"].plugin == "library"   # TensorRT 10.3 predates AOT plugins (10.9)
    assert TARGETS["orin-agx-jp7"].strongly_typed_only and not TARGETS["orin-agx-jp6"].strongly_typed_only


@rtx
def test_rtx_rows_are_compute_capabilities_tensorrt_rtx_knows():
    import tensorrt_rtx

    for t in TARGETS.values():
        if t.rtx:
            assert hasattr(tensorrt_rtx.ComputeCapability, "SM" + t.compute_capability.replace(".", ""))


def test_match_target_picks_the_row_for_a_gpu_and_builder():
    assert match_target(Gpu("NVIDIA L4", "8.9", 0), "tensorrt", "10.13.3").name == "l4"
    assert match_target(Gpu("NVIDIA H200", "9.0", 0), "tensorrt", "10.13.3").name == "h200"
    assert match_target(Gpu("Orin NX", "8.7", 0), "tensorrt", "10.3.0").name == "orin-nx-jp6"
    assert match_target(Gpu("Orin", "8.7", 0), "tensorrt", "11.4.1").name == "orin-agx-jp7"
    assert match_target(Gpu("NVIDIA GeForce RTX 3090", "8.6", 0), "tensorrt-rtx").name == "rtx-sm86"
    with pytest.raises(InputError, match="no target for NVIDIA H100"):
        match_target(Gpu("NVIDIA H100", "9.0", 0), "tensorrt-rtx")   # TensorRT-RTX refuses Hopper


def test_auto_target_without_a_gpu_is_a_clear_error():
    if detect_gpu() is not None:
        pytest.skip("this machine has a GPU: `auto` resolves instead of failing")
    with pytest.raises(InputError, match="--target auto needs a local CUDA GPU.*--target rtx-sm89"):
        get_target("auto")
    assert_clean_failure(invoke("build", "--target", "auto", "--onnx", "x.onnx", "-o", "x.engine"),
                         "needs a local CUDA GPU")
    with pytest.raises(InputError, match="unknown target 'tx2'"):
        get_target("tx2")


def test_option_parsing():
    assert parse_batch("1:4:16") == (1, 4, 16) and parse_batch("4") == (4, 4, 4)
    assert parse_size("2G") == 2 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("1024") == 1024
    for bad in ("4:1:8", "0:1:2", "a:b:c", "1:2"):
        with pytest.raises(InputError, match="--batch"):
            parse_batch(bad)
    for bad in ("lots", "0.5", "0", "-2G", "1e400", "nan"):  # under a byte, or not finite: never a silent default
        with pytest.raises(InputError, match="--workspace"):
            parse_size(bad)


def test_chain_names_its_stages_after_the_engine():
    from refiner_edge.pipeline import artifact_paths

    paths = artifact_paths(Path("out/s.int8.engine"), "int8", fused=True)
    assert [p.name for p in paths.values()] == ["s.onnx", "s.int8.onnx", "s.int8.fused.onnx"]
    assert artifact_paths(Path("m.plan"), "fp32", fused=False)["calibrate"] is None


def test_missing_checkpoint_is_an_input_error(tmp_path):
    result = invoke("build", "--checkpoint", tmp_path / "nope.pth", "--target", "rtx-sm89", "-o", tmp_path / "e")
    assert result.exit_code == 2
    assert_clean_failure(result, "nope.pth")


@pytest.mark.tensorrt
def test_aot_plugin_registers_with_tensorrt():
    """The AOT plugin's definitions pass tensorrt.plugin's own validation (annotations, autotune positions)."""
    trt = pytest.importorskip("tensorrt", reason="tensorrt is not installed (NVIDIA's index is unreachable here)")
    pytest.importorskip("tensorrt.plugin", reason=f"tensorrt {trt.__version__} has no tensorrt.plugin (< 10.6)")
    from refiner_edge.refine import aot

    aot.register(portable_cc=80)
    assert aot.QUALIFIED_NAME in {f"{c.plugin_namespace}::{c.name}" for c in trt.get_plugin_registry().all_creators}


# --- real builds with TensorRT-RTX ------------------------------------------------------------------------------

@rtx
@pytest.mark.parametrize("cc", ["86", "89"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_refiner_s_builds_raw_engine_with_manifest(tmp_path, refiner_s_graphs, precision, cc):
    onnx = refiner_s_graphs[precision]
    out = tmp_path / f"s.{precision}.sm{cc}.engine"
    record = build_rtx(onnx, out, cc)
    data = out.read_bytes()
    print(f"Refiner-ViT-S {precision} sm_{cc}: {len(data) / 1e6:.1f} MB in {record.engine.build_seconds:.1f} s")
    # raw: TensorRT's own plan, no JSON header, the same leading bytes as every other engine it writes
    assert data[:1] not in (b"{", b"[") and len(data) > 5_000_000 and data[:4] == b"vtrt"
    m = read_engine_manifest(out)
    e = m.engine
    assert m.stage == "build" and m.artifact == out.name and m.sha256 and m.graph.precision == precision
    assert (e.flavour, e.compute_capability, e.precision, e.typing) == ("tensorrt-rtx", f"{cc[0]}.{cc[1]}",
                                                                        precision, "strong")
    assert e.profiles == [Profile(input="input", min=[1, 3, 224, 224], opt=[2, 3, 224, 224], max=[8, 3, 224, 224])]
    source = read_manifest(onnx)
    assert m.source.artifact == onnx.name and m.source.sha256 == source.sha256
    assert m.preprocess == source.preprocess and m.labels == source.labels and m.model == source.model
    assert e.plugin_form == "none" and e.plugin_library is None and e.build_seconds > 0
    assert e.rebuild.startswith("refiner-edge build --onnx") and f"--target rtx-sm{cc}" in e.rebuild
    # the manifest's checks pass on the machine it was built for, and name the rebuild on any other
    here = Runtime("tensorrt-rtx", e.tensorrt_version, e.compute_capability, "an RTX GPU")
    check_engine(out, m, here)
    other = "8.6" if cc == "89" else "8.9"
    with pytest.raises(InputError, match=f"built for sm_{cc}.*is sm_{other.replace('.', '')}: rebuild with: "
                                         "refiner-edge build"):
        check_engine(out, m, Runtime("tensorrt-rtx", e.tensorrt_version, other, "an RTX GPU"), hash_file=False)


@rtx
def test_cli_builds_refiner_s_from_its_graph(tmp_path, refiner_s_graphs):
    out = tmp_path / "s.engine"
    result = invoke("build", "--onnx", refiner_s_graphs["int8"], "--target", "rtx-sm86", "--batch", "1:2:4",
                    "--workspace", "2G", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["precision"] == "int8" and report["compute_capability"] == "8.6" and report["bytes"] > 5e6
    assert report["profiles"][0]["max"] == [4, 3, 224, 224] and report["stages"]["build"]["reused"] is False
    assert read_engine_manifest(out).engine.workspace == 2 << 30
    assert out.read_bytes()[:4] == b"vtrt"


@rtx
@pytest.mark.torch   # from nothing: exports the PyTorch model first
def test_cli_chain_from_nothing_reuses_its_stages(tmp_path):
    out = tmp_path / "t.engine"
    args = ("build", "--precision", "int8", "--target", "rtx-sm89", "--variant", "refiner-vit-tiny", "-o", out,
            "--json")
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    stages = json.loads(first.stdout)["stages"]
    assert list(stages) == ["export", "calibrate", "build"] and not any(s["reused"] for s in stages.values())
    # the report carries the manifest's engine record as it is, not a retyped selection of it
    engine_record = json.loads((tmp_path / "t.engine.json").read_text())["engine"]
    assert {k: json.loads(first.stdout)[k] for k in engine_record} == engine_record
    for name in ("t.onnx", "t.onnx.json", "t.int8.onnx", "t.int8.onnx.json", "t.int8.calib", "t.engine.json"):
        assert (tmp_path / name).is_file(), name
    key = read_manifest(tmp_path / "t.int8.onnx").report["chain_key"]
    assert len(key) == 64
    again = json.loads(invoke(*args).stdout)["stages"]
    assert all(s["reused"] for s in again.values())
    # another profile rebuilds only the engine
    wider = json.loads(invoke(*args, "--batch", "1:4:16").stdout)
    assert [s["reused"] for s in wider["stages"].values()] == [True, True, False]
    assert wider["profiles"][0]["max"][0] == 16
    # a changed calibration graph is not reused (its SHA-256 no longer matches its manifest)
    with open(tmp_path / "t.int8.onnx", "ab") as f:
        f.write(b"\0")
    redone = json.loads(invoke(*args, "--batch", "1:4:16").stdout)["stages"]
    assert redone["export"]["reused"] and not redone["calibrate"]["reused"]
    # calibration is deterministic: the same graph again, so the engine built from it stays valid
    from refiner_edge.artifacts import file_sha256

    assert read_manifest(out).source.sha256 == file_sha256(tmp_path / "t.int8.onnx")


@rtx
def test_failed_build_leaves_the_earlier_engine(tmp_path, tiny_plain, tiny_engine, monkeypatch):
    import refiner_edge.engine.worker as worker

    out = tmp_path / "keep.engine"
    out.write_bytes(tiny_engine.read_bytes())
    before = out.read_bytes()

    def interrupted(*a, **k):   # failure injection: Ctrl-C while the builder runs (tests/test_atomic.py: a real one)
        raise KeyboardInterrupt

    monkeypatch.setattr(worker, "run_in_child", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_rtx(tiny_plain, out)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["keep.engine"]


@rtx
def test_polygraphy_is_rebound_when_the_flavour_changes():
    """Polygraphy binds its TensorRT module when its backend is imported; a process whose Polygraphy was bound to
    TensorRT first still builds with TensorRT-RTX."""
    from polygraphy import mod

    import polygraphy.backend.trt.loader as loader
    import refiner_edge.engine.backend as backend

    loader.trt = mod.lazy_import("tensorrt>=8.5")   # as if imported with POLYGRAPHY_USE_TENSORRT_RTX unset
    backend._bound = "tensorrt"
    backend.polygraphy_trt("tensorrt-rtx")
    assert loader.trt.__name__ == "tensorrt_rtx"
    assert sys.modules["polygraphy.backend.trt.config"].trt.__name__ == "tensorrt_rtx"


def test_default_batch_fits_the_models_attention_maps():
    from refiner_edge.engine.targets import attention_bytes, fitted_batch

    rtx89 = TARGETS["rtx-sm89"]
    l448 = attention_bytes(16, 448, "fp32")   # TensorRT-RTX asked for 4.62 GB at batch 32: 144 MB per image
    assert 140e6 < l448 < 170e6
    assert fitted_batch(rtx89.batch, rtx89.workspace, l448) == (1, 4, 8)   # 1:4:8 builds in 10 s
    assert fitted_batch(rtx89.batch, rtx89.workspace, attention_bytes(12, 224, "fp32")) == rtx89.batch
    assert fitted_batch((1, 1, 4), 1 << 29, attention_bytes(16, 448, "fp16")) == (1, 1, 2)
    listing = invoke("build", "--list-targets")
    assert listing.exit_code == 0 and "lowers MAX" in listing.output


@rtx
def test_builder_error_names_its_cause(tmp_path, tiny_plain):
    """TensorRT-RTX runs out of memory for a profile far beyond the workspace: the one error line carries the
    builder's own error, as advice, instead of Polygraphy's 'Invalid Engine ... see the log above'."""
    result = invoke("build", "--onnx", tiny_plain, "--precision", "fp32", "--target", "rtx-sm89",
                    "--batch", "1:8:65536", "--workspace", "64M", "-o", tmp_path / "t.engine")
    assert_clean_failure(result, "out of memory:", "GB requested for batch 65536 at 64x64; try --batch 1:")
    assert "see the log above" not in result.stderr and "Invalid Engine" not in result.stderr.splitlines()[-1]
    assert not (tmp_path / "t.engine").exists()


# --- refusals, each one line ------------------------------------------------------------------------------------

@rtx
def test_fused_graph_for_an_rtx_target_names_the_fix(tmp_path, tiny_plain):
    pytest.importorskip("onnxruntime_extensions", reason="fusing needs onnxruntime-extensions' reference op")
    from refiner_edge.refine.fuse import fuse_onnx

    fused = tmp_path / "f.onnx"
    fuse_onnx(tiny_plain, fused, verify=False)
    with pytest.raises(InputError, match="TensorRT-RTX .* has no custom plugins: build the plain graph"):
        build_rtx(fused, tmp_path / "f.engine")
    assert_clean_failure(invoke("build", "--onnx", fused, "--target", "rtx-sm89", "-o", tmp_path / "f.engine"),
                         "no custom plugins")
    assert not (tmp_path / "f.engine").exists()


def test_refusals_before_any_builder_runs(tmp_path, tiny_plain):
    orin, thor = TARGETS["orin-agx-jp6"], TARGETS["thor-jp7"]
    cases = [
        (BuildOptions(orin, dla_core=0), "DLA runs FP16 and INT8 only"),
        (BuildOptions(thor, dla_core=0, precision="fp16", weak_typing=True), "has no DLA"),
        (BuildOptions(orin, dla_core=2, precision="fp16"), "--dla-core must be 0..1"),
        (BuildOptions(TARGETS["rtx-sm89"], weak_typing=True), "strongly typed networks only"),
        (BuildOptions(TARGETS["orin-agx-jp7"], weak_typing=True), "strongly typed networks only"),
        (BuildOptions(TARGETS["rtx-sm89"], precision="int8"), "fp32 graph and a strongly typed build"),
        (BuildOptions(TARGETS["rtx-sm89"], plugin="library"), "has no custom plugins: use --plugin none"),
        (BuildOptions(orin, precision="int8", weak_typing=True), "reads the calibration cache"),
    ]
    for options, message in cases:
        with pytest.raises(InputError, match=message):
            build_engine(tiny_plain, tmp_path / "x.engine", options)
    assert not list(tmp_path.iterdir())
    with pytest.raises(InputError, match="-o names the engine"):
        build_engine(tiny_plain, tmp_path / "x.json", BuildOptions(orin))
    with pytest.raises(InputError, match="ONNX model not found"):
        build_engine(tmp_path / "missing.onnx", tmp_path / "x.engine", BuildOptions(orin))
    assert_clean_failure(invoke("build", "--onnx", tiny_plain, "--target", "orin-agx-jp6", "--dla-core", "0",
                                "-o", tmp_path / "x.engine"), "DLA runs FP16 and INT8 only")
    assert_clean_failure(invoke("build", "--onnx", tiny_plain, "--variant", "refiner-vit-s", "--target", "rtx-sm89",
                                "-o", tmp_path / "x.engine"), "--variant")
    assert_clean_failure(invoke("build", "--target", "rtx-sm89"), "-o/--output")


def test_plugin_forms_refuse_cleanly(monkeypatch, tmp_path):
    monkeypatch.setenv(plugins.LIBRARY_ENV, str(tmp_path / "nowhere.so"))
    with pytest.raises(InputError, match="REFINER_DLA_PLUGIN names .* which does not exist"):
        plugins.prepare("library")
    with pytest.raises(InputError, match="needs TensorRT >= 10.9"):
        plugins.prepare("aot", "10.3.0")
    with pytest.raises(InputError, match="needs a fused graph"):
        plugins.choose_form(TARGETS["orin-agx-jp6"], "library", fused=False, graph="plain.onnx")
    with pytest.raises(InputError, match="build it with --plugin library or --plugin aot"):
        plugins.choose_form(TARGETS["orin-agx-jp6"], "none", fused=True, graph="fused.onnx")
    with pytest.raises(InputError, match="in the library plugin form, not aot: fuse the graph with"):
        plugins.choose_form(TARGETS["thor-jp7"], "aot", fused=True, graph="fused.onnx", graph_form="library")
    plugins.choose_form(TARGETS["thor-jp7"], "aot", fused=True, graph="fused.onnx", graph_form="aot")
    # without tensorrt the AOT plugin module says what is missing, in one line
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(MissingDependencyError, match="tensorrt"):
            plugins.prepare("aot", "10.13.0")


@rtx
def test_stale_engine_checks_on_a_real_manifest(tmp_path, tiny_engine):
    import dataclasses

    m = read_engine_manifest(tiny_engine)
    e = m.engine
    here = Runtime("tensorrt-rtx", e.tensorrt_version, "8.9", "RTX 4090")
    check_engine(tiny_engine, m, here)
    stale = [
        (Runtime("tensorrt-rtx", e.tensorrt_version, "9.0", "H100"), "built for sm_89 .* is sm_90"),
        (Runtime("tensorrt-rtx", "1.8.0.1", "8.9"), f"built by tensorrt-rtx {e.tensorrt_version} and this is 1.8"),
        (Runtime("tensorrt", "10.13.3", "8.9"), "built by tensorrt-rtx and this is tensorrt"),
    ]
    for runtime, message in stale:
        with pytest.raises(InputError, match=message + ".*: rebuild with: refiner-edge build --onnx"):
            check_engine(tiny_engine, m, runtime)
    with pytest.raises(InputError, match="runs on a CUDA GPU .* has none"):
        check_engine(tiny_engine, m, Runtime("tensorrt-rtx", e.tensorrt_version, None))
    # the library form: a missing or changed plugin library
    library = tmp_path / "librefiner_edge_plugin.so"
    library.write_bytes(b"built once")
    with_plugin = dataclasses.replace(m, engine=dataclasses.replace(
        e, plugin_form="library", plugin_library=str(library), plugin_sha256="0" * 64))
    with pytest.raises(InputError, match="another RefinerDLA plugin library .*rebuild with"):
        check_engine(tiny_engine, with_plugin, here)
    library.unlink()
    with pytest.raises(InputError, match="needs the RefinerDLA plugin library .* missing"):
        check_engine(tiny_engine, with_plugin, here)
    # an engine that is not the one its manifest describes
    copy = tmp_path / "copy.engine"
    copy.write_bytes(tiny_engine.read_bytes() + b"\0")
    with pytest.raises(InputError, match="SHA-256 differs"):
        check_engine(copy, m, here)


@rtx
def test_batch_outside_the_profile(tiny_engine):
    m = read_engine_manifest(tiny_engine)
    for ok in (1, 5, 8):
        batch_in_profile(m, ok)
    for bad in (0, 9):
        with pytest.raises(InputError, match=r"outside the engine's profile \(1..8\)"):
            batch_in_profile(m, bad)
    # images of another shape would overrun the runner's input buffer, which is sized for the profile
    image = tuple(m.engine.profiles[0].max[1:])
    batch_in_profile(m, 8, image)
    size = image[-1]
    for bad in ((3, 2 * size, 2 * size), (1, size, size), (size, size)):
        with pytest.raises(InputError, match="do not fit the engine's input 3x"):
            batch_in_profile(m, 8, bad)


@rtx
def test_running_an_engine_here_says_why_not(tiny_engine, sample_photos):
    if detect_gpu() is not None:
        pytest.skip("this machine has a GPU: the engine may run")
    result = invoke("infer", "--engine", tiny_engine, sample_photos[0])
    assert_clean_failure(result, "runs on a CUDA GPU")
    assert result.exit_code == 2
    assert_clean_failure(invoke("infer", "--engine", tiny_engine, "--checkpoint", tiny_engine, sample_photos[0]),
                         "--checkpoint applies to the torch backend")
    assert_clean_failure(invoke("infer", "--engine", tiny_engine, "--backend", "onnxruntime", sample_photos[0]),
                         "--engine runs on TensorRT")
    assert_clean_failure(invoke("infer", "--backend", "tensorrt", sample_photos[0]), "needs --engine")
    assert_clean_failure(invoke("validate", "--engine", tiny_engine, "--images", sample_photos[0].parent),
                         "runs on a CUDA GPU")
    assert_clean_failure(invoke("validate", "--images", sample_photos[0].parent), "one of --engine and --onnx")


# --- TensorRT proper and a GPU: present, skipped here with the reason -------------------------------------------

@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_engine_runs_and_matches_onnxruntime(tmp_path, tiny_plain, sample_photos):
    if not HAS_TRT:
        pytest.skip("tensorrt is not installed (NVIDIA's index; JetPack ships it): TensorRT builds are not run here")
    if detect_gpu() is None:
        pytest.skip("no CUDA GPU: TensorRT builds on the GPU it targets")
    import numpy as np

    from refiner_edge.runners.runtime import load_runner

    out = tmp_path / "tiny.engine"
    target = get_target("auto")
    build_engine(tiny_plain, out, BuildOptions(target, batch=(1, 2, 8)))
    assert out.read_bytes()[:1] not in (b"{", b"[")
    ort = load_runner("onnxruntime", onnx=tiny_plain)
    x = np.stack([ort.preprocess.load(p) for p in sample_photos])
    expected = {n: ort(np.resize(x, (n, *x.shape[1:]))) for n in (8, 3)}
    for graph in (False, True):   # two runners in one process: the second creates everything again
        trt = load_runner("tensorrt", engine=out, cuda_graph=graph)
        np.testing.assert_allclose(trt(x), ort(x), rtol=1e-2, atol=1e-2)
        # shape changes between graph replays: 8, 3, 8 again (a plain run after each change), then repeats
        for n in (8, 3, 8, 8, 3, 3):
            np.testing.assert_allclose(trt(np.resize(x, (n, *x.shape[1:]))), expected[n], rtol=1e-2, atol=1e-2)
        with pytest.raises(InputError, match="outside the engine's profile"):   # refused, never split
            trt(np.repeat(x, 5, axis=0))
        with pytest.raises(InputError, match="do not fit the engine's input"):   # never copied past the buffer
            trt(np.zeros((2, 3, 2 * x.shape[-1], 2 * x.shape[-1]), np.float32))
        trt.close()
        assert not [type(v).__name__ for v in _closure_objects(trt.run)
                    if type(v).__name__ in ("IExecutionContext", "ICudaEngine", "Runtime")]   # the engine is freed


def _closure_objects(fn, seen=None) -> list:
    """What a function's closure holds, through the functions it holds."""
    seen = set() if seen is None else seen
    found = []
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:   # an empty cell
            continue
        if callable(value) and getattr(value, "__closure__", None) is not None and id(value) not in seen:
            seen.add(id(value))
            found += _closure_objects(value, seen)
        found.append(value)
    return found


def test_dla_refusals_come_before_the_chain_does_any_work(tmp_path):
    for args, message in ((["--dla-core", "0", "--precision", "int8", "--batch", "1:4:8"], "DLA needs a static batch"),
                          (["--dla-core", "0", "--precision", "fp32", "--batch", "4"], "DLA runs FP16 and INT8 only"),
                          (["--dla-core", "2", "--precision", "int8", "--batch", "4"], "--dla-core must be 0..1")):
        result = invoke("build", "--target", "orin-agx-jp6", *args, "-o", tmp_path / "s.engine")
        assert_clean_failure(result, message)
    assert list(tmp_path.iterdir()) == []  # nothing exported, nothing calibrated
