"""The build plan: every decision of a build, settled once from its options and its graph by `resolve`.

`resolve(options, network)` runs each check once (DLA, typing, precision against the graph, plugin form, hardware
compatibility, the device, the attention maps against the workspace) and settles precision, typing, plugin form,
the optimisation profiles (as asked, else the target's fitted to the model), workspace, optimisation level, TF32
and user allocation into a frozen BuildPlan. The build (engine/build.py), its child (engine/backend.py), the
engine's manifest, the rebuild and trtexec lines and the chain all read the plan; none of them decides again.

The network is either a graph on disk (`read_network`) or, in the chain, the graph its stages are about to make
(`planned_network`); a planned network gets its files with `BuildPlan.with_graph` once its graph is made.
"""
from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..artifacts import file_sha256
from ..defaults import BUILD_TF32, default
from ..errors import InputError
from ..manifest import Manifest, read_manifest
from ..onnx.graph import check_onnx_graph
from ..precision import PRECISIONS
from . import plugins
from .checks import compute_capability_refusal, on_tensorrt_line
from .targets import (GiB, SAME_CC_MIN_TENSORRT, Target, attention_bytes, detect_gpu, fitted_batch, import_tensorrt,
                      tensorrt_at_least)


Batch = tuple[int, int, int]   # one optimisation profile's (MIN, OPT, MAX) batch


def check_profiles(profiles: tuple[Batch, ...]) -> None:
    """The rule several profiles follow (`build --batch` given more than once), so that each batch has one profile
    that is plainly its own: the runners pick, for a batch, the first profile that holds it, which is the one with the
    smallest MAX. Given in increasing order: each profile's MIN, OPT and MAX at least the previous one's, OPT and MAX
    above it (no two alike, none inside another tuned for a smaller batch, each the pick for some batches), and MIN
    at most the previous MAX + 1 (no batch between two profiles that none holds)."""
    for lo, opt, hi in profiles:
        if not 1 <= lo <= opt <= hi:
            raise InputError(f"--batch must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX (or one size), got "
                             f"'{batch_text(lo, opt, hi)}'")
    for (lo0, opt0, hi0), (lo, opt, hi) in zip(profiles, profiles[1:]):
        this, previous = batch_text(lo, opt, hi), batch_text(lo0, opt0, hi0)
        if not (lo >= lo0 and opt > opt0 and hi > hi0):
            raise InputError(f"--batch {this} after --batch {previous}: give profiles in increasing order, each "
                             "MIN at least, OPT and MAX above the previous one's (e.g. --batch 1 --batch 1:8:16)")
        if lo > hi0 + 1:
            raise InputError(f"--batch {this} after --batch {previous}: batches {hi0 + 1}..{lo - 1} fit no profile; "
                             f"start it at {hi0 + 1} or lower (--batch {batch_text(hi0 + 1, opt, hi)})")


def batch_text(*batch: int) -> str:
    """A profile as --batch writes it: N for a static batch, else MIN:OPT:MAX."""
    return str(batch[0]) if len(set(batch)) == 1 else ":".join(map(str, batch))


@dataclass(frozen=True)
class BuildOptions:
    """Every knob of a build as asked; None means "not given", and `resolve` settles it (from the graph, the
    target's row or defaults.py) into the BuildPlan."""

    target: Target
    precision: str | None = None          # None: the graph's (the chain: fp32)
    batch: tuple[Batch, ...] | Batch | None = None   # the profiles, in order (one (MIN, OPT, MAX): one profile);
    #                                                  None: the target's, fitted to the model's attention maps
    dla_core: int | None = None
    workspace: int | None = None          # bytes; None: the target's
    opt_level: int | None = None          # None: the target's
    timing_cache: Path | None = None
    version_compatible: bool = False
    weak_typing: bool = False
    plugin: str | None = None             # None: the target's form for a fused graph, none for a plain one
    tf32: bool | None = None              # None: defaults.BUILD_TF32 (see `tf32`)
    strip_weights: bool = False           # STRIP_PLAN: the plan without its weights, for `refit` to fill in
    refittable: bool = False              # REFIT (any weights of the graph); stripped without it: REFIT_IDENTICAL

    def __post_init__(self):
        # one profile may be given bare, (1, 8, 16); kept as a tuple of profiles, checked (check_profiles) here so
        # that no BuildOptions, from the CLI or Python, holds profiles a runner could not pick among
        batch = self.batch
        if batch is not None:
            batch = (tuple(batch),) if batch and isinstance(batch[0], int) else tuple(tuple(b) for b in batch)
            if not batch:
                raise InputError("--batch needs at least one profile")
            check_profiles(batch)
            object.__setattr__(self, "batch", batch)


