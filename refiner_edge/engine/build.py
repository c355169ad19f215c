"""The one engine builder: Polygraphy's loaders over TensorRT 10.x / 11.x or TensorRT-RTX.

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
import dataclasses
import importlib
import logging
import math
import os
import re
import shlex
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..artifacts import (MANIFEST_SUFFIX, Staging, atomic_output, check_artifact, check_outputs, file_sha256,
                         manifest_path, staged_outputs)
from ..defaults import BUILD_TF32, default
from ..errors import InputError, MissingDependencyError, VerificationError
from ..extras import PLATFORM_HINT, install_hint
from ..manifest import EngineInfo, Manifest, Profile, read_manifest, write_manifest
from ..precision import PRECISIONS
from . import plugins
from .checks import compute_capability_refusal, on_tensorrt_line, plugin_refusal
from .targets import SAME_CC_MIN_TENSORRT, Target, attention_bytes, detect_gpu, fitted_batch, tensorrt_at_least

MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
HARDWARE_COMPAT = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}
DEFAULT_WORKSPACE = 4 << 30
_bound: str | None = None   # the flavour Polygraphy's TensorRT backend was last imported for


def import_tensorrt(flavour: str):
    """The tensorrt or tensorrt_rtx module, or a MissingDependencyError naming the extra to install."""
    try:
        return importlib.import_module(MODULES[flavour])
    except ImportError:
        raise MissingDependencyError(f"{flavour} is not installed ({install_hint(MODULES[flavour])})"
                                     ) from None


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


@dataclass
class BuildOptions:
    """Every knob of a build; None means the target's default (resolved in `resolve`)."""

    target: Target
    precision: str | None = None          # None: the graph's
    batch: tuple[int, int, int] | None = None
    dla_core: int | None = None
    workspace: int | None = None          # bytes
    opt_level: int | None = None
    timing_cache: Path | None = None
    version_compatible: bool = False
    weak_typing: bool = False
    plugin: str | None = None             # None: "none" for a plain graph, the target's form for a fused one
    tf32: bool | None = None              # None: defaults.BUILD_TF32 (see `tf32`)


@dataclass
class Network:
    """The graph a build parses, and what it is."""

    onnx: Path                  # the graph given
    parse: Path                 # the graph parsed (the plain FP32 graph for a weakly typed INT8/FP16 build)
    manifest: Manifest
    precision: str
    fused: bool
    weak: bool
    calibration_cache: Path | None = None


def parse_batch(text: str) -> tuple[int, int, int]:
    """'MIN:OPT:MAX' or 'N' (a static batch) -> (min, opt, max)."""
    try:
        parts = tuple(int(p) for p in text.split(":"))
    except ValueError:
        parts = ()
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        raise InputError(f"--batch must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX (or one size), got '{text}'")
    return parts  # type: ignore[return-value]


def parse_size(text: str) -> int:
    """'4G', '512M', '1073741824' -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        value = -1
    if not math.isfinite(value) or value < 1:
        raise InputError(f"--workspace must be a size such as 4G, 512M or a byte count, got '{text}'")
    return int(value)


def check_dla(options: BuildOptions, precision: str) -> None:
    """What DLA cannot do, refused before any work (the chain calls it before exporting and calibrating)."""
    target = options.target
    if options.dla_core is None:
        return
    if target.dla_cores == 0:
        raise InputError(f"{target.name} ({target.devices}) has no DLA: drop --dla-core")
    if not 0 <= options.dla_core < target.dla_cores:
        raise InputError(f"--dla-core must be 0..{target.dla_cores - 1} on {target.name}, got {options.dla_core}")
    if precision == "fp32":
        raise InputError("DLA runs FP16 and INT8 only: use --precision fp16 or int8 with --dla-core")
    lo, opt, hi = options.batch or target.batch
    if not lo == opt == hi:
        raise InputError(f"DLA needs a static batch: use --batch {opt} (one size) with --dla-core")


def tf32(options: BuildOptions) -> bool:
    """Whether FP32 layers may run as TF32 (BuilderFlag.TF32), set explicitly for every build: TensorRT and
    TensorRT-RTX turn it on unless told, Polygraphy's CreateConfig turns it off unless told, so without a decision
    the same command made different engines on the two builders."""
    return default(options.tf32, BUILD_TF32)


def weak_typing(options: BuildOptions) -> bool:
    """The one typing decision: weak when asked, or for DLA on TensorRT 10 (JetPack 6 takes INT8 on DLA through the
    calibration cache); TensorRT 11 and TensorRT-RTX have no weak typing (describe_network refuses the request)."""
    return options.weak_typing or (options.dla_core is not None and not options.target.strongly_typed_only)


def check_onnx_graph(path: Path) -> None:
    """InputError unless `path` parses as an ONNX model with a graph: a wrong file given to --onnx is named as such,
    not as a graph that lacks its manifest."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf raises DecodeError and others with no common base
        model = None
    if model is None or not model.graph.node:
        raise InputError(f"{path} is not an ONNX graph: give a graph from refiner-edge export, calibrate or fuse")


