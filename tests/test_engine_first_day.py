"""What the engine path meets on its first day with real TensorRT and a GPU, checked where this machine can: the
runner's error lines when the plugin library or the plan fails to load, the CUDA-graph capture after a failed
enqueue, --cuda-graph on TensorRT-RTX engines, TF32 as a recorded build decision, the plugin library's TensorRT
headers, the C++ classifier compiled against every TensorRT header set, and the warm-up before every capture.

TensorRT and cuda-python are not installed here, so the runner is driven through the boundaries it calls: a stand-in
`tensorrt` module (local_runtime) and a stand-in CUDA runtime under the real CudaBindings, used only to inject
failures (a registry that cannot load the library, a plan that does not deserialize, an enqueue that fails inside
a capture). The runner code under test is the real one.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from refiner_edge.artifacts import file_sha256
from refiner_edge.engine import plugins
from refiner_edge.engine.backend import plugin_headers
from refiner_edge.engine.build import BuildOptions, build_engine
from refiner_edge.engine.checks import Runtime
from refiner_edge.engine.targets import TARGETS
from refiner_edge.errors import InputError
from refiner_edge.images.preprocess import Preprocess
from refiner_edge.manifest import EngineInfo, GraphInfo, Manifest, ModelInfo, Profile, read_manifest, write_manifest
from refiner_edge.runners import tensorrt as runner_module
from refiner_edge.runners.tensorrt import CudaBindings, GraphSteps, tensorrt_runner

from .helpers import assert_clean_failure, invoke, tensorrt_header_sets

ROOT = Path(__file__).resolve().parents[1]
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")
REBUILD = "refiner-edge build --onnx model.onnx --target orin-agx-jp6 -o model.engine"
LIBRARY = "lib/librefiner_edge_plugin.so"


# --- stand-ins at the runner's boundaries (failure injection only) ---------------------------------------------

class Failures:
    """What the stand-ins are told to fail."""

    def __init__(self, load_library=False, deserialize=False, enqueue_calls=(), capturable=None):
        self.load_library = load_library
        self.deserialize = deserialize
        self.enqueue_calls = set(enqueue_calls)   # 1-based numbers of execute_async_v3 calls that fail
        self.capturable = capturable              # None: the context has no is_stream_capturable (TensorRT)


def stand_in_tensorrt(failures: Failures, log: list):
    """The few parts of the tensorrt module the runner touches."""

    class Registry:
        def load_library(self, path):
            log.append("load_library")
            return None if failures.load_library else object()

        def get_creator(self, name, version, namespace):
            return None

    class Context:
        def __init__(self):
            self.calls = 0

        def set_tensor_address(self, name, ptr):
            return True

        def set_input_shape(self, name, shape):
            log.append(f"shape {shape[0]}")
            return True

        def execute_async_v3(self, stream):
            self.calls += 1
            log.append("execute")
            return self.calls not in failures.enqueue_calls

    if failures.capturable is not None:
        Context.is_stream_capturable = lambda self, stream: failures.capturable

    class Engine:
        num_io_tensors = 2
        num_optimization_profiles = 1

        def create_execution_context(self):
            return Context()

        def get_tensor_name(self, i):
            return ("input", "logits")[i]

        def get_tensor_mode(self, name):
            return "in" if name == "input" else "out"

        def get_tensor_dtype(self, name):
            return "float"

    class Runtime_:
        def __init__(self, logger):
            self.registry = Registry()

        def get_plugin_registry(self):
            return self.registry

        def deserialize_cuda_engine(self, data):
            return None if failures.deserialize else Engine()

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    class TensorIOMode:
        INPUT = "in"

    class Module:
        __version__ = "10.3.0"

    module = Module()
    module.Logger, module.Runtime, module.TensorIOMode = Logger, Runtime_, TensorIOMode
    registry = Registry()
    module.get_plugin_registry = lambda: registry
    module.nptype = lambda dtype: np.float32
    return module


class StandInCudart:
    """cuda.bindings.runtime as far as CudaBindings calls it, with a stream that, like a real one, records
    asynchronous work while it is capturing, refuses to synchronize then, and refuses a second capture."""

    class cudaError_t:
        cudaSuccess = 0
        cudaErrorStreamCaptureUnsupported = 900
        cudaErrorIllegalState = 401

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, log: list):
        self.log = log
        self.capturing = False
        self.graphs: set[int] = set()      # graphs alive (captured, not destroyed)
        self.execs: set[int] = set()
        self.next = 100

    def _work(self, name):
        self.log.append(name)
        return (0,)

    def cudaMemcpyAsync(self, *args):
        return self._work("memcpy")

    def cudaStreamSynchronize(self, stream):
        self.log.append("sync")
        return (self.cudaError_t.cudaErrorStreamCaptureUnsupported if self.capturing else 0,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.log.append("begin_capture")
        if self.capturing:
            return (self.cudaError_t.cudaErrorIllegalState,)
        self.capturing = True
        return (0,)

    def cudaStreamEndCapture(self, stream):
        self.log.append("end_capture")
        if not self.capturing:
            return (self.cudaError_t.cudaErrorIllegalState, None)
        self.capturing = False
        self.next += 1
        self.graphs.add(self.next)
        return (0, self.next)

    def cudaGraphInstantiate(self, graph, flags):
        self.next += 1
        self.execs.add(self.next)
        return (0, self.next)

    def cudaGraphDestroy(self, graph):
        self.graphs.discard(graph)
        return (0,)

    def cudaGraphLaunch(self, graph, stream):
        return self._work("launch")

    def cudaGraphExecDestroy(self, graph):
        self.execs.discard(graph)
        return (0,)

    def cudaMalloc(self, nbytes):
        self.next += 1
        return (0, self.next)

    def cudaFree(self, ptr):
        return (0,)

    def cudaMemGetInfo(self):
        return (0, 1 << 30, 2 << 30)

    def cudaStreamDestroy(self, stream):
        return (0,)


def cuda_bindings(rt: StandInCudart) -> CudaBindings:
    """The real CudaBindings over the stand-in runtime (its __init__ imports cuda.bindings, absent here)."""
    api = CudaBindings.__new__(CudaBindings)
    api.rt, api.stream = rt, 7
    return api


def engine_with_manifest(folder: Path, **engine) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.engine"
    path.write_bytes(b"\x00plan bytes")
    m = Manifest(stage="build", artifact=path.name, labels="class-index",
                 model=ModelInfo("refiner-vit-tiny", 32, 10, 2, 1, False, None),
                 preprocess=Preprocess(32, 0.9, (0.5,) * 3, (0.5,) * 3, "bicubic").record(),
                 graph=GraphInfo(input="input", output="logits", batch="dynamic", opset=19, precision="fp32",
                                 fused=False))
    m.engine = EngineInfo(flavour="tensorrt", tensorrt_version="10.3.0", target="orin-agx-jp6",
                          compute_capability="8.7", device="Jetson AGX Orin", precision="fp32", typing="strong",
                          profiles=[Profile("input", [1, 3, 32, 32], [2, 3, 32, 32], [4, 3, 32, 32])],
                          plugin_form="none", plugin_library=None, plugin_sha256=None, dla_core=None,
                          workspace=1 << 30, builder_optimization_level=3, hardware_compatibility="none",
                          version_compatible=False, timing_cache=None, build_seconds=1.0, rebuild=REBUILD)
    if engine.pop("library", False):
        library = folder / LIBRARY
        library.parent.mkdir(exist_ok=True)
        library.write_bytes(b"the library the engine was built with")
        engine.update(plugin_form="library", plugin_library=LIBRARY, plugin_sha256=file_sha256(library))
    for key, value in engine.items():
        setattr(m.engine, key, value)
    write_manifest(path, m)
    return path


@pytest.fixture
def boundary(monkeypatch):
    """Install the stand-ins: returns (failures, log, cudart) to arrange and inspect."""
    log: list = []
    failures = Failures()
    rt = StandInCudart(log)
    flavour = {"value": "tensorrt"}

    def local_runtime(name):
        flavour["value"] = name
        return stand_in_tensorrt(failures, log), Runtime(name, "10.3.0" if name == "tensorrt" else "1.7.1",
                                                         "8.7" if name == "tensorrt" else "8.9", "a GPU")

    monkeypatch.setattr(runner_module, "local_runtime", local_runtime)
    monkeypatch.setattr(runner_module, "cuda_api", lambda: cuda_bindings(rt))
    return failures, log, rt


# --- 1: the one error line when the plugin library or the plan fails to load -----------------------------------

def test_plugin_library_that_fails_to_load_names_the_rebuild(tmp_path, boundary):
    """Before rebuild_line was imported in runners/tensorrt.py this was 'NameError' (an unexpected error)."""
    failures, log, _ = boundary
    failures.load_library = True
    engine = engine_with_manifest(tmp_path / "e", library=True)
    with pytest.raises(InputError) as caught:
        tensorrt_runner(engine)
    message = str(caught.value)
    assert "load_library" in log
    assert message.startswith(f"TensorRT could not load the plugin library {engine.parent / LIBRARY}: rebuild with: ")
    assert message.endswith(f"-o {engine.absolute()}") and "\n" not in message


def test_plan_that_fails_to_deserialize_names_the_rebuild(tmp_path, boundary):
    failures, _, _ = boundary
    failures.deserialize = True
    engine = engine_with_manifest(tmp_path / "e")
    with pytest.raises(InputError, match=r"^tensorrt 10\.3\.0 could not load model\.engine: rebuild with: "
                                         r"refiner-edge build --onnx model\.onnx .* -o /"):
        tensorrt_runner(engine)


def test_cli_prints_one_line_when_the_plan_fails_to_deserialize(tmp_path, boundary):
    failures, _, _ = boundary
    failures.deserialize = True
    engine = engine_with_manifest(tmp_path / "e")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (10, 20, 30)).save(image)
    result = invoke("infer", "--engine", engine, image)
    assert_clean_failure(result, "could not load model.engine: rebuild with: refiner-edge build")
    assert result.exit_code == 2 and "NameError" not in result.output


# --- 5 and 19: the capture after a failed enqueue, and the warm-up before every capture -----------------------

def test_capture_is_ended_and_discarded_when_enqueue_fails():
    """CudaBindings.capture around an enqueue that raises: the stream leaves capture mode and the partial graph is
    destroyed, so the next capture (and all other work) on the stream succeeds."""
    log: list = []
    rt = StandInCudart(log)
    api = cuda_bindings(rt)

    def failing():
        api.h2d(0, np.zeros(2, np.float32))   # recorded into the graph
        raise InputError("TensorRT could not run the batch")

    with pytest.raises(InputError, match="could not run the batch"):
        api.capture(failing)
    assert not rt.capturing and not rt.graphs and log[-1] == "end_capture"
    api.sync()   # refused while the stream is capturing
    assert log[-1] == "sync"
    graph = api.capture(lambda: api.h2d(0, np.zeros(2, np.float32)))
    api.launch(graph)
    api.destroy(graph)
    assert not rt.capturing and not rt.graphs and not rt.execs


def test_cuda_graph_runner_recovers_from_a_failed_enqueue_in_capture(tmp_path, boundary):
    """--cuda-graph: the enqueue inside the first capture fails (the second execute; the first is the call's plain
    enqueue). That call fails with one line, and every later call runs: a plain enqueue and a capture, then
    replays."""
    failures, log, rt = boundary
    failures.enqueue_calls = {2}
    engine = engine_with_manifest(tmp_path / "e")
    runner = tensorrt_runner(engine, cuda_graph=True)
    x = np.zeros((2, 3, 32, 32), np.float32)
    with pytest.raises(InputError, match="model.engine: TensorRT could not run the batch"):
        runner.run(x)
    assert not rt.capturing and not rt.graphs
    del log[:]
    assert runner.run(x).shape == (2, 10)
    # the warm-up (a plain enqueue, completed) before the capture, which is ended
    assert log == ["memcpy", "execute", "sync", "begin_capture", "execute", "end_capture", "memcpy", "sync"]
    del log[:]
    assert runner.run(x).shape == (2, 10)
    assert log == ["memcpy", "launch", "memcpy", "sync"]
    runner.close()
    assert not rt.execs


def test_invalidated_capture_is_one_line_and_the_next_call_works(tmp_path, boundary):
    """CUDA ends an invalidated capture with an error and no graph: one line naming the fix, and the stream is
    usable again for the next call."""
    _, log, rt = boundary
    engine = engine_with_manifest(tmp_path / "e")
    runner = tensorrt_runner(engine, cuda_graph=True)
    end = rt.cudaStreamEndCapture

    def invalidated(stream):
        rt.graphs.discard(end(stream)[1])   # ended, and no graph comes back
        return (rt.cudaError_t.cudaErrorIllegalState, None)

    rt.cudaStreamEndCapture = invalidated
    x = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(InputError, match=r"^model\.engine: capturing a CUDA graph failed \(CUDA error 401\): run "
                                         "without --cuda-graph$"):
        runner.run(x)
    rt.cudaStreamEndCapture = end
    assert not rt.capturing and runner.run(x).shape == (1, 10) and not rt.graphs
    runner.close()


@pytest.mark.gpu
def test_real_cuda_python_capture_after_a_failed_enqueue():
    """On a real GPU (benchmarks/gpu_check.sh): an enqueue that fails inside CudaBindings.capture leaves the stream
    out of capture mode, and the next capture on it records, replays and frees as usual."""
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda.bindings) is not installed")
    try:
        api = CudaBindings()
    except RuntimeError as e:
        pytest.skip(f"cuda-python cannot start here: {e}")
    rt = api.rt
    back = np.zeros(64, np.uint8)
    ptr = api.malloc(back.nbytes)

    def failing():
        api._ok(rt.cudaMemsetAsync(ptr, 3, back.nbytes, api.stream))
        raise InputError("TensorRT could not run the batch")

    with pytest.raises(InputError):
        api.capture(failing)
    status = api._ok(rt.cudaStreamIsCapturing(api.stream))
    assert status == rt.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone
    api.sync()
    graph = api.capture(lambda: api._ok(rt.cudaMemsetAsync(ptr, 7, back.nbytes, api.stream)))
    api.launch(graph)
    api.d2h(back, ptr)
    api.sync()
    assert (back == 7).all()   # the failed capture's memset (3) never ran
    api.destroy(graph)
    api.free(ptr)
    api.close()


@pytest.mark.parametrize("seed", range(5))
def test_every_capture_follows_a_completed_plain_enqueue(seed):
    """The warm-up rule, on random batch sequences: a call that captures has enqueued plainly first, for that
    batch's shape, so nothing a first enqueue sets up (lazy kernels, a plugin's device weights) is captured.
    tests/test_engine_runtime.py holds the C++ steps (cpp/src/graph_steps.h) to these same actions."""
    rng = np.random.default_rng(seed)
    steps = GraphSteps()
    shaped: int | None = None
    for batch in rng.integers(1, 4, size=40):
        actions = steps.step(int(batch))
        if "shape" in actions:
            shaped = int(batch)
        if "capture" in actions:
            assert actions.index("plain") < actions.index("capture") and shaped == batch
            steps.captured_for(int(batch))
        assert ("replay" in actions) == ("plain" not in actions)


def test_first_capture_waits_for_the_warm_up_in_the_cpp_classifier():
    """classifier_tensorrt.cpp synchronizes the stream after the plain enqueue and before it begins a capture, and
    discards the graph of a failed capture (the Python runner's order, tested above on its stand-in)."""
    source = (ROOT / "cpp" / "src" / "classifier_tensorrt.cpp").read_text()
    capture = source[source.index("if (options_.cuda_graph && steps.capture)"):]
    assert capture.index("cudaStreamSynchronize(stream_)") < capture.index("cudaStreamBeginCapture")
    assert capture.index("cudaStreamEndCapture") < capture.index("cudaGraphDestroy(graph)") < \
        capture.index("return q;")


# --- 4: --cuda-graph on TensorRT-RTX engines ---------------------------------------------------------------------

def test_rtx_engine_without_user_allocation_refuses_cuda_graph(tmp_path, boundary):
    _, log, _ = boundary
    engine = engine_with_manifest(tmp_path / "e", flavour="tensorrt-rtx", tensorrt_version="1.7.1",
                                  compute_capability="8.9", device="RTX 40xx")
    with pytest.raises(InputError, match="built without REQUIRE_USER_ALLOCATION, which TensorRT-RTX needs to "
                                         "capture a CUDA graph: run without --cuda-graph, or rebuild with: "):
        tensorrt_runner(engine, cuda_graph=True)
    assert log == []   # refused before TensorRT or CUDA is touched
    result = invoke("bench", "--engine", engine, "--cuda-graph")
    assert_clean_failure(result, "REQUIRE_USER_ALLOCATION")


def test_context_that_cannot_be_captured_is_refused_in_one_line(tmp_path, boundary):
    failures, log, rt = boundary
    failures.capturable = False
    engine = engine_with_manifest(tmp_path / "e", flavour="tensorrt-rtx", tensorrt_version="1.7.1",
                                  compute_capability="8.9", device="RTX 40xx", user_allocation=True)
    runner = tensorrt_runner(engine, cuda_graph=True)
    with pytest.raises(InputError, match="tensorrt-rtx cannot capture this engine into a CUDA graph on this "
                                         "stream: run without --cuda-graph"):
        runner.run(np.zeros((1, 3, 32, 32), np.float32))
    assert "begin_capture" not in log and not rt.capturing
    failures.capturable = True
    assert runner.run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)
    assert "begin_capture" in log


