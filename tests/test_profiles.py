"""Several optimisation profiles in one engine (`build --batch 1 --batch 1:4:8`): the rule their order follows, the
real TensorRT-RTX build with two profiles, the manifest's record, the rebuild and trtexec lines, the runner's pick
(Python and the C++ reader agreeing), the Triton and DeepStream configs and `inspect`. Running the two profiles on a
GPU is benchmarks/gpu_check.sh's "profiles" step."""
import dataclasses
import importlib.util
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from refiner_edge.engine.checks import batch_in_profile
from refiner_edge.engine.plan import BuildOptions, BuildPlan, opt_level, read_network, tf32, trtexec_command, workspace
from refiner_edge.engine.targets import TARGETS
from refiner_edge.errors import InputError
from refiner_edge.manifest import Profile, profile_for, read_manifest, write_manifest

from .helpers import assert_clean_failure, invoke, parse_config
from .test_engine_first_day import boundary, engine_with_manifest  # noqa: F401 - boundary is a fixture

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")
needs_pb = pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None,
                              reason="tritonclient is not installed: no model-config protobuf to parse with")
ROOT = Path(__file__).resolve().parents[1]
TWO = ("--batch", "1", "--batch", "1:4:8")


@pytest.fixture(scope="module")
def two_profiles(tmp_path_factory, tiny_plain) -> dict:
    """The tiny graph built for rtx-sm89 with two profiles (1, and 1:4:8) through the CLI, and a one-profile build
    of the same graph to compare the plans with."""
    if not HAS_RTX:
        pytest.skip("tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")
    folder = tmp_path_factory.mktemp("profiles")
    engine, one = folder / "two.engine", folder / "one.engine"
    result = invoke("build", "--onnx", tiny_plain, "--target", "rtx-sm89", *TWO, "--json", "-o", engine)
    assert result.exit_code == 0, result.output
    built = invoke("build", "--onnx", tiny_plain, "--target", "rtx-sm89", "--batch", "1:4:8", "-o", one)
    assert built.exit_code == 0, built.output
    return {"engine": engine, "one": one, "report": json.loads(result.stdout)}


# ------------------------------------------------------------------------------------------------ the rule


@pytest.mark.parametrize("batches, words", [
    (("1:4:8", "1"), "--batch 1 after --batch 1:4:8: give profiles in increasing order"),     # out of order
    (("1:4:8", "1:4:8"), "--batch 1:4:8 after --batch 1:4:8: give profiles in increasing order"),   # identical
    (("1:8:16", "2:4:32"), "--batch 2:4:32 after --batch 1:8:16"),        # tuned for a smaller batch than before
    (("1:4:16", "2:8:8"), "--batch 2:8:8 after --batch 1:4:16"),    # inside the previous one: never picked
    (("4:8:16", "2:16:32"), "--batch 2:16:32 after --batch 4:8:16"),      # MIN below the previous MIN
    (("1", "4:8:16"), "batches 2..3 fit no profile; start it at 2 or lower (--batch 2:8:16)"),   # a gap
    (("1", "8:0:4"), "--batch must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX"),
])
def test_overlapping_or_out_of_order_profiles_are_one_error_line_and_nothing_written(tmp_path, tiny_plain,
                                                                                     batches, words):
    out = tmp_path / "out"
    out.mkdir()
    args = [a for b in batches for a in ("--batch", b)]
    result = invoke("build", "--onnx", tiny_plain, "--target", "rtx-sm89", *args, "-o", out / "m.engine")
    assert result.exit_code == 2
    assert_clean_failure(result, words)
    assert list(out.iterdir()) == []
    # the Python API holds BuildOptions to the same rule
    from refiner_edge.cli.build import parse_batch

    with pytest.raises(InputError, match="--batch"):
        BuildOptions(TARGETS["rtx-sm89"], batch=tuple(parse_batch(b) for b in batches))


def test_profiles_in_order_are_taken_and_one_profile_may_be_given_bare():
    target = TARGETS["rtx-sm89"]
    assert BuildOptions(target, batch=(1, 2, 4)).batch == ((1, 2, 4),)
    three = ((1, 1, 1), (2, 4, 8), (5, 32, 64))   # overlapping (5..8) is allowed: batch 5..8 take profile 1
    assert BuildOptions(target, batch=three).batch == three
    assert BuildOptions(target).batch is None


