"""Checks an engine's manifest against the machine about to load it. An engine only runs on the GPU, TensorRT
and plugin library it was built for; anything else is one line ending in the command that rebuilds it, never a
crash inside TensorRT or silently wrong output."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..artifacts import file_sha256
from ..errors import InputError
from ..manifest import Manifest, read_manifest


@dataclass(frozen=True)
class Runtime:
    """What the loading machine has."""

    flavour: str                      # tensorrt or tensorrt-rtx
    version: str
    compute_capability: str | None    # None: no GPU
    gpu: str = "this machine"


def _cc(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def read_engine_manifest(engine: str | Path) -> Manifest:
    path = Path(engine)
    if not path.is_file():
        raise InputError(f"engine not found: {path}")
    manifest = read_manifest(path, required=True, verify=False)  # check_engine compares the hash, saying how to rebuild
    if manifest.stage != "build" or manifest.engine is None:
        raise InputError(f"{path.name}'s manifest is a {manifest.stage} manifest, not an engine's")
    return manifest


def check_engine(engine: str | Path, manifest: Manifest, runtime: Runtime, hash_file: bool = True) -> None:
    """InputError '... : rebuild with: refiner-edge build ...' when `engine` cannot load correctly on `runtime`."""
    info, name = manifest.engine, Path(engine).name

    def stale(why: str) -> InputError:
        return InputError(f"{name} {why}: rebuild with: {info.rebuild}")

    if hash_file and manifest.sha256 and file_sha256(engine) != manifest.sha256:
        raise stale("is not the engine its manifest describes (SHA-256 differs)")
    if runtime.flavour != info.flavour:
        raise stale(f"was built by {info.flavour} and this is {runtime.flavour}")
    if runtime.version != info.tensorrt_version and not info.version_compatible:
        raise stale(f"was built by {info.flavour} {info.tensorrt_version} and this is {runtime.version}")
    if runtime.compute_capability is None:
        raise InputError(f"{name} runs on a CUDA GPU (sm_{info.compute_capability.replace('.', '')}) and "
                         f"{runtime.gpu} has none")
    have, want = _cc(runtime.compute_capability), _cc(info.compute_capability)
    portable = info.hardware_compatibility == "ampere+" and have >= (8, 0)
    if have != want and not portable:
        raise stale(f"was built for sm_{info.compute_capability.replace('.', '')} ({info.device}) and "
                    f"{runtime.gpu} is sm_{runtime.compute_capability.replace('.', '')}")
    if info.plugin_form == "library":
        library = Path(info.plugin_library or "")
        if not info.plugin_library or not library.is_file():
            raise stale(f"needs the RefinerDLA plugin library {info.plugin_library}, which is missing")
        if info.plugin_sha256 and file_sha256(library) != info.plugin_sha256:
            raise stale(f"was built with another RefinerDLA plugin library than {library} (SHA-256 differs)")


def batch_in_profile(manifest: Manifest, batch: int) -> None:
    """A batch outside the engine's optimisation profile is refused before TensorRT sees it."""
    profile = manifest.engine.profiles[0]
    lo, hi = profile.min[0], profile.max[0]
    if not lo <= batch <= hi:
        raise InputError(f"batch {batch} is outside the engine's profile ({lo}..{hi}): use --batch-size within "
                         f"it, or rebuild with a wider --batch MIN:OPT:MAX")
