"""The manifest beside every artifact (`<artifact>.json`): one typed, versioned record that every stage writes and
every consumer (the Python stages, the C++ library, model servers) reads. docs/manifest.md documents it.

Nothing here imports torch, onnx or PIL: a manifest is read before anything heavy is loaded.
"""
from __future__ import annotations

import dataclasses
import json
import math
import platform
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Union

from . import __version__
from .artifacts import file_sha256, manifest_path, write_json
from .errors import InputError

# Bump on any change a reader of an older version would misread (a renamed or retyped field, a new required one, a
# required one dropped). 2: the image size is model.img_size alone; schema 1 wrote it in preprocess too.
SCHEMA_VERSION = 2
STAGES = ("export", "calibrate", "fuse", "build")
IMAGENET_LABELS = "imagenet-1k"   # the labels shipped with the package, in the official models' index order
INDEX_LABELS = "class-index"      # any other head: classes are named by their index


# Ranges every reader holds a manifest to (docs/manifest.md), here and in cpp/src/manifest.cpp with the same words:
# a hand-edited manifest is refused when read, never half-used (std 0 would give NaN predictions).
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
PRECISIONS = ("fp32", "fp16", "int8")  # of a graph, and of the engine built from it (precision.PRECISIONS)
WEIGHTS = ("included", "stripped")   # an engine's weights: in the plan, or left out for `refit` to fill in
REFIT = ("identical", "any")          # a refittable engine takes its build's weights only, or any of the same graph
MAX_IMG_SIZE, MAX_RESIZE_SIZE, MAX_CLASSES, MAX_OPSET = 8192, 65536, 1_000_000, 1000


