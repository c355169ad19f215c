"""`refiner-edge deploy triton`: a Triton Inference Server model repository made from an artifact's manifest.

    REPO/NAME/config.pbtxt           the model: tensorrt_plan (an engine) or onnxruntime_onnx (a graph)
    REPO/NAME/1/model.plan|onnx      the artifact, byte for byte (an engine stays raw: Triton loads it as it is)
    REPO/NAME/labels.txt             class names in index order (Triton's classification extension reads them)
    REPO/NAME/plugins/<library>      library-form engines: the RefinerDLA plugin library the engine needs
    REPO/NAME_preprocess/            Python backend: encoded image bytes -> the preprocessed tensor, the manifest's
                                     preprocessing by the package's own images/transform.py, copied beside the
                                     model (Pillow + NumPy, no refiner-edge in the server)
    REPO/NAME_ensemble/              ensemble: encoded image -> NAME_preprocess -> NAME -> logits

Names, dims and types come from the manifest (graph.input/output, model.img_size, model.num_classes); the
batch limits from graph.batch and, for engines, the optimisation profiles (max_batch_size: the last profile's
MAX; an engine with several profiles lists them all in its instance_group's `profile`, so Triton's TensorRT backend
makes a context for each and runs a request in one that holds its batch). The model folders are written to a
temporary folder beside REPO and each renamed into place, so a failed run leaves no half-written model, and the
other models of an existing repository stay as they are.

A library-form engine needs its plugin library loaded before Triton deserializes it: `tritonserver
--backend-config=tensorrt,plugins=/models/NAME/plugins/libX.so` (or `LD_PRELOAD=` that path; the library registers
RefinerDLA when it is loaded). A version-compatible engine carries its own lean runtime, which Triton runs only with
`--backend-config=tensorrt,version-compatible=true`. An AOT-form engine carries its kernel inside it, and a plain
engine has no plugin: nothing to load. The options a repository needs are printed and written at the top of
NAME/config.pbtxt (a comment), so the repository itself says how to start the server.

Names and numbers are checked as Triton and PyTriton take them, before anything is written: a model name is
letters, digits, '.', '_' and '-' (PyTriton's rule; nothing that can end a pbtxt string or a path component), and
max_batch_size, instance counts and the queue delay fit their protobuf fields.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .. import defaults
from ..artifacts import publish_files
from ..defaults import default
from ..engine.checks import check_plugin_library
from ..errors import InputError
from ..images import transform
from ..images.labels import labels_text
from ..manifest import Manifest, read_manifest

IMAGE_INPUT = "image"
PREPROCESSED = "preprocessed"
CONTAINER_REPO = "/models"   # where the repository is mounted in NVIDIA's container (docs/serving.md)
# PyTriton's model-name rule (it refuses anything else); Triton takes the name as a folder and a pbtxt string
MODEL_NAME = re.compile(r"[A-Za-z0-9._-]+")
NAME_LIMIT = 200               # NAME_preprocess must still fit a file name (255 bytes)
INT32_MAX = 2**31 - 1          # max_batch_size and instance_group count are int32 in Triton's model config
QUEUE_DELAY_MAX_US = (2**64 - 1) // 1000   # uint64, and Triton counts it in nanoseconds (x 1000) in a uint64


@dataclass
class RepositoryOptions:
    """How `deploy triton` writes the repository; None for an option: its default (defaults.py)."""
    name: str | None = None
    max_batch: int | None = None          # None: defaults.TRITON_MAX_BATCH, capped by an engine's profile maximum
    preferred_batch: tuple[int, ...] = ()
    queue_delay_us: int | None = None
    instances: int | None = None
    kind: str | None = None               # "gpu" or "cpu"; None: gpu (an engine runs only on a GPU)
    ensemble: bool | None = None

    def __post_init__(self):
        self.ensemble = default(self.ensemble, defaults.TRITON_ENSEMBLE)
        self.name = default(self.name, defaults.TRITON_NAME)
        self.queue_delay_us = default(self.queue_delay_us, defaults.TRITON_QUEUE_DELAY_US)
        self.instances = default(self.instances, defaults.TRITON_INSTANCES)


@dataclass
class Repository:
    path: Path
    name: str
    platform: str
    max_batch: int
    files: list[str] = field(default_factory=list)
    plugin_library: str | None = None     # inside the repository, for --backend-config
    version_compatible: bool = False      # a version-compatible engine: Triton must be told to run its lean runtime
    notes: list[str] = field(default_factory=list)

    def backend_config(self) -> list[str]:
        """The tritonserver options this model needs to load (none for an ONNX graph or a plain engine)."""
        return server_options(self.plugin_library, self.version_compatible)

    def server_command(self, image: str = "nvcr.io/nvidia/tritonserver:<yy.mm>-py3") -> str:
        options = "".join(f" {o}" for o in self.backend_config())
        return (f"docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 "
                f"-v {shlex.quote(f'{self.path.resolve()}:{CONTAINER_REPO}')} {image} "
                f"tritonserver --model-repository={CONTAINER_REPO}{options}")

    def to_dict(self) -> dict:
        return {"repository": str(self.path), "name": self.name, "platform": self.platform,
                "max_batch": self.max_batch, "files": self.files, "plugin_library": self.plugin_library,
                "version_compatible": self.version_compatible, "backend_config": self.backend_config(),
                "server_command": self.server_command(), "notes": self.notes}


def server_options(plugin_library: str | None, version_compatible: bool) -> list[str]:
    """--backend-config options for the tensorrt backend: `plugins=` dlopens the RefinerDLA library (which
    registers its creator when loaded) before the plan is deserialized; `version-compatible=true` lets the backend
    run the lean runtime a version-compatible plan carries (it refuses such a plan otherwise)."""
    options = []
    if plugin_library:   # quoted for the shell: the printed line is meant to be pasted
        options.append(shlex.quote(f"--backend-config=tensorrt,plugins={CONTAINER_REPO}/{plugin_library}"))
    if version_compatible:
        options.append("--backend-config=tensorrt,version-compatible=true")
    return options


def pbtxt_string(text: str) -> str:
    """`text` as a protobuf text-format string literal: quotes, backslashes and control characters escaped, so a
    name from a manifest can never end the string and write fields of its own."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def comment_text(text: str) -> str:
    """`text` on one comment line: control characters (a newline would start a line of fields) shown as '?'."""
    return "".join("?" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in str(text))


