"""TensorRT runner: a raw engine (+ its manifest) on a CUDA GPU through cuda-python (`cuda.bindings`) buffers and
one stream, or pycuda where that is what the machine has (older JetPack images). Inputs are copied in, the engine
runs with `execute_async_v3`, outputs are copied back; the batch may be anything within the engine's profile.
With cuda_graph=True the enqueue is captured once per batch size and replayed as a CUDA graph.

Before TensorRT sees the engine, engine/checks.py compares its manifest with this machine (GPU, TensorRT version,
plugin library), so a stale engine is one line with the command that rebuilds it.
"""
from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np

from ..engine.checks import Runtime, batch_in_profile, check_engine, read_engine_manifest
from ..errors import InputError, MissingDependencyError
from ..images.preprocess import Preprocess
from .base import Runner


class CudaBindings:
    """The few CUDA runtime calls the runner makes, on cuda-python's `cuda.bindings.runtime`."""

    def __init__(self):
        from cuda.bindings import runtime as cudart

        self.rt = cudart
        self.stream = self._ok(cudart.cudaStreamCreate())

    def _ok(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA error {err}")
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
        """A CUDA graph of what `enqueue` puts on the stream."""
        rt = self.rt
        self._ok(rt.cudaStreamBeginCapture(self.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        enqueue()
        graph = self._ok(rt.cudaStreamEndCapture(self.stream))
        return self._ok(rt.cudaGraphInstantiate(graph, 0))

    def launch(self, graph) -> None:
        self._ok(self.rt.cudaGraphLaunch(graph, self.stream))


class PyCuda:
    """The same calls on pycuda, for machines without cuda-python."""

    def __init__(self):
        import pycuda.autoinit  # noqa: F401  (creates the context)
        import pycuda.driver as cuda

        self.cuda = cuda
        self.stream = cuda.Stream()
        self._allocations: dict[int, object] = {}

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
        raise InputError("--cuda-graph needs cuda-python (pip install cuda-python)")

    def launch(self, graph) -> None:  # pragma: no cover - capture refuses first
        raise InputError("--cuda-graph needs cuda-python")


def cuda_api():
    try:
        return CudaBindings()
    except ImportError:
        pass
    try:
        return PyCuda()
    except ImportError:
        raise MissingDependencyError("running an engine needs cuda-python (pip install 'refiner-edge[tensorrt]') "
                                     "or pycuda") from None


def local_runtime(flavour: str):
    """(tensorrt module, Runtime description of this machine)."""
    from ..engine.build import import_tensorrt
    from ..engine.targets import detect_gpu

    trt = import_tensorrt(flavour)
    gpu = detect_gpu()
    return trt, Runtime(flavour, trt.__version__, gpu.compute_capability if gpu else None,
                        gpu.name if gpu else "this machine")


def tensorrt_runner(engine: str | Path | None = None, cuda_graph: bool = False, **_) -> Runner:
    if engine is None:
        raise InputError("the tensorrt backend needs --engine MODEL.engine (make one with `refiner-edge build`)")
    path = Path(engine)
    manifest = read_engine_manifest(path)
    info = manifest.engine
    trt, runtime = local_runtime(info.flavour)
    check_engine(path, manifest, runtime)
    if info.plugin_library:  # the creator must be in the registry before deserialization (getCreators, IPluginV3)
        if trt.get_plugin_registry().load_library(info.plugin_library) is None:
            raise InputError(f"TensorRT could not load the plugin library {info.plugin_library}: rebuild with: "
                             f"{info.rebuild}")
    cuda = cuda_api()
    memory_before = cuda.used_memory()
    logger = trt.Logger(trt.Logger.WARNING)
    trt_runtime = trt.Runtime(logger)
    if info.version_compatible:
        trt_runtime.engine_host_code_allowed = True   # the lean runtime embedded in the engine
    if info.dla_core is not None:
        trt_runtime.DLA_core = info.dla_core
    plan = trt_runtime.deserialize_cuda_engine(path.read_bytes())
    if plan is None:
        raise InputError(f"{info.flavour} {runtime.version} could not load {path.name}: rebuild with: {info.rebuild}")
    context = plan.create_execution_context()
    names = [plan.get_tensor_name(i) for i in range(plan.num_io_tensors)]
    inputs = [n for n in names if plan.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    if len(inputs) != 1 or len(outputs) != 1:
        raise InputError(f"{path.name} has {len(inputs)} inputs and {len(outputs)} outputs; expected one each")
    inp, out = inputs[0], outputs[0]
    in_dtype = np.dtype(trt.nptype(plan.get_tensor_dtype(inp)))
    out_dtype = np.dtype(trt.nptype(plan.get_tensor_dtype(out)))
    profile = info.profiles[0]
    min_batch, max_batch = profile.min[0], profile.max[0]
    sample = tuple(profile.max[1:])
    num_classes = manifest.model.num_classes
    in_ptr = cuda.malloc(int(np.prod((max_batch, *sample))) * in_dtype.itemsize)
    out_ptr = cuda.malloc(max_batch * num_classes * out_dtype.itemsize)
    context.set_tensor_address(inp, in_ptr)
    context.set_tensor_address(out, out_ptr)
    graphs: dict[int, object] = {}
    shape_now: list[int] = [0]

    def enqueue():
        if not context.execute_async_v3(cuda.stream_handle):
            raise InputError(f"{path.name}: TensorRT could not run the batch")

    def run(x: np.ndarray) -> np.ndarray:
        if len(x) > max_batch:  # more images than the profile takes: in chunks it does
            return np.concatenate([run(x[i:i + max_batch]) for i in range(0, len(x), max_batch)])
        batch_in_profile(manifest, len(x))
        x = np.ascontiguousarray(x, dtype=in_dtype)
        if shape_now[0] != len(x):
            context.set_input_shape(inp, x.shape)
            shape_now[0] = len(x)
        result = np.empty((len(x), num_classes), dtype=out_dtype)
        cuda.h2d(in_ptr, x)
        if cuda_graph:
            if len(x) not in graphs:
                enqueue()            # TensorRT wants one plain run after a shape change before capture
                graphs[len(x)] = cuda.capture(enqueue)
            cuda.launch(graphs[len(x)])
        else:
            enqueue()
        cuda.d2h(result, out_ptr)
        cuda.sync()
        return result.astype(np.float32, copy=False)

    run.device_memory = lambda: cuda.used_memory() - memory_before   # read by runners/bench.py
    run.keep_alive = (trt_runtime, plan, context, cuda)              # owned by the closure, freed with it
    weakref.finalize(run, lambda: (cuda.free(in_ptr), cuda.free(out_ptr)))  # device buffers go with the runner
    return Runner("tensorrt", run, Preprocess.from_record(manifest.preprocess), num_classes,
                  manifest.random_weights, f"{info.flavour} {path.name} ({info.precision}, "
                  f"sm_{info.compute_capability.replace('.', '')})", manifest=manifest,
                  fixed_batch=min_batch if min_batch == max_batch else None)
