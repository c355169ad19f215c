"""Plugin forms of the fused RefinerDLA node, as the build and the runner see them.

- `library`: the IPluginV3 library built with CMake from plugins/refiner_dla, loaded before parsing and again before
  the engine is deserialized; its path and SHA-256 go into the engine's manifest.
- `aot`: the ahead-of-time plugin of the Triton kernel (refiner_edge.refine.aot, TensorRT >= 10.9): the kernel's
  PTX is embedded in the engine, which then needs no library at run time.
- `none`: the plain graph, no plugin. TensorRT-RTX has no custom plugins, so its targets build only this form.
"""
from __future__ import annotations

import ctypes
import importlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..artifacts import file_sha256
from ..errors import InputError, MissingDependencyError, RefinerEdgeError, VerificationError
from ..extras import PLATFORM_HINT
from ..refine import plugin_form
from ..source import SOURCE_ROOT
from .checks import tensorrt_release
from .targets import AOT_MIN_TENSORRT, Target, tensorrt_at_least

FORMS = (*plugin_form.FORMS, "none")  # "none": an engine without the plugin (a plain graph)
LIBRARY_ENV = "REFINER_DLA_PLUGIN"      # a prebuilt library, e.g. from a C++ build tree
TENSORRT_ROOT_ENV = "TensorRT_ROOT"     # TensorRT include/ and lib/, as plugins/refiner_dla/CMakeLists.txt reads it
ROOT = SOURCE_ROOT   # the repository root in a checkout: plugins/ and build/ are there
SOURCE_DIR = ROOT / "plugins" / "refiner_dla"
# The one build folder of the library, the same in the plugin's README and CMakeLists, cpp/README.md and
# docs/jetson.md: build/plugin at the top of the source checkout (not the working directory).
BUILD_DIR = ROOT / "build" / "plugin"
BUILD_COMMAND = "cmake -S plugins/refiner_dla -B build/plugin && cmake --build build/plugin -j"
VERSION_SYMBOL = "refinerEdgePluginTensorRTVersion"   # the library's TensorRT headers, "MAJOR.MINOR.PATCH"
LIBRARY_NAMES = ("librefiner_edge_plugin.so", "refiner_edge_plugin.dll")   # plugins/refiner_dla/CMakeLists.txt


@dataclass
class Plugin:
    form: str
    library: Path | None = None
    sha256: str | None = None
    setup: dict | None = None      # aot: what refiner_edge.refine.aot.register returned (the PTX's cc and version)

    def libraries(self) -> list[str]:
        return [str(self.library)] if self.library else []


_aot_registered = False   # whether this process registered the AOT form's RefinerDLA creator (prepare)


def load_library(registry, library: str | Path, fix: str) -> None:
    """Register the RefinerDLA library's creators in `registry` (TensorRT's global one, or a runtime's own for a
    version-compatible plan). The library exports getCreators (IPluginV3), so it goes through the registry: a bare
    dlopen, which is what Polygraphy's LoadPlugins does, registers nothing.

    IPluginRegistry::loadLibrary returns null both when the library cannot be loaded and when one of its creators
    is already registered, which is the case for the second build or runner in one process. So a null is a failure
    only when RefinerDLA is not in the registry afterwards. `fix` ends the error line."""
    from ..refine import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION

    if registry.load_library(str(library)) is not None:
        return
    if _aot_registered:
        # the AOT form registers a creator of the same name, version and namespace, so the lookup below would
        # take the AOT plugin for the library and an engine built or run here would use the wrong one
        raise InputError(f"the RefinerDLA plugin library {library} cannot load beside the aot plugin form, which "
                         "this process registered first: build or run library-form engines in another process")
    find = getattr(registry, "get_creator", None) or registry.get_plugin_creator   # get_creator: TensorRT 10.0+
    if find(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE) is None:
        raise InputError(f"TensorRT could not load the plugin library {library}: {fix}")


