"""The TensorRT side of a build: the tensorrt / tensorrt_rtx module, Polygraphy's loaders bound to it, and the
child process's build (engine/worker.py runs `child_build`) that turns a BuildPlan into engine bytes:

    NetworkFromOnnxPath(strongly_typed) -> CreateConfig / CreateConfigRTX -> PostprocessConfig -> EngineBytesFromNetwork

Polygraphy picks its TensorRT module when its backend modules are imported (`trt = lazy_import_trt()` at module
level, from `POLYGRAPHY_USE_TENSORRT_RTX` read by polygraphy.config at import). Setting the variable per build is
therefore not enough once Polygraphy is imported: `polygraphy_trt` sets polygraphy.config and rebinds the module
every loaded Polygraphy module holds whenever the flavour changes.

Precision: strongly typed networks take it from the graph (FP16 tensors, Q/DQ), the only kind TensorRT 11 and
TensorRT-RTX build. TensorRT 10 builds weakly typed networks only when asked (`weak_typing`, or DLA on JetPack 6):
the plain FP32 graph with FP16/INT8 builder flags, INT8 scales from the calibration cache `calibrate` wrote.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

from ..errors import InputError, MissingDependencyError, VerificationError
from ..extras import PLATFORM_HINT
from . import plugins
from .checks import plugin_refusal
from .targets import Target, import_tensorrt
from .plan import BuildPlan

HARDWARE_COMPAT = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}
_bound: str | None = None   # the flavour Polygraphy's TensorRT backend was last imported for


def polygraphy_trt(flavour: str):
    """polygraphy.backend.trt (and .tensorrt_rtx) bound to `flavour`'s module."""
    global _bound
    import_tensorrt(flavour)
    try:
        from polygraphy import config as pconfig
        from polygraphy.logger import logger as plogger
    except ImportError:
        raise MissingDependencyError(f"polygraphy is not installed ({PLATFORM_HINT})") from None
    rtx = flavour == "tensorrt-rtx"
    if _bound != flavour:
        # Re-importing Polygraphy's modules would register its JSON encoders twice (an error), so rebind the `trt`
        # each loaded module holds; modules imported later read the config set here.
        from polygraphy.mod.trt_importer import lazy_import_trt

        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1" if rtx else "0"
        pconfig.USE_TENSORRT_RTX = rtx
        fresh = lazy_import_trt()
        for name, module in list(sys.modules.items()):
            if name.startswith("polygraphy.") and type(getattr(module, "trt", None)).__name__ == "LazyModule":
                module.trt = fresh
        # Polygraphy prints a hint about its optional 'colored' package to stdout, which would break --json
        if plogger.COLORED_MODULE_PRESENT is None:
            plogger.COLORED_MODULE_PRESENT = False
        _bound = flavour
    import polygraphy.backend.trt as ptrt

    return ptrt


@contextlib.contextmanager
def polygraphy_errors(what: str, explain: Callable[[str], str | None] = lambda message: None):
    """Polygraphy logs to stdout and raises PolygraphyException on failure: keep stdout for results (--json), and
    turn its failures into our one-line errors. The builder's own messages reach Polygraphy's logger (through its
    TensorRT ILogger) whether or not they are shown, so the error names the builder's first one, which is the
    cause ('Invalid Engine' is only Polygraphy's conclusion); `explain` may turn it into advice."""
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    verbose = logging.getLogger("refiner_edge").isEnabledFor(logging.DEBUG)   # refiner-edge -v
    G_LOGGER.module_severity = G_LOGGER.INFO if verbose else G_LOGGER.ERROR
    logged: list[tuple[int, str]] = []
    shown = G_LOGGER.log

    def log(message, severity, *args, stack_depth=2, **kwargs):
        if severity >= G_LOGGER.VERBOSE and isinstance(message, str):  # TensorRT's INFO arrives as VERBOSE
            logged.append((severity, message))
        return shown(message, severity, *args, stack_depth=stack_depth + 1, **kwargs)

    G_LOGGER.log = log
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except PolygraphyException as e:
        cause = builder_error(logged, str(e))
        advice = explain(cause) if cause else None
        where = "see the log above" if verbose else "refiner-edge -v shows the builder's log"
        detail = advice or cause or str(e).strip().splitlines()[0]
        raise VerificationError(f"{what}: {detail} ({where})") from None
    finally:
        del G_LOGGER.log   # back to the class's method


def builder_error(logged: list[tuple[int, str]], conclusion: str) -> str | None:
    """The builder's first error among the logged messages: the first at ERROR or above that is not Polygraphy's
    own conclusion, else the first message that reports an error or running out of memory at any severity
    (TensorRT-RTX reports OutOfMemory below ERROR)."""
    from polygraphy.logger import G_LOGGER

    conclusion = conclusion.strip().splitlines()[0] if conclusion.strip() else ""
    ours = [m for s, m in logged if s >= G_LOGGER.ERROR and conclusion not in m]
    keywords = ("error", "outofmemory", "out of memory", "failed")
    worded = [m for s, m in logged if any(k in m.lower() for k in keywords)]
    first = (ours or worded or [None])[0]
    return None if first is None else " ".join(first.split())[:300]


