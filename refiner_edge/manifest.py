"""The manifest beside every artifact (`<artifact>.json`): one typed, versioned record that every stage writes and
every consumer (the Python stages, the C++ library, model servers) reads. docs/manifest.md documents it.

Nothing here imports torch, onnx or PIL: a manifest is read before anything heavy is loaded.
"""
from __future__ import annotations

import dataclasses
import json
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

# Bump on any change a reader of an older version would misread (a renamed or retyped field, a new required one).
SCHEMA_VERSION = 1
STAGES = ("export", "calibrate", "fuse", "build")
IMAGENET_LABELS = "imagenet-1k"   # the labels shipped with the package, in the official models' index order
INDEX_LABELS = "class-index"      # any other head: classes are named by their index


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


@dataclass
class Preprocessing:
    """Resize the short side to resize_size, center-crop img_size, scale to [0, 1], (x - mean) / std, NCHW RGB."""

    img_size: int
    crop_pct: float
    resize_size: int
    mean: list[float]
    std: list[float]
    interpolation: str


@dataclass
class PluginInfo:
    """The fused RefinerDLA nodes of a graph or engine."""

    name: str
    version: str
    namespace: str
    nodes: int
    form: str = "library"   # library: IPluginV3 library loaded at run time; aot: kernel embedded in the engine


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
        data = dataclasses.asdict(self)
        return {"schema_version": data.pop("schema_version"), **data}


def write_manifest(artifact: str | Path, manifest: Manifest) -> Path:
    """Write `<artifact>.json` (atomically), stamping the artifact's name and SHA-256, the time and the package
    versions. Call it once the artifact is in place."""
    manifest.artifact = Path(artifact).name
    manifest.sha256 = file_sha256(artifact)
    manifest.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest.versions = package_versions()
    if manifest.stage not in STAGES:
        raise ValueError(f"unknown stage {manifest.stage!r}")
    return write_json(manifest_path(artifact), manifest.to_dict())


def read_manifest(artifact: str | Path, required: bool = False, verify: bool = True) -> Manifest | None:
    """The manifest beside `artifact`; None when there is none (unless required). A manifest that is not valid
    JSON, was written by a newer refiner-edge, or lacks fields is an InputError naming the problem; so is one that
    no longer describes the file beside it (verify: its SHA-256 differs, e.g. a run that replaced the artifact was
    interrupted before its manifest was written)."""
    path = manifest_path(artifact)
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
    return cls(**values)


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