# --- 4 and 6: what a real TensorRT-RTX build records ------------------------------------------------------------

@rtx
def test_rtx_build_records_tf32_and_user_allocation(tmp_path, tiny_plain):
    record = build_engine(tiny_plain, tmp_path / "a.engine",
                          BuildOptions(TARGETS["rtx-sm89"], batch=(1, 2, 4))).manifest
    e = record.engine
    assert (e.tf32, e.user_allocation, e.plugin_tensorrt_version) == (False, True, None)
    assert e.rebuild.split()[-3:-2] == ["--no-tf32"]
    written = json.loads((tmp_path / "a.engine.json").read_text())["engine"]
    assert (written["tf32"], written["user_allocation"]) == (False, True)


@rtx
def test_cli_tf32_flag_reaches_the_manifest_and_the_rebuild_line(tmp_path, tiny_plain):
    out = tmp_path / "t.engine"
    result = invoke("build", "--onnx", tiny_plain, "--target", "rtx-sm89", "--batch", "1:2:4", "--tf32", "--json",
                    "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tf32"] is True and report["user_allocation"] is True
    assert report["trtexec"] is None   # TensorRT-RTX engines are not trtexec's
    e = read_manifest(out).engine
    assert e.tf32 is True and " --tf32 " in e.rebuild and "--no-tf32" not in e.rebuild