@dataclass(frozen=True)
class Network:
    """The graph a build parses, and what it computes."""

    onnx: Path | None             # the graph given; None: the chain has yet to make it
    variant: str
    heads: int
    img_size: int
    input: str
    batch: int | str              # the graph's fixed batch, or "dynamic"
    precision: str | None         # the graph's; None: the chain makes it as the plan asks
    fused: bool | None            # RefinerDLA nodes; None: the chain fuses as the plan's plugin form needs
    form: str | None = None       # the plugin form of its RefinerDLA nodes (from `fuse --plugin-form`)
    manifest: Manifest | None = None
    parse: Path | None = None     # the graph parsed (the plain FP32 graph for a weakly typed INT8/FP16 build)
    calibration_cache: Path | None = None


@dataclass(frozen=True)
class BuildPlan:
    """A build, settled: what `resolve` decided, read by everything that builds, records or repeats it."""

    options: BuildOptions         # as asked (the rebuild line repeats them)
    network: Network
    tensorrt_version: str         # of the builder that runs
    precision: str
    weak: bool                    # weakly typed: builder flags (and the calibration cache) set precision
    plugin_form: str              # none, library or aot
    profiles: tuple[Batch, ...]   # the optimisation profiles' (MIN, OPT, MAX) batches, in order
    profile_note: str | None      # why the profile is not the target's default, when it is not
    workspace: int                # bytes
    opt_level: int
    tf32: bool
    user_allocation: bool         # REQUIRE_USER_ALLOCATION (TensorRT-RTX; CUDA-graph capture needs it)

    @property
    def target(self) -> Target:
        return self.options.target

    @property
    def typing(self) -> str:
        return "weak" if self.weak else "strong"

    @property
    def plugin(self) -> dict:
        """plugins.prepare's arguments for this build (the child prepares the plugin, once)."""
        target = self.target
        return {"form": self.plugin_form, "tensorrt_version": None if target.rtx else self.tensorrt_version,
                "portable_cc": 80 if target.hardware_compat == "ampere+" else None, "min_cuda": target.min_cuda}

    @property
    def refit(self) -> str | None:
        """manifest.REFIT: "any" (REFIT) when asked refittable, "identical" (REFIT_IDENTICAL: a stripped plan whose
        weights are the graph's, which lets the builder optimise as if they were constants), else None."""
        return "any" if self.options.refittable else "identical" if self.options.strip_weights else None

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        return batch, 3, self.network.img_size, self.network.img_size

    def with_graph(self, onnx: str | Path) -> BuildPlan:
        """The plan of a planned network (the chain), on the graph its stages made: the files to parse, checked
        against the plan."""
        network = read_network(onnx)
        return dataclasses.replace(self, network=graph_files(network, self.precision, self.weak))


def tf32(options: BuildOptions) -> bool:
    """Whether FP32 layers may run as TF32 (BuilderFlag.TF32), set explicitly for every build: TensorRT and
    TensorRT-RTX turn it on unless told, Polygraphy's CreateConfig turns it off unless told, so without a decision
    the same command made different engines on the two builders."""
    return default(options.tf32, BUILD_TF32)


def workspace(options: BuildOptions) -> int:
    """Builder workspace in bytes: the one asked for, else the target's."""
    return options.workspace or options.target.workspace


def opt_level(options: BuildOptions) -> int:
    """Builder optimisation level: the one asked for, else the target's."""
    return options.opt_level or options.target.opt_level


def target_row(target: Target) -> dict:
    """A row of `build --list-targets`: what a build for `target` given no options settles, with the resolvers
    `resolve` uses (the batch before it is fitted to the model, the plugin form for a fused graph)."""
    options = BuildOptions(target)
    return {**target.row(), "workspace_gib": workspace(options) / GiB, "opt_level": opt_level(options),
            "batch": ":".join(map(str, target.batch)), "tf32": tf32(options),
            "plugin": plugins.choose_form(target, None, fused=None, probe=False)}


