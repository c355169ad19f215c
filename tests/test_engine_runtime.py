"""What happens the first time an engine meets real TensorRT and CUDA, checked here without either: where the real
component is missing, the test injects the failure the real API documents (a null from
IPluginRegistry::loadLibrary for a creator already registered, cudaErrorInsufficientDriver from cuda-python 13 on a
CUDA 12 driver, no current context in a thread that did not push one) and says so.

- GPU detection falls back from cuda-python to nvidia-smi to torch instead of calling the machine GPU-less;
- the runner falls back to pycuda on any cuda-python failure, and names both causes when neither works;
- pycuda's context is pushed for each call, so PyTriton's worker threads (`serve`) have one;
- a second load of the plugin library in one process is not a failure;
- CUDA graphs: one plain enqueue after every shape change before a replay;
- the batch contract: above the profile maximum is refused, by the runner and by bench;
- `same-cc` is refused by version on TensorRT < 10.9;
- `validate` without the checkpoint the graph was exported from is refused, not compared with random weights;
- the plugin library has one build folder, named the same in every document.
"""
from __future__ import annotations

import enum
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from refiner_edge.engine import plugins
from refiner_edge.engine.plan import check_hardware_compat
from refiner_edge.engine.targets import TARGETS, Gpu, detect_gpu, get_target
from refiner_edge.errors import InputError, MissingDependencyError
from refiner_edge.images.preprocess import Preprocess
from refiner_edge.runners.base import Runner
from refiner_edge.runners.bench import bench
from refiner_edge.runners.tensorrt import GraphSteps, PyCuda, cuda_api

from .helpers import assert_clean_failure, invoke

ROOT = Path(__file__).resolve().parents[1]


# --- CUDA bindings that do not fit the driver ------------------------------------------------------------------

class _CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


def _cuda_python_13_on_a_cuda_12_driver(monkeypatch):
    """Failure injection: cuda.bindings.runtime as cuda-python 13 behaves on a CUDA 12 driver: it imports, and
    every call returns cudaErrorInsufficientDriver."""
    failing = lambda *a, **k: (_CudaError.cudaErrorInsufficientDriver, None)  # noqa: E731
    runtime = types.SimpleNamespace(cudaError_t=_CudaError, cudaGetDeviceCount=failing,
                                    cudaGetDeviceProperties=failing, cudaStreamCreate=failing)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)


def _nvidia_smi(tmp_path, monkeypatch, output: str, code: int = 0):
    """A stand-in for the driver's nvidia-smi on PATH (this machine has no driver), answering as the real one
    does to --query-gpu=name,compute_cap,memory.total --format=csv,noheader,nounits."""
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir(exist_ok=True)
    (tmp_path / "answer.txt").write_text(output + "\n")
    tool.write_text(f"#!/bin/sh\ncat '{tmp_path / 'answer.txt'}'\nexit {code}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")


def test_gpu_detection_falls_back_when_cuda_python_is_newer_than_the_driver(tmp_path, monkeypatch, caplog):
    _cuda_python_13_on_a_cuda_12_driver(monkeypatch)
    _nvidia_smi(tmp_path, monkeypatch, "NVIDIA H100 80GB HBM3, 9.0, 81559")
    assert detect_gpu() == Gpu("NVIDIA H100 80GB HBM3", "9.0", 81559 << 20)
    # nvidia-smi failing too (no driver loaded): torch is asked next, and every cause is logged under -v
    _nvidia_smi(tmp_path, monkeypatch, "NVIDIA-SMI has failed because it couldn't communicate with the driver", 9)
    monkeypatch.setitem(sys.modules, "torch", None)   # this machine's torch is CPU-only; absent says the same
    with caplog.at_level(logging.DEBUG, logger="refiner_edge.engine.targets"):
        assert detect_gpu() is None
    said = caplog.text
    assert "cuda-python could not answer: cudaErrorInsufficientDriver" in said
    assert "nvidia-smi could not answer: NVIDIA-SMI has failed" in said and "torch could not answer" in said
    # and `build --target auto` says what failed rather than that there is no GPU
    with pytest.raises(InputError, match="could not read the GPU \\(cuda-python: cudaErrorInsufficientDriver; "
                                         "nvidia-smi: NVIDIA-SMI has failed") as e:
        get_target("auto")
    assert "none was found" not in str(e.value)