def test_the_runner_takes_each_batch_to_the_first_profile_that_holds_it():
    profiles = [Profile("input", [lo, 3, 8, 8], [opt, 3, 8, 8], [hi, 3, 8, 8])
                for lo, opt, hi in ((1, 1, 1), (2, 4, 8), (5, 32, 64))]
    assert [profile_for(profiles, b) for b in (1, 2, 5, 8, 9, 64)] == [0, 1, 1, 1, 2, 2]
    assert profile_for(profiles, 65) is None and profile_for(profiles, 0) is None


def test_dla_takes_one_profile(tmp_path, tiny_plain):
    result = invoke("build", "--onnx", tiny_plain, "--target", "orin-agx-jp6", "--precision", "fp16",
                    "--dla-core", "0", "--batch", "1", "--batch", "2", "-o", tmp_path / "m.engine")
    assert result.exit_code == 2
    assert_clean_failure(result, "DLA takes one static batch: give --batch once")
    assert list(tmp_path.iterdir()) == []


def test_the_memory_check_applies_to_every_profile(tmp_path, tiny_plain):
    """The attention maps at each profile's MIN against the workspace: 18,496 bytes per image of the tiny graph fit
    a 30,000-byte workspace at batch 1 (the first profile) but not at batch 2 (the second's MIN)."""
    result = invoke("build", "--onnx", tiny_plain, "--target", "rtx-sm89", "--batch", "1", "--batch", "2:4:8",
                    "--workspace", "30000", "-o", tmp_path / "m.engine")
    assert result.exit_code == 2
    assert_clean_failure(result, "attention maps at batch 2")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ lines


def test_trtexec_line_numbers_each_profile(tmp_path, tiny_plain):
    """trtexec takes several profiles as --profile=N before each group of --minShapes/--optShapes/--maxShapes
    (its --help: "--profile=0 --minShapes=<spec> --optShapes=<spec> --maxShapes=<spec> --profile=1 ...")."""
    options = BuildOptions(TARGETS["orin-agx-jp6"], batch=((1, 1, 1), (1, 4, 8)))
    network = dataclasses.replace(read_network(tiny_plain), parse=tiny_plain)
    plan = BuildPlan(options, network, "10.3.0", "fp32", weak=False, plugin_form="none", profiles=options.batch,
                     profile_note=None, workspace=workspace(options), opt_level=opt_level(options),
                     tf32=tf32(options), user_allocation=False)
    args = shlex.split(trtexec_command(plan, tmp_path / "m.engine"))
    start = args.index("--profile=0")
    assert args[start:start + 8] == [
        "--profile=0", "--minShapes=input:1x3x64x64", "--optShapes=input:1x3x64x64", "--maxShapes=input:1x3x64x64",
        "--profile=1", "--minShapes=input:1x3x64x64", "--optShapes=input:4x3x64x64", "--maxShapes=input:8x3x64x64"]
    # one profile: the line without --profile, as before
    single = dataclasses.replace(plan, profiles=((1, 4, 8),))
    assert "--profile=0" not in trtexec_command(single, tmp_path / "m.engine")


# ------------------------------------------------------------------------------------------------ the build


def test_two_profiles_are_built_and_recorded(two_profiles, tiny_plain):
    engine, report = two_profiles["engine"], two_profiles["report"]
    manifest = read_manifest(engine)
    recorded = [(p.min, p.opt, p.max) for p in manifest.engine.profiles]
    assert recorded == [([1, 3, 64, 64], [1, 3, 64, 64], [1, 3, 64, 64]),
                        ([1, 3, 64, 64], [4, 3, 64, 64], [8, 3, 64, 64])]
    assert [p["max"][0] for p in report["profiles"]] == [1, 8]
    # the builder made them: TensorRT names the tensors of every profile after the first "<name> [profile N]"
    plan, one = engine.read_bytes(), two_profiles["one"].read_bytes()
    assert b"logits [profile 1]" in plan and b"[profile 2]" not in plan and b"[profile 1]" not in one
    # the rebuild line repeats --batch in order, and parses back to the same profiles
    args = shlex.split(manifest.engine.rebuild)
    batches = [args[i + 1] for i, a in enumerate(args) if a == "--batch"]
    assert batches == ["1:1:1", "1:4:8"]
    # the runners' batch check takes the whole run of batches, 1..8
    for batch in (1, 2, 8):
        batch_in_profile(manifest, batch)
    with pytest.raises(InputError, match=r"outside the engine's profiles \(1\.\.8\)"):
        batch_in_profile(manifest, 9)