def check_model_name(name: str, option: str = "--name") -> None:
    """A Triton model name as PyTriton takes it: letters, digits, '.', '_', '-', not starting with '.'."""
    if not name or not MODEL_NAME.fullmatch(name) or name.startswith(".") or len(name) > NAME_LIMIT:
        raise InputError(f"{option} must be 1-{NAME_LIMIT} letters, digits, '.', '_' or '-' (not starting with '.'), "
                         f"a name Triton takes as a folder and a config string; got {name!r}")


def check_range(value: int, low: int, high: int, option: str) -> None:
    if not low <= value <= high:
        raise InputError(f"{option} must be between {low} and {high}, got {value}")


def batch_limits(manifest: Manifest, requested: int | None) -> int:
    """The config's max_batch_size: 0 for a fixed-batch graph (full shapes, no batching), else 1..the profile max."""
    graph, engine = manifest.graph, manifest.engine
    if graph.batch != "dynamic":
        if requested not in (None, 0):
            raise InputError(f"the graph's batch is fixed at {graph.batch}: Triton cannot batch it (export with a "
                             "dynamic batch, or drop --max-batch)")
        return 0
    top = None
    if engine is not None and engine.profiles:
        # build's profiles run from the first's MIN to the last's MAX without a gap (engine/plan.py check_profiles)
        first = engine.profiles[0]
        lo, top = first.min[0], engine.profiles[-1].max[0]
        if lo > 1:
            raise InputError(f"the engine's profile starts at batch {lo}; Triton sends batches from 1: rebuild with "
                             f"--batch 1:{first.opt[0]}:{first.max[0]}")
    fallback = defaults.TRITON_MAX_BATCH
    size = requested if requested is not None else min(fallback, top or fallback)
    if size < 1:
        raise InputError(f"--max-batch must be at least 1, got {size}")
    if top is not None and size > top:
        raise InputError(f"--max-batch {size} is over the engine's profile maximum ({top}): use --max-batch {top} or "
                         "rebuild with a larger --batch")
    return size


def _dims(values) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]"