def test_runner_falls_back_to_pycuda_and_names_both_causes(monkeypatch):
    _cuda_python_13_on_a_cuda_12_driver(monkeypatch)
    monkeypatch.setitem(sys.modules, "pycuda", None)            # pycuda not installed
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(MissingDependencyError) as e:
        cuda_api()
    message = str(e.value)
    assert "cuda-python: CUDA error cudaErrorInsufficientDriver" in message
    assert "pycuda: cannot import pycuda" in message
    assert len(message.splitlines()) == 1
    # with pycuda working, it is used instead
    driver = _pycuda_driver()
    monkeypatch.setitem(sys.modules, "pycuda", types.SimpleNamespace(driver=driver))
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    assert isinstance(cuda_api(), PyCuda)


@pytest.mark.gpu
def test_every_way_of_detecting_the_gpu_agrees_on_a_gpu_machine():
    """On a machine with a GPU (benchmarks/gpu_check.sh): each detection way that is installed names the same
    compute capability, so the fallback order cannot change the target `auto` picks."""
    from refiner_edge.engine.targets import GPU_PROBES

    answers = {}
    for name, probe in GPU_PROBES:
        try:
            answers[name] = probe()
        except (ImportError, OSError, RuntimeError):
            continue
    found = {name: gpu.compute_capability for name, gpu in answers.items() if gpu is not None}
    if not found:
        pytest.skip(f"no CUDA GPU found by any of {', '.join(n for n, _ in GPU_PROBES)}")
    assert len(set(found.values())) == 1, found
    assert detect_gpu().compute_capability in found.values()


# --- pycuda under serve: a context per call --------------------------------------------------------------------

def _pycuda_driver():
    """pycuda.driver's calls the runner makes, with the real API's failure injected: a copy in a thread with no
    current context fails (pycuda raises LogicError 'invalid device context')."""
    local = threading.local()

    def need_context(*_):
        if not getattr(local, "stack", None):
            raise RuntimeError("cuMemcpyHtoDAsync failed: invalid device context")

    class Context:
        def push(self):
            local.stack = getattr(local, "stack", []) + [self]

        @staticmethod
        def pop():
            local.stack.pop()

    primary = Context()
    return types.SimpleNamespace(
        init=lambda: None, Device=lambda n: types.SimpleNamespace(retain_primary_context=lambda: primary),
        Context=Context, Stream=lambda: types.SimpleNamespace(handle=1, synchronize=need_context),
        memcpy_htod_async=need_context, memcpy_dtoh_async=need_context, mem_get_info=lambda: (1, 2))


def test_pycuda_context_is_current_in_a_worker_thread(monkeypatch):
    driver = _pycuda_driver()
    monkeypatch.setitem(sys.modules, "pycuda", types.SimpleNamespace(driver=driver))
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    api = PyCuda()
    errors = []

    def worker():   # what PyTriton does: the model callable runs in a thread of its own
        try:
            with api.current():
                api.h2d(0, np.zeros(4, np.float32))
                api.sync()
            api.h2d(0, np.zeros(4, np.float32))   # popped again: the thread holds no context afterwards
        except RuntimeError as e:
            errors.append(str(e))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert errors == ["cuMemcpyHtoDAsync failed: invalid device context"]


@pytest.mark.gpu
def test_real_pycuda_copies_from_a_worker_thread():
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed")
    try:
        api = PyCuda()
    except Exception as e:  # noqa: BLE001 - pycuda raises its own error types
        pytest.skip(f"pycuda cannot start here: {e}")
    x = np.arange(16, dtype=np.float32)
    back = np.empty_like(x)
    box = []

    def worker():
        with api.current():
            ptr = api.malloc(x.nbytes)
            api.h2d(ptr, x)
            api.d2h(back, ptr)
            api.sync()
            api.free(ptr)
        box.append(True)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert box == [True] and np.array_equal(back, x)


