"""Checks an engine's manifest against the machine about to load it. An engine only runs on the GPU, TensorRT
and plugin library it was built for; anything else is one line ending in the command that rebuilds it, never a
crash inside TensorRT or silently wrong output."""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import file_sha256
from ..errors import InputError
from ..manifest import Manifest, profile_for, read_manifest


@dataclass(frozen=True)
class Runtime:
    """What the loading machine has."""

    flavour: str                      # tensorrt or tensorrt-rtx
    version: str
    compute_capability: str | None    # None: no GPU
    gpu: str = "this machine"


def _numbers(text: str) -> tuple[int, ...] | None:
    """'10.3.0' -> (10, 3, 0); None unless dot-separated runs of 1-9 ASCII digits (cpp/src/checks.cpp's parts)."""
    parts = text.split(".")
    if not all(p and len(p) <= 9 and p.isascii() and p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def _sm(cc: str) -> str:
    return "sm_" + cc.replace(".", "")


# The one engine-compatibility rule. Build (engine/build.py), these checks, the runner, deploy and the C++ library
# (cpp/src/checks.cpp, word for word) all call it; tests/data/engine_compat.json holds the cases both languages are
# tested against.

def tensorrt_release(version: str) -> tuple[int, int, int] | None:
    """major.minor.patch of a TensorRT version; None when it is not one.

    A plan loads only on the TensorRT release that built it: the same major.minor.patch. The fourth part, the build
    number, is left out: the C++ API (getInferLibVersion) and JetPack's python3-libnvinfer report three parts where
    a registry wheel reports four, and each release ships one build per platform, so 10.3.0 and 10.3.0.26 are the
    same TensorRT. Missing parts count as 0: 11.4 is 11.4.0, another release than 11.4.1.
    """
    numbers = _numbers(version)
    if numbers is None or len(numbers) > 4:
        return None
    major, minor, patch = (numbers + (0, 0))[:3]
    return major, minor, patch


def on_tensorrt_line(version: str, line: str) -> bool:
    """Whether `version` (10.3.0.26) is a release of a target row's TensorRT line (10.3, or 11 for all of 11.x)."""
    want = line.split(".")
    return version.split(".")[:len(want)] == want


def tensorrt_refusal(built_flavour: str, built_version: str, version_compatible: bool, flavour: str,
                     version: str) -> str | None:
    """Why TensorRT `flavour` `version` cannot load a plan built by `built_flavour` `built_version`, or None.

    A version-compatible plan (its lean runtime embedded) also loads on any later release: TensorRT's engine
    compatibility guide says a TensorRT 10 plan built so runs on TensorRT 11, and never on an earlier release."""
    if flavour != built_flavour:
        return f"was built by {built_flavour} and this is {flavour}"
    built, here = tensorrt_release(built_version), tensorrt_release(version)
    same = built is not None and built == here
    forward = version_compatible and built is not None and here is not None and here >= built
    if not (same or forward):
        return f"was built by {built_flavour} {built_version} and this is {version}"
    return None


def compute_capability_refusal(built_cc: str, hardware_compatibility: str, device: str, cc: str,
                               gpu: str) -> str | None:
    """Why a GPU of compute capability `cc` cannot run a plan built for `built_cc`, or None: the same compute
    capability, or (hardware compatibility ampere+) any from sm_80 on."""
    have, want = _numbers(cc), _numbers(built_cc)
    portable = hardware_compatibility == "ampere+" and have is not None and have[0] >= 8
    if (have is None or have != want) and not portable:
        return f"was built for {_sm(built_cc)} ({device}) and {gpu} is {_sm(cc)}"
    return None


def plugin_refusal(plugin_form: str, library: str, headers: str | None, built_version: str,
                   version: str) -> str | None:
    """Why a library-form plan's RefinerDLA library cannot run on TensorRT `version`, or None.

    ILogger and ILoggerFinder changed their layout in TensorRT 11.0, so a library compiled against one major's
    headers is undefined behaviour under another's runtime from its first logged message. A version-compatible
    10.x plan loads on TensorRT 11 only with a library built for 11: `headers` (the library's own report, recorded
    at build) must be of the running major. A library that did not report them (None, or not a version) is taken
    to be of the builder's major: it passes only where the running major is the builder's."""
    if plugin_form != "library":
        return None
    here, compiled = tensorrt_release(version), tensorrt_release(headers) if headers is not None else None
    if compiled is not None:
        if here is None or compiled[0] != here[0]:
            return (f"uses the RefinerDLA plugin library {library}, compiled against TensorRT {headers} headers, "
                    f"which runs only on TensorRT {compiled[0]}, and this is {version}")
        return None
    built = tensorrt_release(built_version)
    if built is None or here is None or built[0] != here[0]:
        return (f"uses the RefinerDLA plugin library {library}, which does not say which TensorRT headers it was "
                f"compiled against, and this is {version}, not the major of {built_version} that built the engine")
    return None


def plugin_library_path(engine: str | Path, recorded: str) -> Path:
    """The plugin library a manifest records. A relative path is taken against the engine's folder (so an engine
    and its library can move together, as in a Triton repository or a DeepStream folder), never against the
    working directory; the build records an absolute path."""
    path = Path(recorded)
    return path if path.is_absolute() else Path(engine).parent / path


def _unquote(token: str) -> str:
    """The text shlex.quote turned into `token` (its two forms: bare, or in single quotes with ' as '"'"')."""
    if len(token) >= 2 and token[0] == token[-1] == "'":
        return token[1:-1].replace("'\"'\"'", "'")
    return token


def rebuild_line(engine: str | Path, recorded: str) -> str:
    """The manifest's rebuild command, its `-o` naming `engine` where it now lies (absolute, normalised).

    An engine is often copied (into a Triton repository, onto a Jetson) with its manifest, whose line names the
    file it was first written to; rebuilding that one would leave the stale copy in place. The build ends the line
    with `-o` and one shlex.quote'd path, so the last ` -o ` followed by exactly one such token is replaced;
    any other line is printed as recorded. cpp/src/checks.cpp (rebuildLine) does the same, word for word."""
    head, sep, tail = recorded.rpartition(" -o ")
    while sep:
        if shlex.quote(_unquote(tail)) == tail:
            return f"{head} -o {shlex.quote(os.path.abspath(engine))}"
        head, sep, rest = head.rpartition(" -o ")
        tail = f"{rest} -o {tail}"
    return recorded


def read_engine_manifest(engine: str | Path) -> Manifest:
    path = Path(engine)
    if not path.is_file():
        raise InputError(f"engine not found: {path}")
    manifest = read_manifest(path, required=True, verify=False)  # check_engine compares the hash, saying how to rebuild
    if manifest.stage != "build" or manifest.engine is None:
        article = "an" if manifest.stage[:1] in "aeiou" else "a"
        raise InputError(f"{path.name}'s manifest is {article} {manifest.stage} manifest, not an engine's")
    return manifest


def check_weights(engine: str | Path, manifest: Manifest) -> None:
    """A weight-stripped engine (build --strip-weights) is refused before TensorRT, with the `refit` line that
    fills its weights in: TensorRT would load it and compute with missing weights."""
    info = manifest.engine
    if info.weights == "stripped":
        source = shlex.quote(info.weights_onnx) if info.weights_onnx else "MODEL.onnx"
        raise InputError(f"{Path(engine).name} is a weight-stripped engine: fill its weights in first: refiner-edge "
                         f"refit {shlex.quote(str(engine))} --onnx {source} -o FULL.engine")


def check_engine(engine: str | Path, manifest: Manifest, runtime: Runtime, hash_file: bool = True,
                 stripped: bool = False) -> None:
    """InputError '... : rebuild with: refiner-edge build ...' when `engine` cannot load correctly on `runtime`
    (`stripped`: a weight-stripped engine is what the caller, refit, expects)."""
    info, name = manifest.engine, Path(engine).name
    if not stripped:
        check_weights(engine, manifest)

    def stale(why: str) -> InputError:
        return InputError(f"{name} {why}: rebuild with: {rebuild_line(engine, info.rebuild)}")

    if hash_file and manifest.sha256 and file_sha256(engine) != manifest.sha256:
        raise stale("is not the engine its manifest describes (SHA-256 differs)")
    why = tensorrt_refusal(info.flavour, info.tensorrt_version, info.version_compatible, runtime.flavour,
                           runtime.version)
    if why:
        raise stale(why)
    if runtime.compute_capability is None:
        raise InputError(f"{name} runs on a CUDA GPU ({_sm(info.compute_capability)}) and {runtime.gpu} has none")
    why = compute_capability_refusal(info.compute_capability, info.hardware_compatibility, info.device,
                                     runtime.compute_capability, runtime.gpu)
    if why:
        raise stale(why)
    check_plugin_library(engine, manifest)
    why = plugin_refusal(info.plugin_form, info.plugin_library or "None", info.plugin_tensorrt_version,
                         info.tensorrt_version, runtime.version)
    if why:
        raise stale(why)


def check_plugin_library(engine: str | Path, manifest: Manifest) -> Path | None:
    """The plugin library a library-form engine needs (None for the other forms), or InputError with the rebuild
    line when it is missing or is not the one the engine was built with. The runner, the checks and deploy call it."""
    info = manifest.engine
    if info.plugin_form != "library":
        return None
    library = plugin_library_path(engine, info.plugin_library or "")
    why = None
    if not info.plugin_library or not library.is_file():
        why = f"needs the RefinerDLA plugin library {info.plugin_library}, which is missing"
    elif info.plugin_sha256 and file_sha256(library) != info.plugin_sha256:
        why = f"was built with another RefinerDLA plugin library than {info.plugin_library} (SHA-256 differs)"
    if why:
        raise InputError(f"{Path(engine).name} {why}: rebuild with: {rebuild_line(engine, info.rebuild)}")
    return library


def batch_in_profile(manifest: Manifest, batch: int, image: tuple[int, ...] | None = None) -> None:
    """A batch outside the engine's optimisation profile, or (`image`: one image's shape) images of another shape
    than its input, are refused before TensorRT, and the runner's copy into buffers sized for the profile, see them."""
    profiles = manifest.engine.profiles
    profile = profiles[-1]
    if profile_for(profiles, batch) is None:
        lo, hi = min(p.min[0] for p in profiles), max(p.max[0] for p in profiles)
        raise InputError(f"batch {batch} is outside the engine's profile{'s' if len(profiles) > 1 else ''} "
                         f"({lo}..{hi}): use --batch-size within it, or rebuild with a wider --batch MIN:OPT:MAX")
    want = tuple(profile.max[1:])
    if image is not None and tuple(image) != want:
        raise InputError(f"images of shape {'x'.join(map(str, image))} do not fit the engine's input "
                         f"{'x'.join(map(str, want))}: preprocess them as its manifest says (refiner-edge preprocess "
                         "--engine ...)")