def describe_network(onnx: str | Path, options: BuildOptions) -> Network:
    """Read the graph's manifest and settle precision, typing and the graph to parse; refuse what cannot build."""
    path = Path(onnx)
    if not path.is_file():
        raise InputError(f"ONNX model not found: {path}")
    manifest = read_manifest(path)
    if manifest is None:
        check_onnx_graph(path)
        raise InputError(f"{path.name} has no manifest ({path.name}.json): the engine inherits preprocessing and "
                         "labels from it; make the graph with refiner-edge export/calibrate/fuse")
    if manifest.stage == "build":
        raise InputError(f"{path} is an engine manifest's artifact, not an ONNX graph")
    graph, target = manifest.graph, options.target
    precision = options.precision or graph.precision
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    check_dla(options, precision)
    weak = weak_typing(options)
    if weak and target.strongly_typed_only:
        raise InputError(f"{target.name} ({'TensorRT-RTX' if target.rtx else 'TensorRT ' + target.tensorrt}) builds "
                         "strongly typed networks only: drop --weak-typing")
    if not weak:
        if precision != graph.precision:
            raise InputError(f"{path.name} is a {graph.precision} graph and a strongly typed build takes precision "
                             f"from the graph: calibrate it for {precision} (`refiner-edge calibrate`), or build "
                             f"without --onnx")
        return Network(path, path, manifest, precision, graph.fused, weak=False)
    if graph.fused:
        raise InputError("a weakly typed build parses the plain FP32 graph: give the unfused graph")
    if graph.precision == "fp32":
        if precision == "int8":
            raise InputError("a weakly typed INT8 build reads the calibration cache that `refiner-edge calibrate` "
                             "writes: pass the INT8 graph (its .calib and plain source beside it)")
        return Network(path, path, manifest, precision, False, weak=True)
    if graph.precision != precision:
        raise InputError(f"{path.name} is a {graph.precision} graph, not {precision}")
    # an FP16/INT8 graph from `calibrate`: parse its plain source, with the cache for INT8
    source = manifest.source
    plain = path.with_name(source.artifact) if source else None
    if plain is None or not plain.is_file() or file_sha256(plain) != source.sha256:
        raise InputError(f"a weakly typed build parses the plain graph {path.name} was calibrated from, and "
                         f"{plain.name if plain else 'it'} is not beside it (or changed)")
    cache = None
    if precision == "int8":
        from ..precision.calibrate import calibration_cache_path

        cache = calibration_cache_path(path)
        if not cache.is_file():
            raise InputError(f"no calibration cache {cache.name} beside {path.name}: calibrate again")
    return Network(path, plain, manifest, precision, False, weak=True, calibration_cache=cache)


def input_shape(network: Network) -> tuple[str, int, int]:
    m = network.manifest
    return m.graph.input, 3, m.model.img_size


def check_device(target: Target, trt_version: str, note: Callable[[str], None]) -> None:
    """TensorRT proper builds for the GPU it runs on: the local GPU must be the target's (or newer, for a
    hardware-compatible target)."""
    if target.rtx:
        return
    gpu = detect_gpu()
    if gpu is None:
        raise InputError(f"{target.name} engines are built by TensorRT on the target GPU and this machine has none: "
                         "build on the device, or use an RTX target (--target rtx-sm89) to check the graph here")
    if compute_capability_refusal(target.compute_capability, target.hardware_compat, target.devices,
                                  gpu.compute_capability, gpu.name):
        raise InputError(f"{target.name} is {target.sm} and this GPU ({gpu.name}) is "
                         f"sm_{gpu.compute_capability.replace('.', '')}: build on the target device or use "
                         "--target auto")
    if not on_tensorrt_line(trt_version, target.tensorrt):
        note(f"{target.name} is a TensorRT {target.tensorrt} target and this is TensorRT {trt_version}: the engine "
             f"runs only where TensorRT {trt_version} is installed")