def library_tensorrt_version(library: str | Path) -> str | None:
    """The TensorRT headers the RefinerDLA library was compiled against ("10.13.3"), as it reports them through
    `extern "C" char const* refinerEdgePluginTensorRTVersion()`; None when it does not say (a library built before
    it exported the symbol, or one that cannot be loaded here: TensorRT's registry then reports the failure).

    Recorded in the engine's manifest: ILogger and ILoggerFinder changed their layout in TensorRT 11.0, so a
    library runs only on the TensorRT major whose headers it was compiled against (engine/checks.py
    plugin_refusal)."""
    try:
        handle = ctypes.CDLL(str(library))
        report = getattr(handle, VERSION_SYMBOL)
    except (OSError, AttributeError):
        return None
    report.argtypes, report.restype = [], ctypes.c_char_p
    value = report()
    try:
        text = value.decode("ascii") if value else ""
    except UnicodeDecodeError:
        return None
    return text if tensorrt_release(text) is not None else None


def choose_form(target: Target, asked: str | None, *, fused: bool | None, weak: bool = False,
                graph: str = "the graph", graph_form: str | None = None,
                builder_version: Callable[[], str] | None = None, probe: bool = True,
                note: Callable[[str], None] = lambda message: None) -> str:
    """The one plugin-form decision, with its refusals, each naming the one fix.

    `fused`: whether the graph given has RefinerDLA nodes (`graph_form`: the form they were written in, from its
    manifest); None for the chain, which makes the graph the form needs. A form asked for is used or refused.
    Otherwise a fused graph takes the target's form and a plain one none; the chain takes the target's form when
    it is available here (`available`, which registers nothing; `builder_version` gives the builder's version),
    else the plain graph, with a note (`probe=False`: the target's form, unprobed). TensorRT-RTX has no custom
    plugins, and a weakly typed build parses the plain graph, so both make plain graphs."""
    if asked is not None and asked not in FORMS:
        raise InputError(f"unknown plugin form '{asked}'; choose one of: {', '.join(FORMS)}")
    if target.rtx and fused:
        raise InputError(f"{graph} has fused RefinerDLA nodes and TensorRT-RTX ({target.name}) has no custom "
                         "plugins: build the plain graph (`refiner-edge export` without --fuse, or --plugin none "
                         "with no --onnx)")
    if fused is None:
        form = asked or ("none" if target.rtx else target.plugin)
    else:
        form = asked or (target.plugin if fused and not target.rtx else "none")
    if target.rtx and form != "none":
        raise InputError(f"TensorRT-RTX ({target.name}) has no custom plugins: use --plugin none")
    if fused is None:
        if weak:
            return "none"   # a weakly typed build parses the plain graph: no RefinerDLA nodes
        if probe and asked is None and form != "none":
            try:
                available(form, builder_version() if builder_version else None)
            except RefinerEdgeError as e:
                note(f"building the plain graph: the {form} plugin form is not available ({e})")
                return "none"
        return form
    if fused and form == "none":
        raise InputError(f"{graph} has fused RefinerDLA nodes: build it with --plugin library or --plugin aot, "
                         "or build the plain graph")
    if not fused and form != "none":
        raise InputError(f"--plugin {form} needs a fused graph and {graph} has no RefinerDLA nodes: fuse it "
                         "(`refiner-edge fuse`) or use --plugin none")
    if fused and graph_form is not None and graph_form != form:
        raise InputError(f"{graph}'s RefinerDLA nodes are in the {graph_form} plugin form, not {form}: fuse "
                         f"the graph with `refiner-edge fuse --plugin-form {form}`")
    return form


def available(form: str, tensorrt_version: str | None) -> None:
    """Raise what `prepare(form)` would raise for a missing piece, without building or registering anything:
    the library built (not building it), or TensorRT >= 10.9 with tensorrt.plugin, Triton and the AOT module."""
    if form == "library":
        find_library(build=False)
    elif form == "aot":
        check_aot_version(tensorrt_version)
        import_aot().available()