def read_network(onnx: str | Path) -> Network:
    """The graph at `onnx`, as its manifest describes it; refused unless it is a graph refiner-edge made."""
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
    graph, model = manifest.graph, manifest.model
    return Network(path, model.variant, model.heads, model.img_size, graph.input, graph.batch, graph.precision,
                   graph.fused, graph.plugin.form if graph.plugin else None, manifest)


def planned_network(variant: str, img_size: int | None = None) -> Network:
    """The graph the chain's export makes of `variant` (dynamic batch), before it exists."""
    from ..models.variants import get_variant
    from ..onnx.graph import INPUT_NAME

    cfg = get_variant(variant).with_overrides(img_size=img_size)
    return Network(None, cfg.name, cfg.heads, cfg.img_size, INPUT_NAME, "dynamic", precision=None, fused=None)


def resolve(options: BuildOptions, network: Network, *,
            note: Callable[[str], None] = lambda message: None) -> BuildPlan:
    """Settle every decision of a build of `network` with `options`, each check run once, in the order that
    refuses the cheapest mistakes first (before TensorRT is imported)."""
    target = options.target
    precision = options.precision or network.precision or "fp32"
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    check_dla(options, precision)
    if options.version_compatible and target.rtx:
        raise InputError("--version-compatible is a TensorRT option; TensorRT-RTX engines are not version compatible")
    weak = options.weak_typing or (options.dla_core is not None and not target.strongly_typed_only)
    if weak and target.strongly_typed_only:
        raise InputError(f"{target.name} ({'TensorRT-RTX' if target.rtx else 'TensorRT ' + target.tensorrt}) builds "
                         "strongly typed networks only: drop --weak-typing")

    def builder_version() -> str:
        return import_tensorrt(target.flavour).__version__

    form = plugins.choose_form(target, options.plugin, fused=network.fused, weak=weak,
                               graph=network.onnx.name if network.onnx else "the graph", graph_form=network.form,
                               builder_version=builder_version, note=note)
    if network.onnx is not None:
        network = graph_files(network, precision, weak)
    space = workspace(options)
    check_fits(network, precision, options.batch or (target.batch,), space)
    version = builder_version()
    check_hardware_compat(target, version)
    check_device(target, version, note, refittable=options.strip_weights or options.refittable)
    profiles = batch_profile(options.batch, target, network, precision, space)
    if isinstance(network.batch, int) and profiles != ((network.batch,) * 3,):
        raise InputError(f"{network.onnx.name} has a fixed batch of {network.batch}: use --batch {network.batch} "
                         "(once) or export a dynamic graph")
    capped = None
    if profiles != (options.batch or (target.batch,)):
        per_image = attention_bytes(network.heads, network.img_size, precision, network.variant)
        capped = (f"batch profile {':'.join(map(str, profiles[0]))} instead of {target.name}'s default "
                  f"{':'.join(map(str, target.batch))}: {network.variant} at {network.img_size} holds about "
                  f"{per_image / 1e6:.0f} MB of {precision} attention maps per image; pass --batch to choose")
    return BuildPlan(options, network, version, precision, weak, form, profiles, capped, space, opt_level(options),
                     tf32(options), user_allocation=target.rtx)


def graph_files(network: Network, precision: str, weak: bool) -> Network:
    """The graph to parse (and the calibration cache) for a build of `network` at `precision`: the graph itself
    when strongly typed; for a weakly typed build the plain FP32 graph, an FP16/INT8 graph's calibrated source,
    with the cache `calibrate` wrote for INT8. Refuses a graph that cannot build so."""
    path = network.onnx
    if not weak:
        if precision != network.precision:
            raise InputError(f"{path.name} is a {network.precision} graph and a strongly typed build takes precision "
                             f"from the graph: calibrate it for {precision} (`refiner-edge calibrate`), or build "
                             f"without --onnx")
        return dataclasses.replace(network, parse=path)
    if network.fused:
        raise InputError("a weakly typed build parses the plain FP32 graph: give the unfused graph")
    if network.precision == "fp32":
        if precision == "int8":
            raise InputError("a weakly typed INT8 build reads the calibration cache that `refiner-edge calibrate` "
                             "writes: pass the INT8 graph (its .calib and plain source beside it)")
        return dataclasses.replace(network, parse=path)
    if network.precision != precision:
        raise InputError(f"{path.name} is a {network.precision} graph, not {precision}")
    # an FP16/INT8 graph from `calibrate`: parse its plain source, with the cache for INT8
    source = network.manifest.source
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
    return dataclasses.replace(network, parse=plain, calibration_cache=cache)


