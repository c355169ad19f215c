"""`refiner-edge deploy deepstream`: a DeepStream nvinfer configuration for a Refiner-ViT classifier engine, made
from the engine's manifest, and a sample pipeline.

    DIR/config_infer_refiner.txt   nvinfer's [property] group (keys below)
    DIR/<engine>                   the engine, byte for byte (nvinfer deserializes it as it is)
    DIR/labels.txt                 class names, one a line, in index order
    DIR/plugins/<library>          library-form engines: the RefinerDLA plugin library (custom-lib-path)
    DIR/README.md                  the sample pipeline and what was checked where

nvinfer computes y = net-scale-factor * (x - offsets[c]) on 0..255 pixels; the manifest's preprocessing is
(x / 255 - mean[c]) / std[c]. With offsets[c] = 255 * mean[c] and net-scale-factor = 1 / (255 * std) the two are
the same function exactly when std is equal across channels (nvinfer has one scale factor, per-channel offsets).
Otherwise the configuration uses the mean std and says it is approximate.

What nvinfer cannot express: the resize of the short side and the center crop. nvinfer scales the whole frame (or
object) to the network's input size; `maintain-aspect-ratio=1` pads rather than crops. The README says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import defaults
from ..artifacts import file_sha256, publish_files
from ..defaults import default
from ..engine.checks import check_plugin_library, rebuild_line
from ..errors import InputError
from ..images.labels import labels_text
from ..manifest import Manifest
from .triton import INT32_MAX, check_file_name, check_range, comment_text

CONFIG_NAME = "config_infer_refiner.txt"
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}   # nvinfer's network-mode values
SCALING_FILTER = {"nearest": 0, "bilinear": 1, "bicubic": 2}   # NvBufSurfTransform_Inter: Nearest, Bilinear, GPU-Cubic


@dataclass
class DeepStreamConfig:
    path: Path
    properties: dict[str, str]
    exact_preprocessing: bool
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"folder": str(self.path), "config": CONFIG_NAME, "properties": self.properties,
                "preprocessing_exact": self.exact_preprocessing, "files": self.files, "notes": self.notes}


def normalisation(manifest: Manifest) -> tuple[float, list[float], bool]:
    """(net-scale-factor, offsets, exact): nvinfer's form of (x / 255 - mean) / std."""
    mean, std = manifest.preprocess.mean, manifest.preprocess.std
    exact = max(std) - min(std) <= 1e-12 * max(abs(s) for s in std)
    scale = 1.0 / (255.0 * (sum(std) / len(std)))
    return scale, [255.0 * m for m in mean], exact


def keyfile_string(text: str) -> str:
    """`text` as a GLib key-file string value (what nvinfer reads with g_key_file_get_string): a backslash is an
    escape there, and leading blanks are dropped. Control characters are refused before (check_file_name)."""
    text = text.replace("\\", "\\\\")
    return "\\s" + text[1:] if text.startswith(" ") else text


def _number(value: float) -> str:
    return repr(float(value))   # shortest text that reads back as the same double


def nvinfer_properties(manifest: Manifest, engine_name: str, batch: int, threshold: float,
                       library: str | None, gpu_id: int) -> tuple[dict[str, str], bool]:
    info, pre = manifest.engine, manifest.preprocess
    scale, offsets, exact = normalisation(manifest)
    props = {
        "gpu-id": str(gpu_id),
        "model-engine-file": keyfile_string(engine_name),
        "labelfile-path": "labels.txt",
        "batch-size": str(batch),
        "network-mode": str(NETWORK_MODE[info.precision]),
        "network-type": "1",                       # classifier
        "process-mode": "1",                       # primary: the whole frame
        "model-color-format": "0",                 # RGB
        "net-scale-factor": _number(scale),
        "offsets": ";".join(_number(o) for o in offsets),
        "infer-dims": f"3;{pre.img_size};{pre.img_size}",
        "output-blob-names": manifest.graph.output,
        "classifier-threshold": _number(threshold),
        "scaling-filter": str(SCALING_FILTER.get(pre.interpolation, 1)),
        "maintain-aspect-ratio": "0",
        "gie-unique-id": "1",
    }
    if library is not None:
        # nvinfer dlopens it before it deserializes the engine; the library registers RefinerDLA when loaded
        props["custom-lib-path"] = keyfile_string(library)
    if info.dla_core is not None:
        props["enable-dla"] = "1"
        props["use-dla-core"] = str(info.dla_core)
    return props, exact