def batch_lead(manifest: Manifest, max_batch: int) -> list[int]:
    """The leading dims of every tensor in the configs: none when Triton batches (max_batch_size > 0, the batch is
    implicit), else the graph's fixed batch, written out (max_batch_size 0: Triton takes dims as full shapes)."""
    return [] if max_batch else [int(manifest.graph.batch)]


def model_config(manifest: Manifest, options: RepositoryOptions, platform: str, max_batch: int,
                 filename: str, backend_config: list[str] = ()) -> str:
    graph, size, classes = manifest.graph, manifest.preprocess.img_size, manifest.model.num_classes
    lead = batch_lead(manifest, max_batch)
    kind = "KIND_CPU" if options.kind == "cpu" else "KIND_GPU"
    lines = [
        f"# Written by refiner-edge deploy triton from {comment_text(manifest.artifact)} "
        f"({comment_text(manifest.model.variant)}, {comment_text(graph.precision)}, sha256 {manifest.sha256[:12]})",
    ]
    if backend_config:
        lines.append(f"# Load it with: tritonserver --model-repository={CONTAINER_REPO} {' '.join(backend_config)}")
    lines += [
        f"name: {pbtxt_string(options.name)}",
        f'platform: "{platform}"',
        f'default_model_filename: "{filename}"',
        f"max_batch_size: {max_batch}",
        "input [",
        f'  {{ name: {pbtxt_string(graph.input)} data_type: TYPE_FP32 dims: {_dims(lead + [3, size, size])} }}',
        "]",
        "output [",
        f'  {{ name: {pbtxt_string(graph.output)} data_type: TYPE_FP32 dims: {_dims(lead + [classes])} '
        'label_filename: "labels.txt" }',
        "]",
    ]
    if max_batch:
        preferred = f"preferred_batch_size: {_dims(options.preferred_batch)} " if options.preferred_batch else ""
        lines.append(f"dynamic_batching {{ {preferred}max_queue_delay_microseconds: {options.queue_delay_us} }}")
    engine = manifest.engine
    # every profile of an engine that has several, named as Triton's instance_group `profile` field takes them, so
    # that each instance may run a request in any profile that holds its batch
    profiles = (" profile: [ " + ", ".join(f'"{i}"' for i in range(len(engine.profiles))) + " ]"
                if engine is not None and len(engine.profiles) > 1 else "")
    lines.append(f"instance_group [ {{ count: {options.instances} kind: {kind}{profiles} }} ]")
    return "\n".join(lines) + "\n"


def preprocess_config(manifest: Manifest, options: RepositoryOptions, max_batch: int) -> str:
    size = manifest.preprocess.img_size
    lead = batch_lead(manifest, max_batch)
    pre = json.dumps({k: getattr(manifest.preprocess, k) for k in
                      ("img_size", "crop_pct", "resize_size", "mean", "std", "interpolation")})
    lines = [
        f"# Written by refiner-edge deploy triton: encoded images -> {options.name}'s input tensor",
        f"name: {pbtxt_string(options.name + '_preprocess')}",
        'backend: "python"',
        f"max_batch_size: {max_batch}",
        # batched: [1] per request (the batch is implicit); fixed batch B: the B images of the one request
        f'input [ {{ name: "{IMAGE_INPUT}" data_type: TYPE_STRING dims: {_dims(lead or [1])} }} ]',
        f'output [ {{ name: "{PREPROCESSED}" data_type: TYPE_FP32 dims: {_dims(lead + [3, size, size])} }} ]',
    ]
    if max_batch:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {options.queue_delay_us} }}")
    lines += [
        f"instance_group [ {{ count: {options.instances} kind: KIND_CPU }} ]",
        f"parameters {{ key: \"preprocess\" value {{ string_value: {pbtxt_string(pre)} }} }}",
    ]
    return "\n".join(lines) + "\n"