def check_hardware_compat(target: Target, trt_version: str) -> None:
    """HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY exists from TensorRT 10.9 on: refused before, by version,
    rather than an AttributeError from the binding."""
    if target.hardware_compat == "same-cc" and not tensorrt_at_least(trt_version, SAME_CC_MIN_TENSORRT):
        raise InputError(f"{target.name} asks for hardware compatibility same-cc, which TensorRT "
                         f"{'.'.join(map(str, SAME_CC_MIN_TENSORRT))}+ has and this is TensorRT {trt_version}: "
                         "build without it on the target device")


def engine_bytes(network: Network, options: BuildOptions, plugin: plugins.Plugin) -> bytes:
    """Build the serialized engine with Polygraphy's loaders."""
    target = options.target
    trt = import_tensorrt(target.flavour)
    ptrt = polygraphy_trt(target.flavour)
    name, channels, size = input_shape(network)
    lo, opt, hi = batch_profile(options, network)
    fixed = network.manifest.graph.batch
    if isinstance(fixed, int) and (lo, opt, hi) != (fixed,) * 3:
        raise InputError(f"{network.onnx.name} has a fixed batch of {fixed}: use --batch {fixed} or export a "
                         "dynamic graph")
    profile = ptrt.Profile().add(name, (lo, channels, size, size), (opt, channels, size, size),
                                 (hi, channels, size, size))
    common = dict(profiles=[profile], builder_optimization_level=options.opt_level or target.opt_level,
                  memory_pool_limits={trt.MemoryPoolType.WORKSPACE: options.workspace or target.workspace},
                  load_timing_cache=str(options.timing_cache) if options.timing_cache else None)
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
            fp16=network.weak and network.precision in ("fp16", "int8"), int8=network.weak and
            network.precision == "int8", calibrator=calibrator, use_dla=options.dla_core is not None,
            allow_gpu_fallback=True, version_compatible=options.version_compatible or None, tf32=tf32(options),
            hardware_compatibility_level=getattr(trt.HardwareCompatibilityLevel, HARDWARE_COMPAT[
                target.hardware_compat]) if target.hardware_compat != "none" else None, **common)

    def postprocess(builder, net, cfg):
        """The knobs Polygraphy's CreateConfig lacks: the DLA core (it always picks core 0); TF32 on TensorRT-RTX
        (CreateConfigRTX leaves TensorRT's default); REQUIRE_USER_ALLOCATION on TensorRT-RTX, without which
        TensorRT-RTX may allocate memory while it runs and a CUDA-graph capture of it fails (its docs require the
        flag for stream capture; Refiner has no data-dependent shapes, the one thing the flag refuses)."""
        if options.dla_core is not None:
            cfg.DLA_core = options.dla_core
        (cfg.set_flag if tf32(options) else cfg.clear_flag)(trt.BuilderFlag.TF32)
        if target.rtx:
            cfg.set_flag(trt.BuilderFlag.REQUIRE_USER_ALLOCATION)

    config = ptrt.PostprocessConfig(config, postprocess)
    strongly = not network.weak and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    net_loader = ptrt.NetworkFromOnnxPath(str(network.parse), strongly_typed=strongly)
    for library in plugin.libraries():
        plugins.load_library(trt.get_plugin_registry(), library, "build it again (see plugins/refiner_dla/README.md)")
    cache = str(options.timing_cache) if options.timing_cache else None
    explain = out_of_memory_advice((lo, opt, hi), size, options.workspace or target.workspace)
    with polygraphy_errors(f"{target.flavour} could not build {network.onnx.name}", explain):
        serialized = ptrt.EngineBytesFromNetwork(net_loader, config=config, save_timing_cache=cache)()
    return bytes(memoryview(serialized))