def engine_bytes(plan: BuildPlan, plugin: plugins.Plugin, timing_cache: Path | None, monitor=None) -> bytes:
    """Build the serialized engine the plan describes with Polygraphy's loaders, reading and updating the timing
    cache at `timing_cache`; `monitor` (engine/progress.py) is the builder's IProgressMonitor, if any."""
    target, network, options = plan.target, plan.network, plan.options
    trt = import_tensorrt(target.flavour)
    ptrt = polygraphy_trt(target.flavour)
    # one optimisation profile per --batch, in the plan's order: index i of the engine is plan.profiles[i]
    profiles = [ptrt.Profile().add(network.input, *(plan.shape(n) for n in batch)) for batch in plan.profiles]
    cache = str(timing_cache) if timing_cache else None
    common = dict(profiles=profiles, builder_optimization_level=plan.opt_level,
                  memory_pool_limits={trt.MemoryPoolType.WORKSPACE: plan.workspace}, load_timing_cache=cache)
    if target.rtx:
        from polygraphy.backend.tensorrt_rtx import CreateConfigRTX

        major, minor = target.compute_capability.split(".")
        config = CreateConfigRTX(compute_capabilities=[(int(major), int(minor))], **common)
    else:
        calibrator = None
        if network.calibration_cache is not None:
            from ..precision.tensorrt_cache import cache_calibrator

            calibrator = cache_calibrator(trt, network.calibration_cache)
        config = ptrt.CreateConfig(
            fp16=plan.weak and plan.precision in ("fp16", "int8"), int8=plan.weak and plan.precision == "int8",
            calibrator=calibrator, use_dla=options.dla_core is not None, allow_gpu_fallback=True,
            version_compatible=options.version_compatible or None, tf32=plan.tf32,
            hardware_compatibility_level=getattr(trt.HardwareCompatibilityLevel, HARDWARE_COMPAT[
                target.hardware_compat]) if target.hardware_compat != "none" else None, **common)

    def postprocess(builder, net, cfg):
        """The knobs Polygraphy's CreateConfig lacks: the DLA core (it always picks core 0); TF32 on TensorRT-RTX
        (CreateConfigRTX leaves TensorRT's default); REQUIRE_USER_ALLOCATION on TensorRT-RTX, without which
        TensorRT-RTX may allocate memory while it runs and a CUDA-graph capture of it fails (its docs require the
        flag for stream capture; Refiner has no data-dependent shapes, the one thing the flag refuses)."""
        if options.dla_core is not None:
            cfg.DLA_core = options.dla_core
        (cfg.set_flag if plan.tf32 else cfg.clear_flag)(trt.BuilderFlag.TF32)
        if plan.user_allocation:
            cfg.set_flag(trt.BuilderFlag.REQUIRE_USER_ALLOCATION)
        for flag in refit_flags(plan):
            cfg.set_flag(getattr(trt.BuilderFlag, flag))
        if monitor is not None:
            cfg.progress_monitor = monitor
        # the inspector's layer types, tactics and formats (inspect) and bench --layers' names for them
        cfg.profiling_verbosity = trt.ProfilingVerbosity.DETAILED

    config = ptrt.PostprocessConfig(config, postprocess)
    strongly = not plan.weak and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    net_loader = ptrt.NetworkFromOnnxPath(str(network.parse), strongly_typed=strongly)
    for library in plugin.libraries():
        plugins.load_library(trt.get_plugin_registry(), library, "build it again (see plugins/refiner_dla/README.md)")
    explain = out_of_memory_advice(plan.profiles[-1], network.img_size, plan.workspace)
    with polygraphy_errors(f"{target.flavour} could not build {network.onnx.name}", explain):
        serialized = ptrt.EngineBytesFromNetwork(net_loader, config=config, save_timing_cache=cache)()
    return bytes(memoryview(serialized))


def refit_flags(plan: BuildPlan) -> list[str]:
    """The builder flags of weight stripping and refit (trtexec's --stripWeights and --refit): STRIP_PLAN, and
    REFIT_IDENTICAL or REFIT as the plan's `refit` says."""
    flags = {"identical": ["REFIT_IDENTICAL"], "any": ["REFIT"], None: []}[plan.refit]
    return flags + (["STRIP_PLAN"] if plan.options.strip_weights else [])


def out_of_memory_advice(batch: tuple[int, int, int], size: int, workspace: int) -> Callable[[str], str | None]:
    """Advice for the builder's OutOfMemory error: the (last, largest) profile's largest batch needs more than the
    memory allowed; a MAX batch that asks for at most half of it (a power of two), or a larger --workspace at
    batch 1."""
    def explain(cause: str) -> str | None:
        found = re.search(r"OutOfMemory \(Requested size was (\d+) bytes", cause)
        if found is None:
            return None
        requested, hi = int(found.group(1)), batch[2]
        head = f"out of memory: {requested / 1e9:.1f} GB requested for batch {hi} at {size}x{size}"
        fit = hi * workspace // (2 * requested)
        if fit < 1:
            return f"{head}; the workspace is {workspace / 1e9:.1f} GB: try a larger --workspace"
        fit = 1 << (fit.bit_length() - 1)
        return f"{head}; try --batch {min(batch[0], fit)}:{max(1, fit // 2)}:{fit}"

    return explain