def ensemble_config(manifest: Manifest, options: RepositoryOptions, max_batch: int) -> str:
    graph, classes = manifest.graph, manifest.model.num_classes
    lead = batch_lead(manifest, max_batch)
    output = pbtxt_string(graph.output)
    return "\n".join([
        f"# Written by refiner-edge deploy triton: send encoded image bytes, get {options.name}'s logits",
        f"name: {pbtxt_string(options.name + '_ensemble')}",
        'platform: "ensemble"',
        f"max_batch_size: {max_batch}",
        f'input [ {{ name: "{IMAGE_INPUT}" data_type: TYPE_STRING dims: {_dims(lead or [1])} }} ]',
        f'output [ {{ name: {output} data_type: TYPE_FP32 dims: {_dims(lead + [classes])} '
        'label_filename: "labels.txt" } ]',
        "ensemble_scheduling {",
        "  step [",
        f"    {{ model_name: {pbtxt_string(options.name + '_preprocess')} model_version: -1 "
        f'input_map {{ key: "{IMAGE_INPUT}" value: "{IMAGE_INPUT}" }} '
        f'output_map {{ key: "{PREPROCESSED}" value: "{PREPROCESSED}" }} }},',
        f"    {{ model_name: {pbtxt_string(options.name)} model_version: -1 "
        f'input_map {{ key: {pbtxt_string(graph.input)} value: "{PREPROCESSED}" }} '
        f"output_map {{ key: {output} value: {output} }} }}",
        "  ]",
        "}",
    ]) + "\n"


# The Python-backend model runs the package's own decoding and transform: refiner_edge/images/transform.py, which
# imports only Pillow and NumPy, is copied beside it (the server needs no refiner-edge). A request whose bytes do not
# decode gets its own error response.
TRANSFORM_FILE = "refiner_edge_transform.py"
PREPROCESS_MODEL = '''"""Encoded image bytes -> the preprocessed FP32 [3, S, S] tensor (by refiner-edge deploy triton).

Decoding and transform are refiner-edge's own: TRANSFORM_FILE beside this file is refiner_edge/images/transform.py
as it is. The parameters come from config.pbtxt's "preprocess" parameter (the artifact's manifest). Needs Pillow and
NumPy in the Python backend's environment (pip install pillow in NVIDIA's container).
"""
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

_spec = importlib.util.spec_from_file_location("refiner_edge_transform", Path(__file__).with_name("TRANSFORM_FILE"))
transform = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(transform)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        pre = json.loads(config["parameters"]["preprocess"]["string_value"])
        if transform.resize_size(pre["img_size"], pre["crop_pct"]) != pre["resize_size"]:
            raise ValueError(f"inconsistent preprocess parameter: {pre}")
        self.params = {k: pre[k] for k in ("img_size", "crop_pct", "mean", "std", "interpolation")}

    def execute(self, requests):
        responses = []
        for request in requests:
            encoded = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
            try:
                batch = np.stack([transform.evaluate(transform.decode(io.BytesIO(bytes(b))), **self.params)
                                  for b in encoded])
            except Exception as e:   # an undecodable image fails its own request only
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"not a decodable image: {e}")))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("preprocessed", batch)]))
        return responses
'''.replace("TRANSFORM_FILE", TRANSFORM_FILE)


def write_repository(artifact: str | Path, out: str | Path, options: RepositoryOptions | None = None) -> Repository:
    """Write the model repository for `artifact` (an engine from `build` or an ONNX graph with a manifest) to
    `out`, replacing an earlier one only once the new one is complete."""
    options = options or RepositoryOptions()
    artifact, out = Path(artifact), Path(out)
    if not artifact.is_file():
        raise InputError(f"not found: {artifact}")
    manifest = read_manifest(artifact, required=True)
    check_options(artifact, manifest, options)
    max_batch = batch_limits(manifest, options.max_batch)
    bad = [b for b in options.preferred_batch if not 1 <= b <= max_batch]
    if bad:
        raise InputError(f"--preferred-batch sizes must be between 1 and the max batch {max_batch}, got {bad}")
    is_engine = manifest.engine is not None
    platform, filename = ("tensorrt_plan", "model.plan") if is_engine else ("onnxruntime_onnx", "model.onnx")
    repo = Repository(out, options.name, platform, max_batch, notes=engine_notes(artifact, manifest))
    library = None
    if is_engine and manifest.engine.plugin_form == "library":
        library = check_plugin_library(artifact, manifest)
        check_file_name(library.name, "the plugin library's file name")
        if ";" in library.name:   # plugins= takes a ;-separated list of libraries
            raise InputError(f"the plugin library's file name {library.name!r} holds a ';', which Triton's "
                             "plugins= option reads as a separator: rename the file")
        repo.plugin_library = f"{options.name}/plugins/{library.name}"
    repo.version_compatible = bool(is_engine and manifest.engine.version_compatible)
    files: dict[str, str | Path] = {
        f"{options.name}/config.pbtxt": model_config(manifest, options, platform, max_batch, filename,
                                                     repo.backend_config()),
        f"{options.name}/1/{filename}": artifact,
        f"{options.name}/labels.txt": labels_text(manifest),
    }
    if library is not None:
        files[repo.plugin_library] = library
    folders = []
    if options.ensemble:
        files.update(ensemble_files(manifest, options, max_batch))
        folders.append(f"{options.name}_ensemble/1")   # an ensemble still needs a version folder
    publish_files(out, files, folders)
    repo.files = sorted(files)
    return repo