def write_deepstream(engine: str | Path, out: str | Path, batch: int | None = None, threshold: float | None = None,
                     gpu_id: int | None = None) -> DeepStreamConfig:
    """Write DIR with the nvinfer configuration, the engine, labels, the plugin library (library form) and a README
    with a sample pipeline; earlier files of the same names are replaced only once the new ones are complete.
    None: batch the profile's maximum, threshold and gpu_id defaults.DEEPSTREAM_THRESHOLD and DEEPSTREAM_GPU_ID."""
    threshold = default(threshold, defaults.DEEPSTREAM_THRESHOLD)
    gpu_id = default(gpu_id, defaults.DEEPSTREAM_GPU_ID)
    from ..engine.checks import check_weights, read_engine_manifest

    if not math.isfinite(threshold):   # nvinfer would read 'nan' or 'inf' from the file and classify nothing
        raise InputError(f"--classifier-threshold must be a finite number (a logit), got {threshold}")
    check_range(gpu_id, 0, INT32_MAX, "--gpu-id")   # nvinfer reads it as a GLib integer (int32)
    engine, out = Path(engine), Path(out)
    manifest = read_engine_manifest(engine)
    info = manifest.engine
    check_weights(engine, manifest)   # nvinfer would run a weight-stripped plan without its weights
    # the config is the manifest's (precision, profile, plugin): it must be this engine's, as Triton and C++ check
    if manifest.sha256 and file_sha256(engine) != manifest.sha256:
        raise InputError(f"{engine.name} is not the engine its manifest describes (SHA-256 differs): rebuild with: "
                         f"{rebuild_line(engine, info.rebuild)}")
    check_file_name(engine.name, "the engine's file name")
    profile = info.profiles[0] if info.profiles else None
    top = profile.max[0] if profile else (manifest.graph.batch if isinstance(manifest.graph.batch, int) else 1)
    lo = profile.min[0] if profile else top
    batch = top if batch is None else batch
    if not lo <= batch <= top:
        raise InputError(f"--batch-size {batch} is outside the engine's profile ({lo}..{top})")
    if info.precision not in NETWORK_MODE:
        raise InputError(f"{engine.name}: unknown precision {info.precision!r} in its manifest")
    library = check_plugin_library(engine, manifest)
    if library is not None:
        check_file_name(library.name, "the plugin library's file name")
    lib_rel = f"plugins/{library.name}" if library is not None else None
    props, exact = nvinfer_properties(manifest, engine.name, batch, threshold, lib_rel, gpu_id)
    result = DeepStreamConfig(out, props, exact)
    if not exact:
        result.notes.append(f"std differs across channels ({manifest.preprocess.std}): nvinfer has one "
                            "net-scale-factor, so the configuration uses their mean and is APPROXIMATE; run the "
                            "normalisation in nvdspreprocess or a custom library for exact inputs")
    result.notes.append("nvinfer scales the whole frame to the input size; the manifest's resize-short-side + "
                        "center-crop is not expressible in nvinfer (crop upstream, e.g. nvvideoconvert src-crop)")
    if info.flavour != "tensorrt":
        result.notes.append(f"{engine.name} was built by {info.flavour}: nvinfer loads TensorRT engines only; build "
                            "with TensorRT on (or for) the Jetson to run it")
    if info.version_compatible:
        result.notes.append(f"{engine.name} is version-compatible: it loads only where the runtime allows the lean "
                            "runtime it carries (IRuntime::setEngineHostCodeAllowed), which nvinfer's config has no "
                            "key for and which was not checked here; for DeepStream prefer an engine built without "
                            "--version-compatible by the release's own TensorRT")
    if len(info.profiles) > 1:
        # nvinfer sets up its context in profile 0 and never switches, so batch-size is held to profile 0's range
        result.notes.append(f"{engine.name} has {len(info.profiles)} optimisation profiles and nvinfer runs profile 0 "
                            f"only (batch {lo}..{top}): for DeepStream, build with one --batch")
    if info.dla_core is not None:
        result.notes.append(f"the engine runs on DLA core {info.dla_core}: enable-dla=1, use-dla-core={info.dla_core}")

    files: dict[str, str | Path] = {CONFIG_NAME: _config_text(manifest, props, exact), engine.name: engine,
                                    "labels.txt": labels_text(manifest),
                                    "README.md": _readme(manifest, props, exact, result.notes)}
    if library is not None:
        files[lib_rel] = library
    publish_files(out, files)
    result.files = sorted(files)
    return result


def _config_text(manifest: Manifest, props: dict[str, str], exact: bool) -> str:
    pre = manifest.preprocess
    lines = [
        f"# nvinfer configuration written by refiner-edge deploy deepstream from {comment_text(manifest.artifact)}",
        f"# ({comment_text(manifest.model.variant)}@{pre.img_size}, {manifest.engine.precision}, "
        f"target {comment_text(manifest.engine.target)},",
        f"#  {manifest.engine.flavour} {manifest.engine.tensorrt_version}). Paths are relative to this file.",
        f"# Preprocessing: (pixel / 255 - mean {pre.mean}) / std {pre.std} = net-scale-factor * (pixel - offsets): "
        + ("exact." if exact else "APPROXIMATE (std differs across channels; the mean std is used)."),
        "# classifier-threshold compares the graph's raw logits (it has no softmax).",
        "[property]",
    ]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


def _readme(manifest: Manifest, props: dict[str, str], exact: bool, notes: list[str]) -> str:
    engine = props["model-engine-file"]
    batch = props["batch-size"]
    return f"""# {manifest.model.variant} in DeepStream

`{CONFIG_NAME}` is an nvinfer configuration for `{engine}` (a classifier on the whole frame, network-type=1).

A sample pipeline (DeepStream 7 on Jetson; on a dGPU replace nv3dsink with nveglglessink or fakesink):

    gst-launch-1.0 filesrc location=/opt/nvidia/deepstream/deepstream/samples/streams/sample_720p.h264 ! \\
      h264parse ! nvv4l2decoder ! m.sink_0 nvstreammux name=m batch-size={batch} width=1280 height=720 ! \\
      nvinfer config-file-path={CONFIG_NAME} ! nvvideoconvert ! nvdsosd ! nv3dsink

As a secondary classifier on detected objects instead, set process-mode=2 and operate-on-gie-id to the
detector's gie-unique-id.

## What was checked where

- Checked by refiner-edge (no DeepStream needed): the file's keys and values, read back with an INI parser;
  net-scale-factor and offsets reproduce the manifest's normalisation on test pixels
  ({"exactly" if exact else "only approximately: std differs across channels"}); the engine, labels and plugin
  library are the files the manifest names.
- Only on a Jetson or a DeepStream machine: that nvinfer loads the engine (same TensorRT version and GPU or DLA as
  the build: {manifest.engine.flavour} {manifest.engine.tensorrt_version}, sm {manifest.engine.compute_capability}),
  that custom-lib-path registers the plugin, and the pipeline itself.

## Notes

""" + "".join(f"- {n}\n" for n in notes)