def check_dla(options: BuildOptions, precision: str) -> None:
    """What DLA cannot do, refused before any work (the chain resolves before exporting and calibrating)."""
    target = options.target
    if options.dla_core is None:
        return
    if target.dla_cores == 0:
        raise InputError(f"{target.name} ({target.devices}) has no DLA: drop --dla-core")
    if not 0 <= options.dla_core < target.dla_cores:
        raise InputError(f"--dla-core must be 0..{target.dla_cores - 1} on {target.name}, got {options.dla_core}")
    if precision == "fp32":
        raise InputError("DLA runs FP16 and INT8 only: use --precision fp16 or int8 with --dla-core")
    profiles = options.batch or (target.batch,)
    if len(profiles) > 1:
        # a DLA loadable is compiled for one static shape
        raise InputError("DLA takes one static batch: give --batch once with --dla-core")
    lo, opt, hi = profiles[0]
    if not lo == opt == hi:
        raise InputError(f"DLA needs a static batch: use --batch {opt} (one size) with --dla-core")


def check_fits(network: Network, precision: str, profiles: tuple[Batch, ...], workspace: int) -> None:
    """Refuse, before export or build, a resolution whose attention maps alone outgrow the builder's memory at a
    profile's smallest batch (every profile's: the largest MIN decides): targets.attention_bytes (the estimate the
    default batch caps use) over the workspace. Without it `--img-size 4096` on the tiny variant ran out of memory
    in the builder after 16 s."""
    lo, size = max(p[0] for p in profiles), network.img_size
    need = lo * attention_bytes(network.heads, size, precision, network.variant)
    if need > workspace:
        from ..models.variants import get_variant

        tokens = get_variant(network.variant).tokens(size)   # the variant's patch size, as attention_bytes
        raise InputError(f"{network.variant} at {size}x{size} needs about {need / 1e9:,.1f} GB of {precision} "
                         f"attention maps at batch {lo} ({network.heads} heads, {tokens} tokens), more than the "
                         f"{workspace / 2**30:.1f} GiB workspace: use a smaller --img-size (or a larger --workspace)")


def batch_profile(asked: tuple[Batch, ...] | None, target: Target, network: Network, precision: str,
                  workspace: int) -> tuple[Batch, ...]:
    """The profiles asked for, else one: the target's default lowered to what the model's activations allow."""
    if asked:
        return asked
    per_image = attention_bytes(network.heads, network.img_size, precision, network.variant)
    return (fitted_batch(target.batch, workspace, per_image),)


def check_hardware_compat(target: Target, trt_version: str) -> None:
    """HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY exists from TensorRT 10.9 on: refused before, by version,
    rather than an AttributeError from the binding."""
    if target.hardware_compat == "same-cc" and not tensorrt_at_least(trt_version, SAME_CC_MIN_TENSORRT):
        raise InputError(f"{target.name} asks for hardware compatibility same-cc, which TensorRT "
                         f"{'.'.join(map(str, SAME_CC_MIN_TENSORRT))}+ has and this is TensorRT {trt_version}: "
                         "build without it on the target device")


def check_device(target: Target, trt_version: str, note: Callable[[str], None], refittable: bool = False) -> None:
    """TensorRT proper builds for the GPU it runs on: the local GPU must be the target's (or newer, for a
    hardware-compatible target). TensorRT-RTX builds on a CPU, except refittable weights (--strip-weights,
    --refittable), which its compiler (Myelin) compiles with CUDA: without a GPU the build fails after the parse
    with "MyelinCheckException: graph_jit.cpp:278: CHECK(status == CUDA_SUCCESS)" (TensorRT-RTX 1.7.1, any graph),
    so it is refused first."""
    if target.rtx:
        if refittable and detect_gpu() is None:
            raise InputError(f"TensorRT-RTX {trt_version} builds refittable (--strip-weights, --refittable) plans "
                             "with CUDA and this machine has no GPU: build them on a machine with one")
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