def child_build(job: dict) -> dict:
    """In the builder's child process (engine/worker.py): prepare the plan's plugin (the one preparation of a
    build: the AOT form registers per process) and build the engine into job['engine'], reading and saving the
    timing cache copy at job['timing_cache']."""
    started = time.perf_counter()
    plan, notes = job["plan"], []
    cache = Path(job["timing_cache"]) if job["timing_cache"] else None
    if cache is not None and cache.is_file():
        reason = unreadable_timing_cache(plan.target.flavour, cache)
        if reason:
            # built on without it and replaced by this build's cache: a cache only saves time, and one that cannot
            # be read would otherwise print TensorRT's errors at every build and never be renewed
            cache.unlink()
            notes.append(f"--timing-cache {plan.options.timing_cache}: {reason}; building without it, and this "
                         "build's cache replaces it")
    plugin = plugins.prepare(**plan.plugin)
    headers = plugin_headers(plugin, plan.target, notes)
    monitor = build_monitor(plan, job)
    data = engine_bytes(plan, plugin, cache, monitor)
    Path(job["engine"]).write_bytes(data)
    return {"seconds": time.perf_counter() - started, "bytes": len(data), "notes": notes, "plugin": plugin,
            "plugin_tensorrt_version": headers,
            **({"monitor": {"callbacks": monitor.calls, "seconds": monitor.seconds}} if monitor else {})}


def build_monitor(plan: BuildPlan, job: dict):
    """The progress monitor writing to the parent's pipe (engine/progress.py), when the parent listens and this
    TensorRT has one (10.0 and later, TensorRT-RTX); its cancel is the end of stdin, the parent's Ctrl-C."""
    if job.get("progress_fd") is None:
        return None
    from .progress import monitor

    trt = import_tensorrt(plan.target.flavour)
    if not hasattr(trt, "IProgressMonitor"):
        return None
    return monitor(trt, job["progress_fd"], sys.stdin.fileno())


def deserialize_engine(job: dict):
    """In a child process: (tensorrt module, logger, engine) of `job`'s engine file, as the runner loads one: its
    plugin library registered first (in the runtime's own registry for a version-compatible plan, whose embedded
    lean runtime looks there), that lean runtime allowed. The engine keeps its runtime alive."""
    trt = import_tensorrt(job["flavour"])
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    if job.get("version_compatible"):
        runtime.engine_host_code_allowed = True
    if job["library"]:
        registry = runtime.get_plugin_registry() if job.get("version_compatible") else trt.get_plugin_registry()
        plugins.load_library(registry, Path(job["library"]), "build it again")
    engine = runtime.deserialize_cuda_engine(Path(job["engine"]).read_bytes())
    if engine is None:
        raise InputError(f"{job['flavour']} could not deserialize {Path(job['engine']).name} (see the log above)")
    return trt, logger, engine


def plugin_headers(plugin: plugins.Plugin, target: Target, notes: list[str]) -> str | None:
    """The TensorRT headers the library form's library was compiled against (None: unknown, said in a note), read
    before the builder loads it; a library for another TensorRT major than the builder's is refused (the rule the
    runtime checks apply, engine/checks.py plugin_refusal)."""
    if plugin.library is None:
        return None
    # TensorRT first: a pip-installed libnvinfer is found by the library's dlopen only once tensorrt loaded it
    version = import_tensorrt(target.flavour).__version__
    headers = plugins.library_tensorrt_version(plugin.library)
    if headers is None:
        notes.append(f"the RefinerDLA plugin library {plugin.library} does not say which TensorRT headers it was "
                     f"compiled against (no {plugins.VERSION_SYMBOL}): the engine is refused on any other TensorRT "
                     "major than this one; rebuild the library to record it")
        return None
    if plugin_refusal("library", str(plugin.library), headers, version, version):
        raise InputError(f"the RefinerDLA plugin library {plugin.library} was compiled against TensorRT {headers} "
                         f"headers and this builder is TensorRT {version}: build the library against TensorRT "
                         f"{version.split('.')[0]}'s headers ({plugins.BUILD_COMMAND})")
    return headers


def unreadable_timing_cache(flavour: str, path: Path) -> str | None:
    """Why TensorRT cannot use the timing cache at `path` (None: it can), asked with TensorRT's log captured, so
    that its error lines for a foreign or garbage cache are not printed."""
    trt = import_tensorrt(flavour)

    class Capture(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[tuple] = []

        def log(self, severity, message):
            self.messages.append((severity, message))

    logger = Capture()
    config = trt.Builder(logger).create_builder_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # TensorRT-RTX marks timing caches deprecated
        config.create_timing_cache(path.read_bytes())
    if any("deserialize" in m or severity == trt.ILogger.Severity.ERROR for severity, m in logger.messages):
        return (f"{flavour} {trt.__version__} cannot read it (not a timing cache, or one made for another GPU, "
                "CUDA or TensorRT version)")
    return None