@pytest.mark.gpu
def test_real_cuda_python_graph_capture_and_release():
    """The cuda-python calls the runner makes for --cuda-graph and close(), on a real GPU: a captured memset replays,
    and the graph, its instantiation, the buffer and the stream are each freed (cudaGraphDestroy after
    instantiating, cudaGraphExecDestroy and cudaStreamDestroy at close)."""
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda.bindings) is not installed")
    from refiner_edge.runners.tensorrt import CudaBindings

    try:
        api = CudaBindings()
    except RuntimeError as e:
        pytest.skip(f"cuda-python cannot start here: {e}")
    back = np.zeros(64, np.uint8)
    ptr = api.malloc(back.nbytes)
    graph = api.capture(lambda: api._ok(api.rt.cudaMemsetAsync(ptr, 7, back.nbytes, api.stream)))
    api.launch(graph)
    api.d2h(back, ptr)
    api.sync()
    assert (back == 7).all()
    api.destroy(graph)
    api.free(ptr)
    api.close()


# --- the plugin library, loaded twice in one process -----------------------------------------------------------

class _Registry:
    """IPluginRegistry as TensorRT behaves: load_library returns a handle the first time and None (its documented
    failure) when one of the library's creators is already registered, or when the file is not a plugin library."""

    def __init__(self):
        self.creators: set[tuple[str, str, str]] = set()

    def load_library(self, path):
        if not Path(path).read_bytes().startswith(b"plugin"):
            return None
        creator = ("RefinerDLA", "1", "refiner_edge")
        if creator in self.creators:
            return None
        self.creators.add(creator)
        return object()

    def get_creator(self, name, version, namespace=""):
        return object() if (name, version, namespace) in self.creators else None


def test_second_load_of_the_plugin_library_is_not_a_failure(tmp_path):
    library = tmp_path / "librefiner_edge_plugin.so"
    library.write_bytes(b"plugin library")
    registry = _Registry()
    plugins.load_library(registry, library, "rebuild")
    plugins.load_library(registry, library, "rebuild")   # build, then run, in one process
    broken = tmp_path / "broken.so"
    broken.write_bytes(b"not a plugin")
    with pytest.raises(InputError, match=f"TensorRT could not load the plugin library {broken}: build it again"):
        plugins.load_library(_Registry(), broken, "build it again")


def test_plugin_library_refused_beside_the_aot_form(tmp_path, monkeypatch):
    """The AOT form registers a RefinerDLA creator of the same name, version and namespace: a library whose load
    returns null then is not "already registered" but would silently run the AOT plugin in its place."""
    library = tmp_path / "librefiner_edge_plugin.so"
    library.write_bytes(b"plugin library")
    registry = _Registry()
    registry.creators.add(("RefinerDLA", "1", "refiner_edge"))   # what aot.register leaves in the registry
    monkeypatch.setattr(plugins, "_aot_registered", True)
    with pytest.raises(InputError, match="cannot load beside the aot plugin form"):
        plugins.load_library(registry, library, "rebuild")


# --- CUDA graphs after a shape change --------------------------------------------------------------------------

def test_cuda_graph_replays_only_after_a_plain_run_at_that_shape():
    steps = GraphSteps()
    seen = []
    for batch in (8, 8, 3, 8, 8, 3, 3):
        actions = steps.step(batch)
        if "capture" in actions:
            steps.captured_for(batch)
        seen.append(actions)
    assert seen == [("shape", "plain", "capture"), ("replay",), ("shape", "plain", "capture"),
                    ("shape", "plain"), ("replay",), ("shape", "plain"), ("replay",)]