def rebuild_command(output: str | Path, plan: BuildPlan, model: dict | None = None) -> str:
    """The `refiner-edge build` line that makes this engine again (stored in its manifest, printed when stale):
    the graph (or, for the chain, `model`'s options), the precision and plugin form the plan settled, the other
    options as asked, TF32 resolved. Paths are absolute: the line is printed wherever the engine is used, seldom
    in the folder it was built from."""
    def text(value) -> str:
        return str(Path(value).absolute()) if isinstance(value, Path) else str(value)

    options = plan.options
    args = ["refiner-edge", "build"]
    if plan.network.onnx is not None and model is None:
        args += ["--onnx", text(Path(plan.network.onnx))]
    for key, value in (model or {}).items():
        if value is not None:
            args += [f"--{key.replace('_', '-')}", text(value)]
    args += ["--precision", plan.precision, "--target", options.target.name]
    for profile in options.batch or ():
        args += ["--batch", ":".join(map(str, profile))]
    for flag, value in (("--plugin", plan.plugin_form), ("--dla-core", options.dla_core),
                        ("--workspace", options.workspace), ("--timing-cache", options.timing_cache)):
        if value is not None:
            args += [flag, text(value)]
    args += ["--version-compatible"] if options.version_compatible else []
    args += ["--weak-typing"] if options.weak_typing else []
    args += ["--strip-weights"] if options.strip_weights else []
    args += ["--refittable"] if options.refittable else []
    args += ["--tf32" if plan.tf32 else "--no-tf32"]   # resolved: the line keeps meaning this engine
    return shlex.join(args + ["-o", text(Path(output))])


TRTEXEC_HARDWARE_COMPAT = {"ampere+": "ampere+", "same-cc": "sameComputeCapability"}


def trtexec_command(plan: BuildPlan, output: str | Path, library: Path | None = None,
                    published: Callable[[Path], Path] = lambda path: path) -> str | None:
    """The trtexec line that builds the engine this build makes, for the TensorRT it ran on (stored in the build
    report, printed by build --json; docs/engines.md): the graph parsed, the profile, workspace, optimisation
    level, TF32, DLA, hardware and version compatibility, timing cache and plugin library as the plan settled them.
    Strongly typed is --stronglyTyped on TensorRT 10 and the only mode of TensorRT 11; a weakly typed build is
    --fp16 (and --int8 with the calibration cache). None for TensorRT-RTX (not trtexec's) and for the aot form,
    whose plugin registers from Python, which trtexec cannot. `published` names a file where it will lie once the
    run is published (the chain builds from stage files in its staging folder, which is gone by then)."""
    target, network, options = plan.target, plan.network, plan.options
    if target.rtx or plan.plugin_form == "aot":
        return None
    args = ["trtexec", f"--onnx={published(Path(network.parse)).absolute()}",
            f"--saveEngine={published(Path(output)).absolute()}"]
    if plan.weak:
        args += ["--fp16"] if plan.precision in ("fp16", "int8") else []
        if plan.precision == "int8":
            args += ["--int8", f"--calib={published(Path(network.calibration_cache)).absolute()}"]
    elif plan.tensorrt_version.split(".")[0] == "10":
        args += ["--stronglyTyped"]
    for index, profile in enumerate(plan.profiles):
        # several profiles: trtexec numbers each group of shapes with --profile=N before it
        args += [f"--profile={index}"] if len(plan.profiles) > 1 else []
        args += [f"--{which}Shapes={network.input}:{'x'.join(map(str, plan.shape(n)))}"
                 for which, n in zip(("min", "opt", "max"), profile)]
    workspace = plan.workspace
    args += [f"--memPoolSize=workspace:{workspace >> 20}M" if workspace % (1 << 20) == 0 else
             f"--memPoolSize=workspace:{workspace}B"]
    args += [f"--builderOptimizationLevel={plan.opt_level}"]
    args += [] if plan.tf32 else ["--noTF32"]   # trtexec's default is TF32 on
    args += ["--profilingVerbosity=detailed"]   # as engine/backend.py builds: the inspector's and profiler's details
    if options.dla_core is not None:
        args += [f"--useDLACore={options.dla_core}", "--allowGPUFallback"]
    if target.hardware_compat != "none":
        args += [f"--hardwareCompatibilityLevel={TRTEXEC_HARDWARE_COMPAT[target.hardware_compat]}"]
    args += ["--versionCompatible"] if options.version_compatible else []
    # --stripWeights alone is REFIT_IDENTICAL; with --refit it strips a fully refittable plan
    args += ["--stripWeights"] if options.strip_weights else []
    args += ["--refit"] if options.refittable else []
    args += [f"--timingCacheFile={Path(options.timing_cache).absolute()}"] if options.timing_cache else []
    args += [f"--dynamicPlugins={Path(library).absolute()}"] if library is not None else []
    return shlex.join(args)