def test_manifest_without_the_new_fields_still_reads(tmp_path):
    """Engines built before tf32, user_allocation and plugin_tensorrt_version were recorded keep loading."""
    engine = engine_with_manifest(tmp_path / "e")
    path = tmp_path / "e" / "model.engine.json"
    data = json.loads(path.read_text())
    for key in ("tf32", "user_allocation", "plugin_tensorrt_version"):
        del data["engine"][key]
    path.write_text(json.dumps(data))
    e = read_manifest(engine).engine
    assert (e.tf32, e.user_allocation, e.plugin_tensorrt_version) == (None, False, None)


# --- 9: the TensorRT headers the plugin library was compiled against --------------------------------------------

def _library(tmp_path: Path, name: str, body: str) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found: no shared library can be made here")
    source, out = tmp_path / f"{name}.c", tmp_path / f"lib{name}.so"
    source.write_text(body)
    done = subprocess.run(["gcc", "-shared", "-fPIC", str(source), "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def test_library_tensorrt_version_read_through_its_symbol(tmp_path):
    reporting = _library(tmp_path, "reports", 'char const* refinerEdgePluginTensorRTVersion(void) '
                                              '{ return "10.13.3"; }\n')
    silent = _library(tmp_path, "silent", "int other(void) { return 1; }\n")
    garbage = _library(tmp_path, "garbage", 'char const* refinerEdgePluginTensorRTVersion(void) '
                                            '{ return "ten"; }\n')
    assert plugins.library_tensorrt_version(reporting) == "10.13.3"
    assert plugins.library_tensorrt_version(silent) is None
    assert plugins.library_tensorrt_version(garbage) is None
    assert plugins.library_tensorrt_version(tmp_path / "missing.so") is None


@rtx
def test_build_says_when_the_library_headers_are_unknown_and_refuses_another_major(tmp_path):
    """At build time (the builder's child), before the builder loads the library: unknown headers are a note, a
    library for another major than the builder's is refused naming both."""
    import tensorrt_rtx

    silent = _library(tmp_path, "silent", "int other(void) { return 1; }\n")
    target = TARGETS["rtx-sm89"]
    notes: list[str] = []
    assert plugin_headers(plugins.Plugin("library", silent), target, notes) is None
    assert len(notes) == 1 and "does not say which TensorRT headers" in notes[0]
    here = tensorrt_rtx.__version__.split(".")[0]
    other = _library(tmp_path, "other", 'char const* refinerEdgePluginTensorRTVersion(void) '
                                        f'{{ return "{int(here) + 10}.1.0"; }}\n')
    with pytest.raises(InputError, match=f"compiled against TensorRT {int(here) + 10}.1.0 headers and this builder "
                                         f"is TensorRT {tensorrt_rtx.__version__}"):
        plugin_headers(plugins.Plugin("library", other), target, [])
    same = _library(tmp_path, "same", 'char const* refinerEdgePluginTensorRTVersion(void) '
                                      f'{{ return "{here}.0.0"; }}\n')
    assert plugin_headers(plugins.Plugin("library", same), target, []) == f"{here}.0.0"
    assert plugin_headers(plugins.Plugin("none"), target, []) is None


# --- 7: the C++ classifier against every TensorRT header set ----------------------------------------------------

HEADERS = tensorrt_header_sets()
CUDA_INCLUDE = Path("/usr/local/cuda/include")


@pytest.mark.parametrize("version", ["10.3.0", "10.13.3", "11.1"])
def test_cpp_tensorrt_classifier_compiles_warning_free(version):
    """classifier_tensorrt.cpp (cudaSetDevice at every entry point that touches CUDA, the capture ended on
    failure) compiles with -Wall -Wextra -Werror against each TensorRT header set; the headers themselves are
    system includes, so their own deprecation warnings are not ours."""
    include = HEADERS / version / "include"
    if not (include / "NvInferRuntime.h").is_file():
        pytest.skip(f"TensorRT {version} headers not found beside the checkout ({HEADERS.name}/{version})")
    if shutil.which("g++") is None or not (CUDA_INCLUDE / "cuda_runtime_api.h").is_file():
        pytest.skip("g++ and the CUDA toolkit's headers are needed to compile the TensorRT classifier")
    cmd = ["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'cpp/include'}",
           f"-I{ROOT / 'cpp/src'}", "-isystem", str(include), "-isystem", str(CUDA_INCLUDE),
           str(ROOT / "cpp" / "src" / "classifier_tensorrt.cpp")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_cpp_classifier_sets_the_device_at_each_cuda_entry_point():
    """The CUDA runtime's current device is per thread: run() (behind infer() and classify()) and the destructor
    make the engine's device current before any CUDA call, not only init()."""
    source = (ROOT / "cpp" / "src" / "classifier_tensorrt.cpp").read_text()
    run = source[source.index("    Status run(const float* input"):]
    first_cuda = min(run.index(call) for call in ("cudaMemcpyAsync", "enqueue()", "cudaStreamSynchronize"))
    assert run.index("useDevice()") < first_cuda
    destructor = source[source.index("~TensorRTClassifier()"):]
    assert destructor.index("cudaSetDevice") < destructor.index("cudaGraphExecDestroy")


# --- 8: the trtexec line that reproduces a build, per TensorRT major ----------------------------------------------

def _network(tmp_path: Path, precision: str = "fp16", weak: bool = False):
    from refiner_edge.engine.plan import Network

    manifest = read_manifest(engine_with_manifest(tmp_path / "g"))
    cache = tmp_path / "g" / "model.calib" if precision == "int8" and weak else None
    return Network(tmp_path / "g" / "m.onnx", "refiner-vit-tiny", 2, 32, "input", "dynamic", precision, fused=False,
                   manifest=manifest, parse=tmp_path / "g" / ("plain.onnx" if weak else "m.onnx"),
                   calibration_cache=cache)


def _trtexec(network, options: BuildOptions, output, version: str, batch, form: str, library=None):
    """The trtexec line of a plan settled as `resolve` would for these options on `version` (which needs the
    target's TensorRT and GPU, absent here)."""
    from refiner_edge.engine.plan import BuildPlan, opt_level, tf32, trtexec_command, workspace

    plan = BuildPlan(options, network, version, network.precision, weak=network.parse != network.onnx,
                     plugin_form=form, profiles=(batch,), profile_note=None, workspace=workspace(options),
                     opt_level=opt_level(options), tf32=tf32(options), user_allocation=options.target.rtx)
    return trtexec_command(plan, output, library)


def test_trtexec_line_for_tensorrt_10_strongly_typed_with_the_plugin_library(tmp_path):
    library = tmp_path / "lib" / "librefiner_edge_plugin.so"
    options = BuildOptions(TARGETS["orin-agx-jp6"], workspace=1 << 30, timing_cache=tmp_path / "t.cache")
    line = _trtexec(_network(tmp_path), options, tmp_path / "m.engine", "10.3.0.26", (1, 2, 4), "library",
                    library)
    g = tmp_path / "g"
    assert line == (f"trtexec --onnx={g / 'm.onnx'} --saveEngine={tmp_path / 'm.engine'} --stronglyTyped "
                    "--minShapes=input:1x3x32x32 --optShapes=input:2x3x32x32 --maxShapes=input:4x3x32x32 "
                    "--memPoolSize=workspace:1024M --builderOptimizationLevel=3 --noTF32 "
                    "--profilingVerbosity=detailed "
                    f"--timingCacheFile={tmp_path / 't.cache'} --dynamicPlugins={library}")


def test_trtexec_line_for_a_weakly_typed_int8_dla_build(tmp_path):
    """TensorRT 10 weak typing (JetPack 6 DLA): the plain graph with --fp16 --int8 and the calibration cache."""
    import shlex

    options = BuildOptions(TARGETS["orin-agx-jp6"], precision="int8", dla_core=1, batch=(2, 2, 2), weak_typing=True,
                           tf32=True)
    args = shlex.split(_trtexec(_network(tmp_path, "int8", weak=True), options, tmp_path / "m.engine",
                                "10.3.0", (2, 2, 2), "none"))
    assert args[1] == f"--onnx={tmp_path / 'g' / 'plain.onnx'}"
    assert args[3:6] == ["--fp16", "--int8", f"--calib={tmp_path / 'g' / 'model.calib'}"]
    assert {"--useDLACore=1", "--allowGPUFallback", "--memPoolSize=workspace:4096M"} <= set(args)
    assert "--stronglyTyped" not in args and "--noTF32" not in args   # TF32 asked for: trtexec's default


def test_trtexec_line_for_tensorrt_11_and_where_there_is_none(tmp_path):
    """TensorRT 11 is strongly typed only (no --stronglyTyped, no precision flags); TensorRT-RTX and the aot form
    have no trtexec line."""
    import shlex

    options = BuildOptions(TARGETS["b200"], version_compatible=True)
    args = shlex.split(_trtexec(_network(tmp_path), options, tmp_path / "m.engine", "11.4.1", (1, 8, 32),
                                "none"))
    assert "--stronglyTyped" not in args and "--fp16" not in args and "--versionCompatible" in args
    assert "--maxShapes=input:32x3x32x32" in args and "--memPoolSize=workspace:8192M" in args
    portable = BuildOptions(TARGETS["a100-portable"])
    assert "--hardwareCompatibilityLevel=ampere+" in _trtexec(_network(tmp_path), portable, "m.engine",
                                                              "10.13.3", (1, 8, 32), "none")
    assert _trtexec(_network(tmp_path), BuildOptions(TARGETS["a100"]), "m.engine", "10.13.3", (1, 8, 32),
                    "aot") is None
    assert _trtexec(_network(tmp_path), BuildOptions(TARGETS["rtx-sm89"]), "m.engine", "1.7.1", (1, 8, 32),
                    "none") is None


# --- the new manifest fields, read alike by Python and C++ ----------------------------------------------------

from .test_compat import probe  # noqa: E402,F401 - the compiled C++ engine check (a fixture)


@pytest.mark.parametrize("key,value,expect", [
    ("tf32", "yes", "tf32 should be bool or NoneType, got str"),
    ("user_allocation", None, "user_allocation must not be null"),
    ("user_allocation", 1, "user_allocation should be bool, got int"),
    ("plugin_tensorrt_version", 11, "plugin_tensorrt_version should be str or NoneType, got int"),
])
def test_new_engine_fields_are_typed_alike_in_python_and_cpp(key, value, expect, probe, tmp_path):  # noqa: F811
    engine = engine_with_manifest(tmp_path / "e")
    path = tmp_path / "e" / "model.engine.json"
    data = json.loads(path.read_text())
    data["engine"][key] = value
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as caught:
        read_manifest(engine)
    assert str(caught.value).endswith(f"engine: {expect}")
    done = subprocess.run([str(probe), str(engine), "tensorrt", "10.3.0", "8.7", "Orin"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.strip().endswith(f"engine: {expect}"), done.stderr


def test_build_tf32_option_defaults_to_the_librarys():
    """--tf32/--no-tf32 is None on the command line, resolved by the library from defaults.BUILD_TF32, whose value
    the help states."""
    import inspect

    from refiner_edge import defaults
    from refiner_edge.cli.build import build
    from refiner_edge.engine.plan import tf32

    assert inspect.signature(build).parameters["tf32"].default is None
    assert tf32(BuildOptions(TARGETS["rtx-sm89"])) is defaults.BUILD_TF32
    assert tf32(BuildOptions(TARGETS["rtx-sm89"], tf32=not defaults.BUILD_TF32)) is not defaults.BUILD_TF32
    shown = "tf32" if defaults.BUILD_TF32 else "no-tf32"
    assert f"[default: {shown}]" in " ".join(invoke("build", "--help").stdout.split())


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_trtexec_line_of_a_real_build_makes_an_engine_that_runs_alike(tmp_path, tiny_plain):
    """On a GPU with TensorRT and trtexec (benchmarks/gpu_check.sh): the manifest's trtexec line builds an engine
    that gives the logits refiner-edge's own build gives, and the manifest records TF32 off."""
    import shlex

    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("tensorrt is not installed (NVIDIA's index; JetPack ships it): TensorRT builds are not run here")
    from refiner_edge.engine.targets import detect_gpu, get_target

    if detect_gpu() is None:
        pytest.skip("no CUDA GPU: TensorRT builds on the GPU it targets")
    if shutil.which("trtexec") is None:
        pytest.skip("trtexec is not on PATH (TensorRT's bin/ folder)")
    ours = tmp_path / "ours.engine"
    record = build_engine(tiny_plain, ours, BuildOptions(get_target("auto"), batch=(1, 2, 4))).manifest
    assert record.engine.tf32 is False and "--no-tf32" in record.engine.rebuild
    line = record.report["trtexec"]
    args = shlex.split(line.replace(str(ours.absolute()), str(tmp_path / "theirs.engine")))
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    theirs = tmp_path / "theirs.engine"
    shutil.copy(ours.with_name("ours.engine.json"), tmp_path / "theirs.engine.json")
    data = json.loads((tmp_path / "theirs.engine.json").read_text())
    data["artifact"], data["sha256"] = theirs.name, file_sha256(theirs)
    (tmp_path / "theirs.engine.json").write_text(json.dumps(data))
    x = np.random.default_rng(0).standard_normal((2, 3, record.model.img_size, record.model.img_size))
    a, b = tensorrt_runner(ours), tensorrt_runner(theirs)
    np.testing.assert_allclose(b.run(x.astype(np.float32)), a.run(x.astype(np.float32)), rtol=1e-3, atol=1e-3)
    a.close()
    b.close()


class _Delegate:
    """Passes every attribute through to `inner`, except those set on it (failure injection on a real object)."""

    def __init__(self, inner, **overrides):
        self.__dict__.update(_inner=inner, **overrides)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_engine_cuda_graph_after_a_failed_enqueue(tmp_path, tiny_plain, monkeypatch):
    """On a GPU with TensorRT (benchmarks/gpu_check.sh): real TensorRT and cuda-python, the enqueue inside the first
    capture made to fail once. That call is one line; the next ones capture, replay and match ONNX Runtime."""
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("tensorrt is not installed (NVIDIA's index; JetPack ships it): TensorRT builds are not run here")
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda.bindings) is not installed")
    from refiner_edge.engine.targets import detect_gpu, get_target
    from refiner_edge.runners.runtime import load_runner

    if detect_gpu() is None:
        pytest.skip("no CUDA GPU: TensorRT builds on the GPU it targets")
    engine = tmp_path / "tiny.engine"
    build_engine(tiny_plain, engine, BuildOptions(get_target("auto"), batch=(1, 2, 4)))
    real = runner_module.local_runtime
    calls = {"n": 0}

    def execute(context):
        def call(stream):
            calls["n"] += 1
            return False if calls["n"] == 2 else context.execute_async_v3(stream)   # 2: the first capture's
        return call

    def local_runtime(flavour):
        trt, runtime = real(flavour)

        def make_runtime(logger):
            rt = trt.Runtime(logger)

            def deserialize(data):
                plan = rt.deserialize_cuda_engine(data)

                def context():
                    ctx = plan.create_execution_context()
                    return _Delegate(ctx, execute_async_v3=execute(ctx))
                return _Delegate(plan, create_execution_context=context)
            return _Delegate(rt, deserialize_cuda_engine=deserialize)
        return _Delegate(trt, Runtime=make_runtime), runtime

    monkeypatch.setattr(runner_module, "local_runtime", local_runtime)
    runner = tensorrt_runner(engine, cuda_graph=True)
    ort = load_runner("onnxruntime", onnx=tiny_plain)
    size = runner.manifest.model.img_size
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    with pytest.raises(InputError, match="TensorRT could not run the batch"):
        runner.run(x)
    expected = ort(x)
    for _ in range(3):   # plain + capture, then replays
        np.testing.assert_allclose(runner.run(x), expected, rtol=1e-2, atol=1e-2)
    assert calls["n"] == 4
    runner.close()



def test_the_chains_trtexec_line_names_the_published_files_not_the_staging_folder(tmp_path):
    """The chain builds from stage files in its staging folder, which is removed once they are published beside -o:
    its trtexec line names where they lie afterwards (here a weakly typed INT8 build: the plain graph and the
    calibration cache too), and a file reused where it lies keeps its own path."""
    import shlex

    from refiner_edge.engine.plan import BuildPlan, opt_level, tf32, trtexec_command, workspace
    from refiner_edge.pipeline import published_beside

    options = BuildOptions(TARGETS["orin-agx-jp6"], precision="int8", batch=(2, 2, 2), weak_typing=True)
    output = tmp_path / "out" / "s.int8.engine"
    staging = tmp_path / "out" / ".refiner-edge-staging"
    network = dataclasses.replace(_network(tmp_path, "int8", weak=True), onnx=staging / "s.int8.onnx",
                                  parse=staging / "s.onnx", calibration_cache=staging / "s.int8.calib")
    plan = BuildPlan(options, network, "10.3.0", "int8", weak=True, plugin_form="none", profiles=((2, 2, 2),),
                     profile_note=None, workspace=workspace(options), opt_level=opt_level(options),
                     tf32=tf32(options), user_allocation=False)
    published = published_beside(output, staging)
    args = shlex.split(trtexec_command(plan, staging / output.name, published=published))
    assert args[1] == f"--onnx={output.parent / 's.onnx'}" and args[2] == f"--saveEngine={output}"
    assert f"--calib={output.parent / 's.int8.calib'}" in args and str(staging) not in " ".join(args)
    assert published(tmp_path / "elsewhere" / "s.onnx") == tmp_path / "elsewhere" / "s.onnx"