def check_options(artifact: Path, manifest: Manifest, options: RepositoryOptions) -> None:
    """Refuse options this artifact cannot be served with, before anything is written."""
    is_engine = manifest.engine is not None
    if is_engine:   # Triton would load a weight-stripped plan and serve it without its weights
        from ..engine.checks import check_weights

        check_weights(artifact, manifest)
    check_model_name(options.name)
    check_range(options.instances, 1, INT32_MAX, "--instances")
    check_range(options.queue_delay_us, 0, QUEUE_DELAY_MAX_US, "--queue-delay-us")
    if options.max_batch is not None:
        check_range(options.max_batch, 0, INT32_MAX, "--max-batch")
    if options.kind not in (None, "gpu", "cpu"):
        raise InputError(f"--kind must be gpu or cpu, got {options.kind}")
    if is_engine and options.kind == "cpu":
        raise InputError("a TensorRT engine runs on a GPU only: drop --kind cpu (or deploy the ONNX graph)")
    if not is_engine and manifest.graph.fused:
        # its RefinerDLA nodes run on ONNX Runtime only through refiner-edge's Python op (onnxruntime-extensions),
        # which Triton's onnxruntime backend cannot load
        raise InputError(f"{artifact.name} is a fused graph (RefinerDLA nodes): Triton's onnxruntime backend cannot "
                         "run them; deploy the unfused graph, or build an engine from it and deploy --engine")


def check_file_name(name: str, what: str) -> None:
    """A file name a config line names: no control character (a newline would end the line and start another)."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise InputError(f"{what} {name!r} holds a control character (a newline?), which a config file cannot hold: "
                         "rename the file")


def engine_notes(artifact: Path, manifest: Manifest) -> list[str]:
    """What a user must know to serve this engine with Triton (nothing for an ONNX graph)."""
    engine, notes = manifest.engine, []
    if engine is None:
        return notes
    if engine.plugin_form == "aot":
        notes.append("AOT-plugin engine: the kernel is inside the engine, no plugin library to load")
    if engine.plugin_form == "library":
        notes.append("library-form engine: tritonserver must load the RefinerDLA plugin library copied into the "
                     "repository (--backend-config=tensorrt,plugins=..., in the command below and atop config.pbtxt)")
    if engine.version_compatible:
        notes.append("version-compatible engine: tritonserver needs --backend-config=tensorrt,version-compatible=true "
                     "to run the lean runtime it carries (in the command below and atop config.pbtxt)")
    if engine.flavour != "tensorrt":
        notes.append(f"{artifact.name} was built by {engine.flavour}: Triton's tensorrt backend loads TensorRT engines "
                     "only; build with TensorRT (the container's version) to serve it")
    if engine.dla_core is not None:
        notes.append(f"the engine runs on DLA core {engine.dla_core} (Jetson Orin): Triton on Jetson serves it; a "
                     "datacenter GPU cannot")
    return notes


def ensemble_files(manifest: Manifest, options: RepositoryOptions, max_batch: int) -> dict[str, str | Path]:
    """NAME_preprocess (the Python backend running images/transform.py) and NAME_ensemble (encoded image -> logits)."""
    return {
        f"{options.name}_preprocess/config.pbtxt": preprocess_config(manifest, options, max_batch),
        f"{options.name}_preprocess/1/model.py": PREPROCESS_MODEL,
        f"{options.name}_preprocess/1/{TRANSFORM_FILE}": Path(transform.__file__),
        f"{options.name}_ensemble/config.pbtxt": ensemble_config(manifest, options, max_batch),
        f"{options.name}_ensemble/labels.txt": labels_text(manifest),
    }