def test_cpp_classifier_takes_the_same_graph_steps(tmp_path):
    """cpp/src/graph_steps.h, which classifier_tensorrt.cpp follows, against the Python steps on a sequence with
    every transition; built without TensorRT (tests/cpp/graph_steps_main.cpp)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the C++ graph steps cannot be built here")
    exe = tmp_path / "graph_steps"
    built = subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'cpp' / 'src'}",
                            str(ROOT / "tests" / "cpp" / "graph_steps_main.cpp"), "-o", str(exe)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    batches = [8, 8, 3, 8, 8, 3, 3, 1, 8, 1, 1]
    cpp = subprocess.run([str(exe), *map(str, batches)], capture_output=True, text=True, timeout=60).stdout
    steps, python = GraphSteps(), []
    for batch in batches:
        actions = steps.step(batch)
        if "capture" in actions:
            steps.captured_for(batch)
        python.append(" ".join(actions))
    assert cpp.splitlines() == python


# --- the batch contract ----------------------------------------------------------------------------------------

def test_bench_refuses_a_batch_above_the_profile_maximum():
    calls = []

    def run(x):
        calls.append(len(x))
        return np.zeros((len(x), 10), np.float32)

    runner = Runner("tensorrt", run, Preprocess(32, 0.9, (0.5,) * 3, (0.5,) * 3, "bicubic"), 10, True, "an engine",
                    max_batch=4)
    with pytest.raises(InputError, match="batch 8 is above the engine's profile maximum 4: use --batch 4 or less"):
        bench(runner, batch=8, iterations=2, warmup=0)
    assert calls == []
    assert bench(runner, batch=4, iterations=2, warmup=0)["batch"] == 4 and set(calls) == {4}


def test_docs_state_the_batch_contract_the_code_keeps():
    text = (ROOT / "docs" / "engines.md").read_text()
    assert "A batch outside the profile is refused before it reaches TensorRT" in text
    assert "never split into chunks" in text
    assert "chunks it does" not in (ROOT / "refiner_edge" / "runners" / "tensorrt.py").read_text()


# --- same-cc on TensorRT 10.3 ----------------------------------------------------------------------------------

def test_same_cc_is_refused_before_tensorrt_10_9():
    import dataclasses

    same_cc = dataclasses.replace(TARGETS["l4"], name="l4-same-cc", hardware_compat="same-cc")
    with pytest.raises(InputError, match="same-cc, which TensorRT 10.9\\+ has and this is TensorRT 10.3.0"):
        check_hardware_compat(same_cc, "10.3.0")
    check_hardware_compat(same_cc, "10.9.0")
    check_hardware_compat(TARGETS["a100-portable"], "10.3.0")   # AMPERE_PLUS exists in 10.3


# --- validate with a checkpoint the manifest records -----------------------------------------------------------

def test_validate_without_the_recorded_checkpoint_is_refused(tmp_path, tiny_plain, sample_photos):
    graph = tmp_path / "tiny.onnx"
    shutil.copyfile(tiny_plain, graph)
    data = json.loads(Path(f"{tiny_plain}.json").read_text())
    data["model"]["checkpoint_sha256"] = "ab" * 32
    Path(f"{graph}.json").write_text(json.dumps(data))
    result = invoke("validate", "--onnx", graph, "--images", sample_photos[0].parent)
    assert_clean_failure(result, "holds the weights of a checkpoint (SHA-256 abababababab...): pass --checkpoint")
    assert result.exit_code == 2


# --- one build folder for the plugin library -------------------------------------------------------------------

def test_plugin_library_has_one_build_folder_in_every_document():
    documents = ["README.md", "cpp/README.md", "plugins/refiner_dla/README.md", "plugins/refiner_dla/CMakeLists.txt",
                 "docs/jetson.md", "docs/engines.md", "refiner_edge/deploy/triton.py",
                 "refiner_edge/deploy/deepstream.py", "refiner_edge/engine/plugins.py"]
    for name in documents:
        text = (ROOT / name).read_text()
        for other in ("plugins/refiner_dla/build", "build/cpp/refiner_dla", "make -C plugins"):
            assert other not in text, (name, other)
    assert plugins.BUILD_DIR == ROOT / "build" / "plugin"
    for name in ("cpp/README.md", "plugins/refiner_dla/README.md", "docs/jetson.md", "docs/engines.md"):
        assert "build/plugin" in (ROOT / name).read_text(), name