def _in_range(where: str, name: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise InputError(f"{where}: {name} {value} is out of range ({lo} to {hi})")


def _one_of(where: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{where}: {name} '{value}' is not one of {', '.join(allowed)}")


@dataclass
class ModelInfo:
    """The network the artifact computes."""

    variant: str
    img_size: int
    num_classes: int
    heads: int
    refining_blocks: int
    aux_head: bool
    checkpoint_sha256: str | None   # None: random weights (PyTorch cannot rebuild them)

    def check(self, where: str) -> None:
        _in_range(where, "img_size", self.img_size, 1, MAX_IMG_SIZE)
        _in_range(where, "num_classes", self.num_classes, 1, MAX_CLASSES)
        _in_range(where, "heads", self.heads, 1, 1024)
        _in_range(where, "refining_blocks", self.refining_blocks, 0, 1024)


@dataclass
class Preprocessing:
    """Resize the short side to resize_size, center-crop img_size, scale to [0, 1], (x - mean) / std, NCHW RGB.

    img_size, the crop, is the model's input size: the manifest keeps it once, as model.img_size. It is read from
    there (parse_manifest) and left out when written (Manifest.to_dict); schema 1 wrote it here as well."""

    img_size: int
    crop_pct: float
    resize_size: int
    mean: list[float]
    std: list[float]
    interpolation: str

    def check(self, where: str) -> None:
        _in_range(where, "img_size", self.img_size, 1, MAX_IMG_SIZE)
        if not 0 < self.crop_pct < float("inf"):
            raise InputError(f"{where}: crop_pct {self.crop_pct:g} must be a finite number above 0")
        _in_range(where, "resize_size", self.resize_size, 1, MAX_RESIZE_SIZE)
        for name in ("mean", "std"):
            if len(getattr(self, name)) != 3:
                raise InputError(f"{where}: {name} should hold 3 values (R, G, B), got {len(getattr(self, name))}")
        if not all(abs(v) < float("inf") for v in self.mean + self.std) or 0 in self.std:
            raise InputError(f"{where}: mean and std must be finite and std non-zero")
        _one_of(where, "interpolation", self.interpolation, INTERPOLATIONS)
        if math.floor(self.img_size / self.crop_pct) != self.resize_size:
            # the words (and no `where`) of images.preprocess.Preprocess.from_record, which checks it too
            raise InputError(f"manifest preprocessing is inconsistent: resize_size {self.resize_size} but "
                             f"floor(img_size / crop_pct) = {math.floor(self.img_size / self.crop_pct)}")


@dataclass
class PluginInfo:
    """The fused RefinerDLA nodes of a graph or engine."""

    name: str
    version: str
    namespace: str
    nodes: int
    form: str = "library"   # library: IPluginV3 library loaded at run time; aot: kernel embedded in the engine

    def check(self, where: str) -> None:
        _in_range(where, "nodes", self.nodes, 0, 1_000_000)


@dataclass
class GraphInfo:
    """The ONNX graph's interface and numerics."""

    input: str
    output: str
    batch: int | str           # a fixed batch size, or "dynamic"
    opset: int
    precision: str             # fp32, fp16 or int8 (Q/DQ over FP16)
    fused: bool
    fp32_ops: list[dict] = field(default_factory=list)  # FP16/INT8 graphs: ops kept FP32 {node, op, reason, max_abs}
    fp16_layers: list[dict] = field(default_factory=list)   # INT8: layers left unquantized {node, op, reason}
    plugin: PluginInfo | None = None

    def check(self, where: str) -> None:
        if self.batch != "dynamic" and not (isinstance(self.batch, int) and 1 <= self.batch < 2 ** 31):
            raise InputError(f"{where}: batch must be \"dynamic\" or at least 1")
        _in_range(where, "opset", self.opset, 1, MAX_OPSET)
        _one_of(where, "precision", self.precision, PRECISIONS)


@dataclass
class Source:
    """The artifact this one was made from."""

    artifact: str
    sha256: str
    stage: str


@dataclass
class Verification:
    """One check an artifact passed before it was kept."""

    stage: str          # the stage that ran the check
    candidate: str      # what ran the artifact (e.g. "onnxruntime-cpu")
    reference: str      # what it was compared with
    inputs: str         # "random" or "N images"
    metrics: dict       # max_abs, max_rel, and agreement/cosine/sqnr_db where computed
    thresholds: dict


@dataclass
class Profile:
    """One optimisation profile: the input's full shape at its smallest, tuned-for and largest batch."""

    input: str
    min: list[int]
    opt: list[int]
    max: list[int]

    def check(self, where: str) -> None:
        if not len(self.min) == len(self.opt) == len(self.max) == 4:
            raise InputError(f"{where}: min, opt and max should be [batch, 3, size, size]")
        if not all(1 <= a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise InputError(f"{where}: min, opt and max must be positive with min <= opt <= max")


def profile_for(profiles: list[Profile], batch: int) -> int | None:
    """The index of the optimisation profile a runner uses for `batch`: the first that holds it, which for profiles
    in `build`'s order (engine/plan.py check_profiles) is the one with the smallest MAX; None when none holds it.
    cpp/src/manifest.cpp profileFor is the same rule."""
    return next((i for i, p in enumerate(profiles) if p.min[0] <= batch <= p.max[0]), None)


@dataclass
class EngineInfo:
    """A TensorRT engine: what built it, for which device, and how to build it again (engine/checks.py reads it)."""

    flavour: str                  # tensorrt or tensorrt-rtx
    tensorrt_version: str         # of the builder; an engine only loads on the same version (unless compatible)
    target: str                   # the row of engine/targets.py it was built for
    compute_capability: str       # "8.9"; the GPU it runs on
    device: str                   # the target's devices, or the local GPU's name
    precision: str                # fp32, fp16 or int8
    typing: str                   # strong (precision from the graph) or weak (builder flags, calibration cache)
    profiles: list[Profile]       # shapes per optimisation profile
    plugin_form: str              # none, library or aot
    plugin_library: str | None    # library form: the library the engine needs at run time
    plugin_sha256: str | None
    dla_core: int | None
    workspace: int                # bytes
    builder_optimization_level: int
    hardware_compatibility: str   # none, ampere+ or same-cc
    version_compatible: bool
    timing_cache: str | None
    build_seconds: float
    rebuild: str                  # the command line that builds this engine again
    # added later, so optional: manifests written before them still read
    tf32: bool | None = None      # FP32 layers may run as TF32 (BuilderFlag.TF32); None: not recorded
    user_allocation: bool = False   # TensorRT-RTX: built with REQUIRE_USER_ALLOCATION (CUDA-graph capture needs it)
    plugin_tensorrt_version: str | None = None   # library form: the TensorRT headers it was compiled for; None: unknown
    weights: str = "included"     # included, or stripped (build --strip-weights: `refit` fills them in)
    refit: str | None = None      # refittable: identical (REFIT_IDENTICAL: its build's weights only) or any; None: not
    weights_onnx: str | None = None     # the ONNX the weights come from (absolute as built, or as refitted)
    weights_sha256: str | None = None   # its SHA-256

    def check(self, where: str) -> None:
        if not self.profiles:
            raise InputError(f"{where}: profiles is empty: the engine has no input shapes")
        if self.dla_core is not None:
            _in_range(where, "dla_core", self.dla_core, 0, 15)
        _in_range(where, "workspace", self.workspace, 0, 1 << 50)
        _in_range(where, "builder_optimization_level", self.builder_optimization_level, 0, 5)
        if not 0 <= self.build_seconds < float("inf"):
            raise InputError(f"{where}: build_seconds {self.build_seconds:g} must be a finite number, 0 or more")
        _one_of(where, "weights", self.weights, WEIGHTS)
        if self.refit is not None:
            _one_of(where, "refit", self.refit, REFIT)


@dataclass
class Manifest:
    stage: str
    artifact: str
    model: ModelInfo
    preprocess: Preprocessing
    labels: str
    graph: GraphInfo
    source: Source | None = None
    verification: list[Verification] = field(default_factory=list)
    report: dict = field(default_factory=dict)   # stage-specific details (calibration sample, sensitivities, ...)
    engine: EngineInfo | None = None             # build stage: TensorRT flavour, device, profiles, options
    sha256: str = ""                             # of the artifact; filled in when written
    created: str = ""
    versions: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def check(self, where: str) -> None:
        _one_of(where, "stage", self.stage, STAGES)
        if self.preprocess.img_size != self.model.img_size:   # a schema 1 manifest holding two sizes
            raise InputError(f"{where}: preprocess: img_size {self.preprocess.img_size} differs from model: "
                             f"img_size {self.model.img_size} (the crop is the model's input size)")

    def derive(self, stage: str, artifact: str | Path, source_path: str | Path, **changes) -> "Manifest":
        """The manifest of an artifact made from this one: model, preprocessing and labels carry over, the
        verification history grows, `changes` replace fields (graph=..., report=...)."""
        source = Source(artifact=Path(source_path).name, sha256=self.sha256 or file_sha256(source_path),
                        stage=self.stage)
        fields = dict(stage=stage, artifact=Path(artifact).name, source=source, verification=list(self.verification),
                      report={}, engine=None, sha256="", created="", versions={})
        return dataclasses.replace(self, **{**fields, **changes})

    @property
    def random_weights(self) -> bool:
        return self.model.checkpoint_sha256 is None

    def to_dict(self) -> dict:
        """The manifest as this version writes it (SCHEMA_VERSION, whatever version it was read from)."""
        data = dataclasses.asdict(self)
        data.pop("schema_version")
        del data["preprocess"]["img_size"]   # model.img_size says it (Preprocessing)
        return {"schema_version": SCHEMA_VERSION, **data}


def write_manifest(artifact: str | Path, manifest: Manifest) -> Path:
    """Write `<artifact>.json` (atomically), stamping the artifact's name and SHA-256, the time and the package
    versions. Call it once the artifact is in place."""
    manifest.artifact = Path(artifact).name
    manifest.sha256 = file_sha256(artifact)
    manifest.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest.versions = package_versions()
    if manifest.stage not in STAGES:
        raise ValueError(f"unknown stage {manifest.stage!r}")
    if manifest.preprocess.img_size != manifest.model.img_size:   # only one of them is written
        raise ValueError(f"preprocess img_size {manifest.preprocess.img_size} is not the model's "
                         f"{manifest.model.img_size}")
    return write_json(manifest_path(artifact), manifest.to_dict())


def read_manifest(artifact: str | Path, required: bool = False, verify: bool = True) -> Manifest | None:
    """The manifest beside `artifact`; None when there is none (unless required). A manifest that is not valid
    JSON, was written by a newer refiner-edge, or lacks fields is an InputError naming the problem; so is one that
    no longer describes the file beside it (verify: its SHA-256 differs, e.g. a run that replaced the artifact was
    interrupted before its manifest was written)."""
    path = manifest_path(artifact)
    if not path.is_file() and Path(artifact).is_symlink():
        # a link (current.onnx -> refiner-vit-m.onnx) names the artifact it points to: its manifest lies beside that
        path = manifest_path(Path(artifact).resolve())
    if not path.is_file():
        if required:
            raise InputError(f"{artifact} has no manifest ({path.name}): make it with refiner-edge")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_not_json)
    except (OSError, ValueError) as e:   # ValueError: JSONDecodeError, UnicodeDecodeError, _not_json
        raise InputError(f"{path}: not a readable manifest ({e})") from None
    manifest = parse_manifest(data, str(path))
    if verify and manifest.sha256 and Path(artifact).is_file() and file_sha256(artifact) != manifest.sha256:
        raise InputError(f"{path.name} does not describe {Path(artifact).name} (SHA-256 differs): the file changed "
                         "after its manifest was written; make it again")
    return manifest


def _not_json(token: str):
    """Python's json reads bare NaN and Infinity; RFC 8259 (and the C++ reader) does not: refuse them alike."""
    raise ValueError(f"{token} is not a JSON value: write it as the string \"{token}\"")


def parse_manifest(data: Any, where: str = "manifest") -> Manifest:
    if not isinstance(data, dict):
        raise InputError(f"{where}: a manifest is a JSON object")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"{where}: no schema_version: written before refiner-edge 0.2; make the artifact again")
    if version > SCHEMA_VERSION:
        raise InputError(f"{where}: manifest schema {version} is newer than this refiner-edge reads "
                         f"({SCHEMA_VERSION}): upgrade refiner-edge")
    model, pre = data.get("model"), data.get("preprocess")
    if isinstance(model, dict) and "img_size" in model and isinstance(pre, dict) and "img_size" not in pre:
        # the crop is the model's input size (Preprocessing); a schema 1 manifest also wrote it in preprocess, and
        # Manifest.check refuses one where the two differ
        data = {**data, "preprocess": {**pre, "img_size": model["img_size"]}}
    return _build(Manifest, data, where)


def _build(cls, data: Any, where: str):
    """A dataclass from its dict form, checking that every field without a default is present and of its type."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InputError(f"{where}: missing field '{f.name}'")
            continue
        values[f.name] = _value(hints[f.name], data[f.name], f"{where}: {f.name}")
    built = cls(**values)
    if hasattr(built, "check"):   # ranges, once the types hold (nested records were checked as they were built)
        built.check(where)
    return built


def _value(hint, value, where: str):
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise InputError(f"{where} must not be null")
    for option in options:
        origin = typing.get_origin(option) or option
        if dataclasses.is_dataclass(origin):
            return _build(origin, value, where)
        if origin is list and isinstance(value, list):
            (item,) = typing.get_args(option) or (Any,)
            return [_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        if origin is Any or (origin is float and isinstance(value, (int, float)) and not isinstance(value, bool)):
            return value
        if origin in (str, int, bool, dict) and isinstance(value, origin) and \
                not (origin is int and isinstance(value, bool)):
            return value
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise InputError(f"{where} should be {names}, got {type(value).__name__}")


def package_versions() -> dict[str, str]:
    versions = {"refiner-edge": __version__, "python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxruntime", "onnx-graphsurgeon", "tensorrt", "tensorrt-rtx", "triton"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions
