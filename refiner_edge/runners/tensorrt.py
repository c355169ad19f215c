"""TensorRT runner: a raw engine (+ its manifest) on a CUDA GPU through cuda-python (`cuda.bindings`) buffers and
one stream, or pycuda where that is what the machine has (older JetPack images). Inputs are copied in, the engine
runs with `execute_async_v3`, outputs are copied back; the batch may be anything within the engine's profiles.
With cuda_graph=True the enqueue is captured once per batch size and replayed as a CUDA graph.

An engine with several optimisation profiles (`build --batch 1 --batch 1:8:16`) runs each batch in the first profile
that holds it (manifest.profile_for: the smallest MAX that holds it). One execution context switches among them
(`set_optimization_profile_async` on the runner's stream, then the input shape set again): a context per profile
would hold its own activation memory for its profile's MAX, so one context is the cheaper of the two, and the
switch happens only when the batch size changes, which already costs a shape change.

Before TensorRT sees the engine, engine/checks.py compares its manifest with this machine (GPU, TensorRT version,
plugin library), so a stale engine is one line with the command that rebuilds it.
"""
from __future__ import annotations

import contextlib
import weakref
from pathlib import Path

import numpy as np

from ..engine.checks import (Runtime, batch_in_profile, check_engine, check_weights, read_engine_manifest,
                             rebuild_line)
from ..errors import InputError, MissingDependencyError
from ..extras import PLATFORM_HINT, install_hint
from ..images.preprocess import Preprocess
from ..manifest import profile_for
from .base import Runner