@rtx
def test_each_check_runs_once_with_two_profiles(tmp_path, tiny_plain, monkeypatch):
    from .test_build_plan import ONCE, NEVER_IN_THE_PARENT, assert_once, count_calls

    counts = count_calls(monkeypatch, ONCE + NEVER_IN_THE_PARENT)
    result = invoke("build", "--onnx", tiny_plain, "--target", "rtx-sm89", *TWO, "--json", "-o", tmp_path / "t.engine")
    assert result.exit_code == 0, result.output
    assert_once(counts)
    assert len(json.loads(result.stdout)["profiles"]) == 2


def test_inspect_lists_every_profile_and_its_batches(two_profiles):
    result = invoke("inspect", two_profiles["engine"], "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert [(p["opt"][0], p["batches"]) for p in facts["profiles"]] == [(1, [1, 1]), (4, [2, 8])]
    text = invoke("inspect", two_profiles["engine"]).stdout
    assert "profile 0     input min 1 opt 1 max 1 (runs batches 1..1)" in text
    assert "profile 1     input min 1 opt 4 max 8 (runs batches 2..8)" in text


def test_the_python_runner_switches_profiles_before_setting_the_shape(tmp_path, boundary, monkeypatch):  # noqa: F811
    """With TensorRT and CUDA stood in for (failure-injection stand-ins of tests/test_engine_first_day.py, which
    log each call): a two-profile engine starts in profile 0; a batch that needs profile 1 switches the context on
    the runner's stream before its input shape is set, a repeat of the batch does not switch again, and a batch of
    profile 0 switches back. With --cuda-graph the plain enqueue after each switch comes before any replay."""
    import numpy as np

    from refiner_edge.runners import tensorrt as runner_module
    from refiner_edge.runners.tensorrt import tensorrt_runner

    _, log, _ = boundary
    stand_in = runner_module.local_runtime

    def local_runtime(name):
        trt, runtime = stand_in(name)

        class TwoProfileRuntime(trt.Runtime):
            def deserialize_cuda_engine(self, data):
                engine = super().deserialize_cuda_engine(data)
                engine.num_optimization_profiles = 2
                make_context = engine.create_execution_context

                def create_execution_context():
                    context = make_context()
                    context.set_optimization_profile_async = (
                        lambda index, stream: log.append(f"profile {index}") or True)
                    return context

                engine.create_execution_context = create_execution_context
                return engine

        trt.Runtime = TwoProfileRuntime
        return trt, runtime

    monkeypatch.setattr(runner_module, "local_runtime", local_runtime)
    profiles = [Profile("input", [1, 3, 32, 32], [1, 3, 32, 32], [1, 3, 32, 32]),
                Profile("input", [1, 3, 32, 32], [4, 3, 32, 32], [8, 3, 32, 32])]
    engine = engine_with_manifest(tmp_path / "e", profiles=profiles)
    x = np.zeros((8, 3, 32, 32), np.float32)
    for cuda_graph in (False, True):
        runner = tensorrt_runner(engine, cuda_graph=cuda_graph)
        assert (runner.min_batch, runner.max_batch) == (1, 8)
        del log[:]
        for n in (1, 8, 8, 8, 1, 1):
            assert runner.run(x[:n]).shape == (n, 10)
        switches = [e for e in log if e.startswith(("profile", "shape"))]
        assert switches == ["shape 1", "profile 1", "shape 8", "profile 0", "shape 1"]
        if cuda_graph:   # after each switch and shape: a plain enqueue (and the first capture), never a replay
            after = log[log.index("profile 0"):]
            assert after.index("execute") < after.index("launch")
        with pytest.raises(InputError, match=r"outside the engine's profiles \(1\.\.8\)"):
            runner.run(np.zeros((9, 3, 32, 32), np.float32))
        runner.close()


# ------------------------------------------------------------------------------------------------ deploy


@needs_pb
def test_triton_config_lists_the_profiles(tmp_path, two_profiles):
    repo = tmp_path / "repo"
    result = invoke("deploy", "triton", "--engine", two_profiles["engine"], "-o", repo, "--name", "two",
                    "--max-batch", "8")
    assert result.exit_code == 0, result.output
    cfg = parse_config(repo / "two" / "config.pbtxt")
    assert cfg.max_batch_size == 8   # the last profile's MAX
    (group,) = cfg.instance_group
    assert list(group.profile) == ["0", "1"]
    assert_clean_failure(invoke("deploy", "triton", "--engine", two_profiles["engine"], "-o", repo, "--max-batch",
                                "9"), "profile maximum (8)")

    # an engine with one profile names none (Triton's default); its manifest, a copy cut to the first profile
    single = tmp_path / "single" / "one.engine"
    single.parent.mkdir()
    shutil.copyfile(two_profiles["engine"], single)
    manifest = read_manifest(two_profiles["engine"])
    manifest.engine.profiles = manifest.engine.profiles[1:]
    write_manifest(single, manifest)
    assert invoke("deploy", "triton", "--engine", single, "-o", tmp_path / "repo1", "--name", "one").exit_code == 0
    assert list(parse_config(tmp_path / "repo1" / "one" / "config.pbtxt").instance_group[0].profile) == []


def test_deepstream_says_nvinfer_runs_profile_0(tmp_path, two_profiles):
    result = invoke("deploy", "deepstream", "--engine", two_profiles["engine"], "-o", tmp_path / "ds", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert any("nvinfer runs profile 0 only (batch 1..1)" in n for n in summary["notes"]), summary["notes"]
    assert "batch-size=1" in (tmp_path / "ds" / "config_infer_refiner.txt").read_text()


# ------------------------------------------------------------------------------------------------ C++


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    """cpp/'s refiner_edge_probe, built without TensorRT (the manifest reader and profileFor are TensorRT-free)."""
    missing = [t for t in ("cmake", "g++") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: the C++ library cannot be built here")
    out = tmp_path_factory.mktemp("cpp_profiles")

    def run(cmd, timeout=600):
        return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False)

    configure = run(["cmake", "-S", ROOT / "cpp", "-B", out, "-DREFINER_EDGE_WITH_TENSORRT=OFF",
                     "-DREFINER_EDGE_WERROR=ON", "-DREFINER_EDGE_WITH_OPENCV=OFF", "-DREFINER_EDGE_WITH_LIBJPEG=OFF"])
    assert configure.returncode == 0, configure.stdout[-2000:] + configure.stderr[-2000:]
    built = run(["cmake", "--build", out, "-j2", "--target", "refiner_edge_probe"])
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out / "refiner_edge_probe"


@pytest.mark.slow
def test_cpp_manifest_reader_agrees_on_the_profiles_and_the_pick(tmp_path, two_profiles, probe):
    """The C++ reader reads every profile of the manifest build wrote, and its profileFor picks what the Python
    runner's profile_for picks, for the built engine and for three overlapping profiles."""
    three = tmp_path / "three.engine"
    shutil.copyfile(two_profiles["engine"], three)
    manifest = read_manifest(two_profiles["engine"])
    manifest.engine.profiles = [Profile("input", [lo, 3, 64, 64], [opt, 3, 64, 64], [hi, 3, 64, 64])
                                for lo, opt, hi in ((1, 1, 1), (2, 4, 8), (5, 32, 64))]
    write_manifest(three, manifest)
    batches = list(range(0, 67))
    for engine in (two_profiles["engine"], three):
        profiles = read_manifest(engine).engine.profiles
        r = subprocess.run([str(probe), "profiles", f"{engine}.json", *map(str, batches)], capture_output=True,
                           text=True, timeout=30, check=False)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[:len(profiles)] == [f"profile {i} {p.min[0]} {p.opt[0]} {p.max[0]}"
                                         for i, p in enumerate(profiles)]
        picks = {int(line.split()[1]): int(line.split()[3]) for line in lines[len(profiles):]}
        python = {b: -1 if profile_for(profiles, b) is None else profile_for(profiles, b) for b in batches}
        assert picks == python


# ------------------------------------------------------------------------------------------------ on a GPU


@pytest.mark.slow   # not marked gpu/tensorrt: its own step in gpu_check.sh runs it, not pytest_gpu a second time
def test_two_profiles_run_through_both_runners_as_onnx_runtime_does(tmp_path, tiny_plain):
    """benchmarks/gpu_check.sh's "profiles" step. A two-profile engine built by TensorRT on this GPU: the Python
    runner runs batches 1 and 8 and back (profile 0, 1, 0: the switches both ways), plainly and as CUDA graphs, with
    ONNX Runtime's logits; the C++ classifier runs one image (profile 0) and nine (a batch of 8 in profile 1, then 1
    in profile 0) with ONNX Runtime's probabilities (`infer --onnx`)."""
    import numpy as np
    from PIL import Image

    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("tensorrt is not installed: a two-profile engine cannot be built or run here")
    from refiner_edge.engine.targets import detect_gpu

    if detect_gpu() is None:
        pytest.skip("no CUDA GPU: a TensorRT engine cannot run on this machine")
    from refiner_edge.runners.ort import onnxruntime_runner
    from refiner_edge.runners.tensorrt import tensorrt_runner

    engine = tmp_path / "two.engine"
    made = invoke("build", "--onnx", tiny_plain, "--target", "auto", *TWO, "--no-tf32", "-o", engine)
    assert made.exit_code == 0, made.output
    x = np.random.default_rng(7).standard_normal((8, 3, 64, 64)).astype(np.float32)
    with onnxruntime_runner(tiny_plain) as ort:
        expected = {n: ort(x[:n]) for n in (1, 8)}
    for cuda_graph in (False, True):
        with tensorrt_runner(engine, cuda_graph=cuda_graph) as trt:
            for n in (1, 8, 1, 8, 8, 1, 1):
                np.testing.assert_allclose(trt(x[:n]), expected[n], atol=2e-3, rtol=1e-3,
                                           err_msg=f"batch {n}, cuda_graph={cuda_graph}")

    from .test_cpp import _tensorrt_root

    root = _tensorrt_root()
    if root is None or shutil.which("cmake") is None:
        pytest.skip("TensorRT headers or cmake not found: the C++ classifier cannot be built here")
    out = tmp_path / "build"

    def run(cmd, timeout=900):
        return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False)

    configure = run(["cmake", "-S", ROOT / "cpp", "-B", out, f"-DTensorRT_ROOT={root}",
                     "-DREFINER_EDGE_BUILD_PLUGIN=OFF"])
    assert configure.returncode == 0, configure.stdout[-2000:] + configure.stderr[-2000:]
    built = run(["cmake", "--build", out, "-j4", "--target", "refiner_classify"])
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    if not (out / "refiner_classify").is_file():
        pytest.skip("libnvinfer not found by CMake (headers only): set TensorRT_ROOT to a TensorRT with lib/")
    pixels = np.random.default_rng(8).integers(0, 256, (9, 72, 80, 3), dtype=np.uint8)
    paths = []
    for i, image in enumerate(pixels):   # PNG: the C++ and Python decoders give the same pixels
        paths.append(tmp_path / f"i{i}.png")
        Image.fromarray(image).save(paths[-1])
    for group in (paths[:1], paths):
        ref = invoke("infer", "--onnx", tiny_plain, "--topk", "3", "--json", *group)
        assert ref.exit_code == 0, ref.output
        reference = json.loads(ref.stdout)
        for extra in ([], ["--cuda-graph"]):
            r = run([out / "refiner_classify", engine, *group, "--topk", "3", "--json", *extra], timeout=120)
            assert r.returncode == 0, r.stderr
            for a, b in zip(json.loads(r.stdout), reference, strict=True):
                assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
                assert np.allclose([p["prob"] for p in a["predictions"]], [p["prob"] for p in b["predictions"]],
                                   atol=1e-4)