def check_fits(variant: str, heads: int, img_size: int, precision: str, options: BuildOptions) -> None:
    """Refuse, before export or build, a resolution whose attention maps alone outgrow the builder's memory at the
    profile's smallest batch: targets.attention_bytes (the estimate the default batch caps use) over the workspace.
    Without it `--img-size 4096` on the tiny variant ran out of memory in the builder after 16 s."""
    lo = (options.batch or options.target.batch)[0]
    need = lo * attention_bytes(heads, img_size, precision)
    workspace = options.workspace or options.target.workspace
    if need > workspace:
        tokens = (img_size // 16) ** 2 + 1
        raise InputError(f"{variant} at {img_size}x{img_size} needs about {need / 1e9:,.1f} GB of {precision} "
                         f"attention maps at batch {lo} ({heads} heads, {tokens} tokens), more than the "
                         f"{workspace / 2**30:.1f} GiB workspace: use a smaller --img-size (or a larger --workspace)")


def batch_profile(options: BuildOptions, network: Network) -> tuple[int, int, int]:
    """The profile asked for, else the target's default lowered to what the model's activations allow."""
    if options.batch:
        return options.batch
    model = network.manifest.model
    return fitted_batch(options.target.batch, options.workspace or options.target.workspace,
                        attention_bytes(model.heads, model.img_size, network.precision))


def capped_note(target: Target, network: Network, batch: tuple[int, int, int]) -> str:
    model = network.manifest.model
    per_image = attention_bytes(model.heads, model.img_size, network.precision)
    return (f"batch profile {':'.join(map(str, batch))} instead of {target.name}'s default "
            f"{':'.join(map(str, target.batch))}: {model.variant} at {model.img_size} holds about "
            f"{per_image / 1e6:.0f} MB of {network.precision} attention maps per image; pass --batch to choose")


def out_of_memory_advice(batch: tuple[int, int, int], size: int, workspace: int) -> Callable[[str], str | None]:
    """Advice for the builder's OutOfMemory error: the profile's largest batch needs more than the memory allowed;
    a MAX batch that asks for at most half of it (a power of two), or a larger --workspace at batch 1."""
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


def rebuild_command(output: str | Path, options: BuildOptions, onnx: str | Path | None = None,
                    model: dict | None = None) -> str:
    """The `refiner-edge build` line that makes this engine again (stored in its manifest, printed when stale).
    Paths are absolute: the line is printed wherever the engine is used, seldom in the folder it was built from."""
    def text(value) -> str:
        return str(Path(value).absolute()) if isinstance(value, Path) else str(value)

    args = ["refiner-edge", "build"]
    if onnx is not None:
        args += ["--onnx", text(Path(onnx))]
    for key, value in (model or {}).items():
        if value is not None:
            args += [f"--{key.replace('_', '-')}", text(value)]
    if options.precision:
        args += ["--precision", options.precision]
    args += ["--target", options.target.name]
    if options.batch:
        args += ["--batch", ":".join(map(str, options.batch))]
    for flag, value in (("--plugin", options.plugin), ("--dla-core", options.dla_core),
                        ("--workspace", options.workspace), ("--timing-cache", options.timing_cache)):
        if value is not None:
            args += [flag, text(value)]
    args += ["--version-compatible"] if options.version_compatible else []
    args += ["--weak-typing"] if options.weak_typing else []
    args += ["--tf32" if tf32(options) else "--no-tf32"]   # resolved: the line keeps meaning this engine
    return shlex.join(args + ["-o", text(Path(output))])


TRTEXEC_HARDWARE_COMPAT = {"ampere+": "ampere+", "same-cc": "sameComputeCapability"}


def trtexec_command(network: Network, options: BuildOptions, output: str | Path, tensorrt_version: str,
                    batch: tuple[int, int, int], plugin_form: str, library: Path | None = None) -> str | None:
    """The trtexec line that builds the engine this build makes, for the TensorRT it ran on (stored in the build
    report, printed by build --json; docs/engines.md): the graph parsed, the profile, workspace, optimisation
    level, TF32, DLA, hardware and version compatibility, timing cache and plugin library as the build set them.
    Strongly typed is --stronglyTyped on TensorRT 10 and the only mode of TensorRT 11; a weakly typed build is
    --fp16 (and --int8 with the calibration cache). None for TensorRT-RTX (not trtexec's) and for the aot form,
    whose plugin registers from Python, which trtexec cannot."""
    target = options.target
    if target.rtx or plugin_form == "aot":
        return None
    name, channels, size = input_shape(network)
    args = ["trtexec", f"--onnx={Path(network.parse).absolute()}", f"--saveEngine={Path(output).absolute()}"]
    if network.weak:
        args += ["--fp16"] if network.precision in ("fp16", "int8") else []
        if network.precision == "int8":
            args += ["--int8", f"--calib={Path(network.calibration_cache).absolute()}"]
    elif tensorrt_version.split(".")[0] == "10":
        args += ["--stronglyTyped"]
    args += [f"--{which}Shapes={name}:{n}x{channels}x{size}x{size}" for which, n in zip(("min", "opt", "max"), batch)]
    workspace = options.workspace or target.workspace
    args += [f"--memPoolSize=workspace:{workspace >> 20}M" if workspace % (1 << 20) == 0 else
             f"--memPoolSize=workspace:{workspace}B"]
    args += [f"--builderOptimizationLevel={options.opt_level or target.opt_level}"]
    args += [] if tf32(options) else ["--noTF32"]   # trtexec's default is TF32 on
    if options.dla_core is not None:
        args += [f"--useDLACore={options.dla_core}", "--allowGPUFallback"]
    if target.hardware_compat != "none":
        args += [f"--hardwareCompatibilityLevel={TRTEXEC_HARDWARE_COMPAT[target.hardware_compat]}"]
    args += ["--versionCompatible"] if options.version_compatible else []
    args += [f"--timingCacheFile={Path(options.timing_cache).absolute()}"] if options.timing_cache else []
    args += [f"--dynamicPlugins={Path(library).absolute()}"] if library is not None else []
    return shlex.join(args)


def check_build_outputs(output: Path, options: BuildOptions, onnx: str | Path | None = None) -> None:
    """The engine, its manifest and the timing cache, refused before any work (artifacts.check_outputs)."""
    if output.suffix == MANIFEST_SUFFIX:
        raise InputError("-o names the engine; its manifest is written beside it as <engine>.json")
    check_artifact(output, inputs=[onnx, options.timing_cache])
    check_outputs(options.timing_cache, inputs=[onnx, output, manifest_path(output)], option="--timing-cache")


def engine_report(output: Path, manifest: Manifest, stages: dict) -> dict:
    """What `build --json` prints: the engine file, its manifest's engine record as it is, and what each stage did."""
    return {"engine": str(output), "manifest": str(manifest_path(output)), "bytes": output.stat().st_size,
            **dataclasses.asdict(manifest.engine), "trtexec": manifest.report.get("trtexec"), "stages": stages}


def build_engine(onnx: str | Path, output: str | Path, options: BuildOptions, *, rebuild: str | None = None,
                 report: dict | None = None, note: Callable[[str], None] = lambda message: None) -> Manifest:
    """Build `onnx` into the raw engine `output` and write its manifest `<output>.json` beside it.

    The engine file is TensorRT's serialized plan and nothing else, so trtexec, Triton and DeepStream load it as it
    is. Nothing is written unless the build succeeds; an earlier engine at `output` stays until then.
    """
    output = Path(output)
    check_build_outputs(output, options, onnx)
    target = options.target
    network = describe_network(onnx, options)
    form = plugins.default_form(target, network.fused, options.plugin)
    recorded = network.manifest.graph.plugin
    plugins.check_form(form, target, network.fused, network.onnx.name, recorded.form if recorded else None)
    trt = import_tensorrt(target.flavour)
    check_hardware_compat(target, trt.__version__)
    check_device(target, trt.__version__, note)
    model = network.manifest.model
    check_fits(model.variant, model.heads, model.img_size, network.precision, options)
    spec = {"form": form, "tensorrt_version": None if target.rtx else trt.__version__,
            "portable_cc": 80 if target.hardware_compat == "ampere+" else None, "min_cuda": target.min_cuda}
    plugin = plugins.prepare(**spec)
    with staged_outputs(output, locks=[options.timing_cache], inputs=[network.onnx, network.parse],
                        note=note) as staging:
        built = build_isolated(network, options, spec, staging.path(output), staging, note)
        lo, opt, hi = batch_profile(options, network)
        if (lo, opt, hi) != (options.batch or target.batch):
            report = {**(report or {}), "batch_profile": capped_note(target, network, (lo, opt, hi))}
            note(report["batch_profile"])
        _, channels, size = input_shape(network)
        info = EngineInfo(
            flavour=target.flavour, tensorrt_version=trt.__version__, target=target.name,
            compute_capability=target.compute_capability, device=target.devices, precision=network.precision,
            typing="weak" if network.weak else "strong",
            profiles=[Profile(input=network.manifest.graph.input, min=[lo, channels, size, size],
                              opt=[opt, channels, size, size], max=[hi, channels, size, size])],
            plugin_form=plugin.form, plugin_library=str(plugin.library) if plugin.library else None,
            plugin_sha256=plugin.sha256, dla_core=options.dla_core, workspace=options.workspace or target.workspace,
            builder_optimization_level=options.opt_level or target.opt_level,
            hardware_compatibility=target.hardware_compat, version_compatible=options.version_compatible,
            timing_cache=str(options.timing_cache) if options.timing_cache else None,
            build_seconds=round(built["seconds"], 2), rebuild=rebuild or rebuild_command(output, options,
                                                                                         onnx=network.onnx),
            tf32=tf32(options), user_allocation=target.rtx,
            plugin_tensorrt_version=built.get("plugin_tensorrt_version"))
        graph = dataclasses.replace(network.manifest.graph, precision=network.precision)
        trtexec = trtexec_command(network, options, output, trt.__version__, (lo, opt, hi), plugin.form,
                                  plugin.library)
        record = network.manifest.derive("build", output, network.onnx, graph=graph, engine=info,
                                         report={**(report or {}), "engine_bytes": built["bytes"],
                                                 "trtexec": trtexec,
                                                 **({"aot_ptx": plugin.setup} if plugin.setup else {})})
        write_manifest(staging.path(output), record)
    return record


def build_isolated(network: Network, options: BuildOptions, plugin: dict, engine: Path, staging: Staging,
                   note: Callable[[str], None]) -> dict:
    """Build in a child process (engine/worker.py: so Ctrl-C stops the compile) into the staging folder, and
    publish the updated timing cache. Returns {"seconds", "bytes"}."""
    from .worker import run_in_child

    cache = staging.folder / ".timing-cache"
    if options.timing_cache is not None and Path(options.timing_cache).is_file():
        # the builder reads and writes a private copy: Polygraphy locks a cache with a `.lock` file it leaves behind
        shutil.copyfile(options.timing_cache, cache)
    child_options = dataclasses.replace(options, timing_cache=cache if options.timing_cache else None)
    built = run_in_child("refiner_edge.engine.build:child_build",
                         {"network": network, "options": child_options, "plugin": plugin, "engine": str(engine),
                          "timing_cache_name": str(options.timing_cache)}, staging.folder / ".result",
                         what=f"{options.target.flavour} builder")
    for line in built.get("notes", []):
        note(line)
    with open(engine, "rb") as f:
        head = f.read(1)
    if not head or head in (b"{", b"["):
        raise VerificationError(f"{options.target.flavour} returned no engine for {network.onnx.name}")
    if options.timing_cache is not None and cache.is_file():
        with atomic_output(options.timing_cache) as tmp:
            shutil.copyfile(cache, tmp)
    return built


def child_build(job: dict) -> dict:
    """In the builder's child process (engine/worker.py): build the engine into job['engine'], reading and saving
    the timing cache copy the options name."""
    started = time.perf_counter()
    options, notes = job["options"], []
    cache = options.timing_cache
    if cache is not None and Path(cache).is_file():
        reason = unreadable_timing_cache(options.target.flavour, Path(cache))
        if reason:
            # built on without it and replaced by this build's cache: a cache only saves time, and one that cannot
            # be read would otherwise print TensorRT's errors at every build and never be renewed
            Path(cache).unlink()
            notes.append(f"--timing-cache {job['timing_cache_name']}: {reason}; building without it, and this "
                         "build's cache replaces it")
    plugin = plugins.prepare(**job["plugin"])   # the parent's arguments: the AOT form registers per process
    headers = plugin_headers(plugin, options.target, notes)
    data = engine_bytes(job["network"], options, plugin)
    Path(job["engine"]).write_bytes(data)
    return {"seconds": time.perf_counter() - started, "bytes": len(data), "notes": notes,
            "plugin_tensorrt_version": headers}


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
