"""ONNX Runtime sessions for our graphs, on CPU (and CUDA where onnxruntime-gpu is installed)."""
from __future__ import annotations

import importlib
from pathlib import Path

from ..artifacts import deferred_interrupts
from ..errors import InputError
from .memory import return_freed_memory

# Custom ops a graph may hold -> "module:function" that lets ONNX Runtime run such a graph: (path, onnx.ModelProto
# with its external data) -> (SessionOptions, serialized model). The stage that defines an op registers it
# (refine/__init__.py: RefinerDLA), so this stage, which is below it, names none of them; imported on use, so a
# plain graph never loads a custom op's dependencies.
_CUSTOM_OPS: dict[str, str] = {}


def register_custom_op(op_type: str, support: str) -> None:
    _CUSTOM_OPS[op_type] = support


def ort_session(model, providers: list[str] | None = None, arena: bool | str = True, spinning: bool = True):
    """A session for an ONNX file, serialized bytes or an onnx.ModelProto.

    arena=False: CPU buffers are freed after each run instead of kept in ONNX Runtime's arena, which otherwise
    holds the largest run's memory for the life of the session (what a memory budget has to avoid).
    arena="shared": CPU buffers come from the one arena all such sessions of the process share (SharedArena), which
    holds what the largest of their runs needs until `SharedArena.release()`: sessions that run one after another
    reuse each other's memory instead of each holding its own or mapping fresh pages for every tensor.
    spinning=False: the session's threads sleep when idle instead of spinning, for sessions that run one after
    another (each session has its own threads; spinning ones take the cores from the next session)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = bool(arena)
    if arena == "shared":
        SharedArena.use(opts)
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if hasattr(model, "SerializeToString"):  # a ModelProto
        _unoptimized_if_fp16_qdq(model, opts)
        model = model.SerializeToString()
    source, python_ops = (model if isinstance(model, bytes) else str(model)), False
    if not isinstance(model, bytes):
        opts, source, python_ops = _options_for_graph(model, opts, source)
    try:
        session = ort.InferenceSession(source, opts, providers=providers)
    except Exception as e:  # ORT raises its own exception types (InvalidGraph, Fail, ...) with no common base
        where = "model" if isinstance(model, bytes) else str(model)
        raise InputError(f"{where}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:300]})") from None
    return InterruptSafeSession(session) if python_ops else session


class SharedArena:
    """ONNX Runtime's BFC arena registered once per process as the CPU allocator of the sessions that ask for it.

    Why: range collection runs a graph as dozens of segment sessions, one after another, per batch. Without an arena
    every tensor was a fresh mapping whose pages the kernel faults in and zeroes (Refiner-ViT-L@448: about 17 GB
    per image; its segment runs took 23 s per image, 8.9 s from this arena); an arena per session would hold every
    segment's peak at once. The shared arena grows by exactly what is requested (no power-of-two rounding) and
    without memory patterns (which allocate each session's whole plan as one block, and fragmented it to 3.1 GB), so
    it holds about the heaviest segment; `release()` hands its free memory back (ONNX Runtime's arena shrinkage),
    after every batch of a collection and after the INT8 check."""

    INPUT = "refiner_edge_arena_release"   # the release run's input: no image, no graph of ours
    _registered = False
    _release_session = None

    @classmethod
    def use(cls, opts) -> None:
        import onnxruntime as ort

        if not cls._registered:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            try:
                ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 1}))
            except Exception:   # ORT's own types; the application registered a CPU allocator already: use it
                pass
            cls._registered = True
        opts.add_session_config_entry("session.use_env_allocators", "1")
        # the weights outside it: they live as long as their session, and would pin the arena's memory
        opts.add_session_config_entry("session.use_device_allocator_for_initializers", "1")
        opts.enable_mem_pattern = False

    @classmethod
    def release(cls) -> None:
        """Free the arena's unused memory: a one-node run with ONNX Runtime's shrinkage option, which shrinks the
        arena of the session that runs it, the shared one (nothing to release where none was registered). Call it
        once the sessions that used the arena are gone."""
        if not cls._registered:
            return
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper

        if cls._release_session is None:
            value = helper.make_tensor_value_info(cls.INPUT, TensorProto.FLOAT, [1])
            graph = helper.make_graph([helper.make_node("Identity", [cls.INPUT], ["y"])], "release", [value],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
            cls._release_session = ort_session(model.SerializeToString(), ["CPUExecutionProvider"],
                                               arena="shared", spinning=False)
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        cls._release_session.run(None, {cls.INPUT: np.zeros(1, np.float32)}, options)
        return_freed_memory()   # what the arena freed into glibc's heaps, to the system


class InterruptSafeSession:
    """A session whose graph runs Python ops (fused graphs on the reference RefinerDLA op): Ctrl-C is held until
    run() returns, then raised. A KeyboardInterrupt raised inside a Python op unwinds through ONNX Runtime's C++
    and aborts the process (pybind11::error_already_set, exit 134) before any cleanup runs."""

    def __init__(self, session):
        self._session = session

    def run(self, *args, **kwargs):
        with deferred_interrupts():
            return self._session.run(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


def _options_for_graph(path: str | Path, opts, source):
    """Session options a graph needs: a registered custom op's support (fused graphs: the reference RefinerDLA op),
    no graph optimizations for FP16 graphs with Q/DQ."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not an ONNX file: let ONNX Runtime report it
        return opts, source, False
    _unoptimized_if_fp16_qdq(model, opts)
    held = sorted({n.op_type for n in model.graph.node} & set(_CUSTOM_OPS))
    if not held:
        return opts, source, False
    if len(held) > 1:
        raise InputError(f"{path} holds custom ops of {len(held)} kinds ({', '.join(held)}); ONNX Runtime runs "
                         "graphs with one kind")
    from onnx.external_data_helper import load_external_data_for_model

    load_external_data_for_model(model, str(Path(path).parent))  # the probe above skipped it; no second parse
    module, function = _CUSTOM_OPS[held[0]].split(":")
    opts, source = getattr(importlib.import_module(module), function)(path, model)
    _unoptimized_if_fp16_qdq(model, opts)
    return opts, source, True


def _unoptimized_if_fp16_qdq(model, opts) -> None:
    """ONNX Runtime's CPU graph optimizations give wrong results on FP16 graphs with Q/DQ (onnxruntime 1.32: a
    tiny Refiner-ViT's logit error goes from 0.08 to 0.49); run those graphs as written, which is what they are
    checked for: TensorRT, not ONNX Runtime, is where they are optimized."""
    import onnxruntime as ort
    from onnx import TensorProto

    ops = {n.op_type for n in model.graph.node}
    if "DequantizeLinear" in ops and any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