def prepare(form: str, tensorrt_version: str | None = None, portable_cc: int | None = None,
            min_cuda: str | None = None) -> Plugin:
    """What the build needs for `form`: the library found (or built), or the AOT module set up (its PTX compiled
    for `portable_cc` where the engine must run on every GPU from that compute capability on)."""
    if form == "none":
        return Plugin("none")
    if form == "library":
        library = find_library(build=True)
        return Plugin("library", library, file_sha256(library))
    check_aot_version(tensorrt_version)
    global _aot_registered
    aot = import_aot()
    setup = aot.register(portable_cc, min_cuda)
    _aot_registered = True
    return Plugin("aot", setup=setup)


def check_aot_version(tensorrt_version: str | None) -> None:
    if tensorrt_version is not None and not tensorrt_at_least(tensorrt_version, AOT_MIN_TENSORRT):
        raise InputError(f"the aot plugin form needs TensorRT >= 10.9 and this is {tensorrt_version}: use --plugin "
                         "library")


def import_aot():
    """refiner_edge.refine.aot (the Triton kernel's AOT plugin), imported on use."""
    try:
        return importlib.import_module("refiner_edge.refine.aot")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("refiner_edge"):
            raise MissingDependencyError("the aot plugin form needs refiner_edge.refine.aot (the Triton kernel's "
                                         "AOT plugin), which this installation lacks: use --plugin library") from None
        raise MissingDependencyError(f"the aot plugin form needs {e.name} ({PLATFORM_HINT})") from None


def find_library(build: bool = False) -> Path:
    """$REFINER_DLA_PLUGIN (a relative path: against the working directory, as any path given in the environment),
    else the CMake build in build/plugin of the source checkout, else (build=True) build it there when TensorRT's
    headers are found ($TENSORRT_ROOT/include or the system's). The path is returned absolute: the manifest
    records it so, and the checks read it the same way from any folder."""
    given = os.environ.get(LIBRARY_ENV)
    if given:
        path = Path(given).resolve()
        if not path.is_file():
            raise InputError(f"${LIBRARY_ENV} names {given}, which does not exist")
        return path
    for name in LIBRARY_NAMES:
        if (BUILD_DIR / name).is_file():
            return BUILD_DIR / name
    if not build:
        raise InputError(f"no RefinerDLA plugin library: build it ({BUILD_COMMAND}) or set ${LIBRARY_ENV}")
    return build_library(BUILD_DIR)


def tensorrt_headers() -> Path | None:
    roots = [os.environ.get(TENSORRT_ROOT_ENV), "/usr", "/usr/local/tensorrt", "/opt/tensorrt"]
    for root in filter(None, roots):
        for include in (Path(root) / "include", Path(root) / "include" / "aarch64-linux-gnu",
                        Path(root) / "include" / "x86_64-linux-gnu"):
            if (include / "NvInferRuntime.h").is_file():
                return include
    return None


def build_library(build_dir: Path) -> Path:
    if not (SOURCE_DIR / "CMakeLists.txt").is_file():
        raise MissingDependencyError("the RefinerDLA plugin sources (plugins/refiner_dla) are not in this "
                                     f"installation: build the library from a source checkout and set ${LIBRARY_ENV}")
    include = tensorrt_headers()
    if include is None or shutil.which("cmake") is None:
        raise MissingDependencyError("building the RefinerDLA plugin library needs cmake and TensorRT's headers "
                                     f"(set ${TENSORRT_ROOT_ENV}); or set ${LIBRARY_ENV} to a built library")
    configure = ["cmake", "-S", str(SOURCE_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DTensorRT_ROOT={include.parent}"]
    for cmd in (configure, ["cmake", "--build", str(build_dir), "-j"]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise VerificationError(f"building the RefinerDLA plugin library failed ({' '.join(cmd[:2])}): "
                                    f"{tail[0]}")
    return find_library(build=False)