class CudaBindings:
    """The few CUDA runtime calls the runner makes, on cuda-python's `cuda.bindings.runtime`."""

    label = "cuda-python"

    def __init__(self):
        from cuda.bindings import runtime as cudart

        self.rt = cudart
        self.stream = self._ok(cudart.cudaStreamCreate())

    def current(self):
        """The runtime API makes the device's primary context current in any thread by itself."""
        return contextlib.nullcontext()

    def _ok(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA error {getattr(err, 'name', err)}")
        return rest[0] if len(rest) == 1 else rest

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def malloc(self, nbytes: int) -> int:
        return int(self._ok(self.rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        self._ok(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def d2h(self, dst: np.ndarray, src: int) -> None:
        self._ok(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def sync(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream))

    def used_memory(self) -> int:
        free, total = self._ok(self.rt.cudaMemGetInfo())
        return int(total) - int(free)

    def capture(self, enqueue) -> object:
        """A CUDA graph of what `enqueue` puts on the stream. The capture is ended whether or not `enqueue` succeeds:
        a stream left capturing refuses all later work, so one failed enqueue would fail every later call (the C++
        classifier ends it the same way). A graph captured around a failure is discarded, never launched."""
        rt = self.rt
        self._ok(rt.cudaStreamBeginCapture(self.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        try:
            enqueue()
        except BaseException:
            err, graph = rt.cudaStreamEndCapture(self.stream)
            if err == rt.cudaError_t.cudaSuccess and graph is not None:
                rt.cudaGraphDestroy(graph)
            raise
        graph = self._ok(rt.cudaStreamEndCapture(self.stream))
        try:
            return self._ok(rt.cudaGraphInstantiate(graph, 0))
        finally:
            rt.cudaGraphDestroy(graph)   # the instantiated graph does not need it

    def launch(self, graph) -> None:
        self._ok(self.rt.cudaGraphLaunch(graph, self.stream))

    def destroy(self, graph) -> None:
        """Free what capture() instantiated."""
        self.rt.cudaGraphExecDestroy(graph)

    def close(self) -> None:
        self.rt.cudaStreamDestroy(self.stream)


class PyCuda:
    """The same calls on pycuda, for machines without working cuda-python.

    The device's primary context is pushed for each call and popped after it (`current`), not made current once by
    pycuda.autoinit: a context is current only in the thread that pushed it, and PyTriton (`serve`) calls the model
    from threads of its own, where copies and execute_async_v3 would otherwise run with no context."""

    label = "pycuda"

    def __init__(self, device: int = 0):
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        self.context = cuda.Device(device).retain_primary_context()
        with self.current():
            self.stream = cuda.Stream()
        self._allocations: dict[int, object] = {}

    @contextlib.contextmanager
    def current(self):
        self.context.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    @property
    def stream_handle(self) -> int:
        return self.stream.handle

    def malloc(self, nbytes: int) -> int:
        alloc = self.cuda.mem_alloc(nbytes)
        self._allocations[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        self._allocations.pop(ptr, None)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(dst, src, self.stream)

    def d2h(self, dst: np.ndarray, src: int) -> None:
        self.cuda.memcpy_dtoh_async(dst, src, self.stream)

    def sync(self) -> None:
        self.stream.synchronize()

    def used_memory(self) -> int:
        free, total = self.cuda.mem_get_info()
        return int(total) - int(free)

    def capture(self, enqueue):
        raise InputError(f"--cuda-graph needs cuda-python ({install_hint('cuda')})")

    def launch(self, graph) -> None:  # pragma: no cover - capture refuses first
        raise InputError("--cuda-graph needs cuda-python")

    def destroy(self, graph) -> None:  # pragma: no cover - capture refuses first
        pass

    def close(self) -> None:
        """The stream and allocations go with this object (pycuda frees them when collected)."""


def cuda_api():
    """cuda-python, else pycuda. Any failure to start cuda-python falls back, not only its absence: cuda-python
    13 on a CUDA 12 driver (JetPack 6) imports fine and then fails with cudaErrorInsufficientDriver. When neither
    works the error names both causes."""
    causes = []
    for api in (CudaBindings, PyCuda):
        try:
            return api()
        except ImportError as e:
            causes.append(f"{api.label}: cannot import {e.name or e}")   # cuda-python < 12.6.1: no cuda.bindings
        except Exception as e:  # noqa: BLE001 - any CUDA failure here means: try the other binding
            causes.append(f"{api.label}: {str(e).strip() or type(e).__name__}")
    raise MissingDependencyError("running an engine needs a CUDA binding that works with this driver, and "
                                 f"{'; '.join(causes)}: cuda-python's major must be the driver's CUDA major, "
                                 f"{PLATFORM_HINT}")


def local_runtime(flavour: str):
    """(tensorrt module, Runtime description of this machine)."""
    from ..engine.targets import detect_gpu, import_tensorrt

    trt = import_tensorrt(flavour)
    gpu = detect_gpu()
    return trt, Runtime(flavour, trt.__version__, gpu.compute_capability if gpu else None,
                        gpu.name if gpu else "this machine")


class GraphSteps:
    """When the runner may replay a CUDA graph. Graphs are captured per batch size; after set_input_shape changes
    the shape, TensorRT wants one plain enqueue before a graph captured for that shape is valid again. So a call
    whose batch differs from the last one's enqueues plainly (and captures, the first time for that size); only a
    repeat of the same batch replays. The C++ classifier takes the same steps (cpp/src/graph_steps.h; the two
    are compared in tests/test_engine_runtime.py)."""

    def __init__(self):
        self.shape: int | None = None
        self.captured: set[int] = set()

    def step(self, batch: int) -> tuple[str, ...]:
        """The actions for a call with `batch` images: ("shape", "plain"[, "capture"]) or ("replay",)."""
        if batch == self.shape:
            return ("replay",) if batch in self.captured else ("plain", "capture")
        self.shape = batch
        return ("shape", "plain") if batch in self.captured else ("shape", "plain", "capture")

    def captured_for(self, batch: int) -> None:
        self.captured.add(batch)


def tensorrt_runner(engine: str | Path | None = None, cuda_graph: bool = False, **_) -> Runner:
    if engine is None:
        raise InputError("the tensorrt backend needs --engine MODEL.engine (make one with `refiner-edge build`)")
    from ..engine import plugins
    from ..engine.checks import check_plugin_library

    path = Path(engine)
    manifest = read_engine_manifest(path)
    info = manifest.engine
    check_weights(path, manifest)
    if cuda_graph and info.flavour == "tensorrt-rtx" and not info.user_allocation:
        # TensorRT-RTX may allocate memory while it runs unless the engine was built to require user allocation,
        # and an allocation inside stream capture breaks the graph
        raise InputError(f"{path.name} was built without REQUIRE_USER_ALLOCATION, which TensorRT-RTX needs to "
                         f"capture a CUDA graph: run without --cuda-graph, or rebuild with: "
                         f"{rebuild_line(path, info.rebuild)}")
    trt, runtime = local_runtime(info.flavour)
    check_engine(path, manifest, runtime)
    cuda = cuda_api()
    with cuda.current():
        memory_before = cuda.used_memory()
        logger = trt.Logger(trt.Logger.WARNING)
        trt_runtime = trt.Runtime(logger)
        if info.version_compatible:
            trt_runtime.engine_host_code_allowed = True   # the lean runtime embedded in the engine
        library = check_plugin_library(path, manifest)
        if library is not None:
            # the creator must be registered before deserialization. A version-compatible plan is deserialized by
            # its embedded lean runtime, which looks in the runtime's own registry (as trtexec loads it there);
            # the library is not serialized into the plan, so the manifest's hash check keeps applying.
            registry = trt_runtime.get_plugin_registry() if info.version_compatible else trt.get_plugin_registry()
            plugins.load_library(registry, library, f"rebuild with: {rebuild_line(path, info.rebuild)}")
        if info.dla_core is not None:
            trt_runtime.DLA_core = info.dla_core
        plan = trt_runtime.deserialize_cuda_engine(path.read_bytes())
        if plan is None:
            raise InputError(f"{info.flavour} {runtime.version} could not load {path.name}: rebuild with: "
                             f"{rebuild_line(path, info.rebuild)}")
        context = plan.create_execution_context()
        names = [plan.get_tensor_name(i) for i in range(plan.num_io_tensors)]
        inputs = [n for n in names if plan.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise InputError(f"{path.name} has {len(inputs)} inputs and {len(outputs)} outputs; expected one each")
        inp, out = inputs[0], outputs[0]
        in_dtype = np.dtype(trt.nptype(plan.get_tensor_dtype(inp)))
        out_dtype = np.dtype(trt.nptype(plan.get_tensor_dtype(out)))
        profiles = info.profiles
        if plan.num_optimization_profiles != len(profiles):
            raise InputError(f"{path.name} has {plan.num_optimization_profiles} optimisation profiles and its "
                             f"manifest {len(profiles)}: rebuild with: {rebuild_line(path, info.rebuild)}")
        # build's rule (engine/plan.py check_profiles) makes the profiles cover min..max without a gap
        min_batch, max_batch = profiles[0].min[0], profiles[-1].max[0]
        sample = tuple(profiles[-1].max[1:])
        num_classes = manifest.model.num_classes
        in_ptr = cuda.malloc(int(np.prod((max_batch, *sample))) * in_dtype.itemsize)
        out_ptr = cuda.malloc(max_batch * num_classes * out_dtype.itemsize)
        context.set_tensor_address(inp, in_ptr)
        context.set_tensor_address(out, out_ptr)
    graphs: dict[int, object] = {}
    steps = GraphSteps()
    profiler = None   # bench --layers: TensorRT holds only a pointer to it, so the runner keeps it alive
    active = [0]   # the context's profile: a new context starts in profile 0

    def enqueue():
        if not context.execute_async_v3(cuda.stream_handle):
            raise InputError(f"{path.name}: TensorRT could not run the batch")

    def capture():
        """The graph of one enqueue. The plain enqueue GraphSteps puts before every capture has run to completion
        first (the warm-up): lazily loaded kernels and what a plugin sets up in its first enqueue (device
        allocations, synchronous copies) are done by then, never recorded into the graph or breaking the capture.
        TensorRT-RTX says whether this context can be captured at all (IExecutionContext::isStreamCapturable)."""
        cuda.sync()
        capturable = getattr(context, "is_stream_capturable", None)
        if capturable is not None and not capturable(cuda.stream_handle):
            raise InputError(f"{path.name}: {info.flavour} cannot capture this engine into a CUDA graph on this "
                             "stream: run without --cuda-graph")
        try:
            return cuda.capture(enqueue)
        except RuntimeError as e:   # CUDA refused the capture (e.g. it was invalidated by a synchronizing call)
            raise InputError(f"{path.name}: capturing a CUDA graph failed ({e}): run without --cuda-graph") from None

    def use_profile(index: int) -> None:
        """Switch the context to optimisation profile `index` on the runner's stream. Nothing of the last batch is
        still running (run() ends with a synchronize); the input shape is set again after it (TensorRT forgets the
        shapes on a switch), and the buffers' addresses again too, which costs nothing and does not rely on TensorRT
        keeping them across the switch."""
        if index == active[0]:
            return
        if not context.set_optimization_profile_async(index, cuda.stream_handle):
            steps.shape = None
            raise InputError(f"{path.name}: TensorRT could not switch to optimisation profile {index}")
        active[0] = index
        context.set_tensor_address(inp, in_ptr)
        context.set_tensor_address(out, out_ptr)

    def run(x: np.ndarray) -> np.ndarray:
        if not free_buffers.alive:
            raise InputError(f"{path.name}: the runner was closed")
        # one batch, within the profiles: a larger one is refused (docs/engines.md), never split here, so a
        # latency measured on this runner is the latency of that batch; images of another shape would overrun
        # the input buffer, which is sized for the profile
        batch_in_profile(manifest, len(x), x.shape[1:])
        x = np.ascontiguousarray(x, dtype=in_dtype)
        result = np.empty((len(x), num_classes), dtype=out_dtype)
        with cuda.current():
            actions = steps.step(len(x))
            if not cuda_graph or profiler is not None:   # a graph's replay reports no layer times
                actions = ("shape", "plain") if "shape" in actions else ("plain",)
            if "shape" in actions:
                # the batch changed: its profile may too (a batch has one profile, so only then)
                use_profile(profile_for(profiles, len(x)))
                if not context.set_input_shape(inp, x.shape):
                    steps.shape = None   # the context kept its old shape: the next call must set it again
                    raise InputError(f"{path.name}: TensorRT refused the input shape {x.shape}")
            cuda.h2d(in_ptr, x)
            if "plain" in actions:
                enqueue()
            if "capture" in actions:
                graphs[len(x)] = capture()
                steps.captured_for(len(x))
            if "replay" in actions:
                cuda.launch(graphs[len(x)])
            cuda.d2h(result, out_ptr)
            cuda.sync()
        return result.astype(np.float32, copy=False)

    def set_profiler(report) -> None:
        """TensorRT's IProfiler on the context: report(layer name, ms) for each layer of every later call (enqueue
        then reports before it returns, TensorRT's default); None takes it off."""
        nonlocal profiler
        fresh = None
        if report is not None:
            class Profiler(trt.IProfiler):
                def __init__(self):
                    trt.IProfiler.__init__(self)

                def report_layer_time(self, layer_name, ms):
                    report(layer_name, ms)

            fresh = Profiler()
        with cuda.current():
            context.profiler = fresh
        profiler = fresh   # the old one is dropped only once the context no longer points at it

    def device_memory() -> int:
        with cuda.current():
            return cuda.used_memory() - memory_before

    def release() -> None:
        with cuda.current():
            for graph in graphs.values():
                cuda.destroy(graph)
            graphs.clear()
            cuda.free(in_ptr)
            cuda.free(out_ptr)
            cuda.close()

    free_buffers = weakref.finalize(run, release)  # when the runner is collected, or at close(): at most once

    def close() -> None:
        # The engine lives as long as the runner, or until close(): `run` and `enqueue` hold the context (which
        # keeps the engine, and the engine its runtime, alive), so dropping it here frees the engine's device memory.
        nonlocal context, plan, trt_runtime
        free_buffers()
        with cuda.current():
            context = plan = trt_runtime = None

    return Runner("tensorrt", run, Preprocess.from_record(manifest.preprocess), num_classes,
                  manifest.random_weights, f"{info.flavour} {path.name} ({info.precision}, "
                  f"sm_{info.compute_capability.replace('.', '')})", manifest=manifest,
                  fixed_batch=min_batch if min_batch == max_batch else None, min_batch=min_batch, max_batch=max_batch,
                  device_memory=device_memory, set_profiler=set_profiler, close=close)
