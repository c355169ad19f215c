"""Build targets as data: one row per device family and TensorRT line (docs/engines.md prints the same table).

A row says which builder makes its engines (`tensorrt` on the device itself, or `tensorrt-rtx` ahead of time for a
compute capability, no GPU needed), with which defaults. `auto` reads the local GPU and picks the matching row.
Nothing here imports tensorrt, cuda or torch until `detect_gpu` runs.
"""
from __future__ import annotations

import importlib
import logging
import subprocess
from dataclasses import dataclass

from ..defaults import BUILD_TARGET, default
from ..errors import InputError, MissingDependencyError
from ..extras import PLATFORM_HINT, install_hint
from ..models.variants import DEFAULT_VARIANT, get_variant

GiB = 1 << 30
log = logging.getLogger(__name__)
# The AOT plugin form (kernel embedded in the engine) needs TensorRT's quickly deployable plugins' AOT path.
AOT_MIN_TENSORRT = (10, 9)
# HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY appeared in TensorRT 10.9 (10.3 has NONE and AMPERE_PLUS only).
SAME_CC_MIN_TENSORRT = (10, 9)


@dataclass(frozen=True)
class Target:
    name: str
    devices: str                  # the hardware the row describes
    compute_capability: str       # "8.7"
    flavour: str                  # tensorrt or tensorrt-rtx
    tensorrt: str                 # the TensorRT line the row is for ("10.3", "11.4", "rtx-1.7")
    dla_cores: int
    workspace: int                # bytes of builder workspace
    opt_level: int                # builder optimisation level (0..5; 3 is TensorRT's default)
    hardware_compat: str          # none, ampere+ (portable across Ampere and newer) or same-cc
    batch: tuple[int, int, int]   # default (min, opt, max) batch profile
    plugin: str                   # default plugin form: library, aot or none
    jetpack: str | None = None
    min_cuda: str | None = None   # the oldest CUDA driver the row supports: the AOT PTX must assemble with it

    @property
    def sm(self) -> str:
        return "sm_" + self.compute_capability.replace(".", "")

    @property
    def rtx(self) -> bool:
        return self.flavour == "tensorrt-rtx"

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 removed weak typing, INT8 calibrators and calibration caches."""
        return self.rtx or int(self.tensorrt.split(".")[0]) >= 11

    def row(self) -> dict:
        return {"name": self.name, "devices": self.devices, "sm": self.sm, "flavour": self.flavour,
                "tensorrt": self.tensorrt, "jetpack": self.jetpack, "dla_cores": self.dla_cores,
                "workspace_gib": self.workspace / GiB, "opt_level": self.opt_level,
                "hardware_compat": self.hardware_compat, "batch": ":".join(map(str, self.batch)),
                "plugin": self.plugin, "min_cuda": self.min_cuda}


# The oldest CUDA driver a row supports, which assembles the AOT plugin's PTX on the device (refine/aot.py picks
# the PTX ISA version from it). Jetson: the JetPack's CUDA (6.x: 12.6; 7.0 on Thor: 13.0; later 7.x ship 13.x, so
# 13.0 is the floor). Datacenter: TensorRT 10.x supports every CUDA 12 from 12.0 on (its support matrix); sm_100
# (B200) first appears in CUDA 12.8.
JETPACK_CUDA = {"6.2": "12.6", "7.0": "13.0", "7.2": "13.0"}
DATACENTER_CUDA = {"8.0": "12.0", "8.6": "12.0", "8.9": "12.0", "9.0": "12.0", "10.0": "12.8"}


def _jetson(name, devices, cc, trt, jetpack, dla, workspace, batch, plugin):
    return Target(name, devices, cc, "tensorrt", trt, dla, workspace, 3, "none", batch, plugin, jetpack,
                  min_cuda=JETPACK_CUDA[jetpack])


def _dc(name, devices, cc, batch=(1, 16, 64), trt="10.13", compat="none"):
    return Target(name, devices, cc, "tensorrt", trt, 0, 8 * GiB, 3, compat, batch, "aot",
                  min_cuda=DATACENTER_CUDA[cc])


def _rtx(cc, devices):
    return Target(f"rtx-sm{cc.replace('.', '')}", devices, cc, "tensorrt-rtx", "rtx-1.7", 0, 4 * GiB, 3, "none",
                  (1, 8, 32), "none")


TARGETS: dict[str, Target] = {t.name: t for t in (
    # JetPack 6.1/6.2: TensorRT 10.3, no AOT plugins (< 10.9): the RefinerDLA library. Orin Nano has no DLA.
    _jetson("orin-nano-jp6", "Jetson Orin Nano 4/8 GB", "8.7", "10.3", "6.2", 0, 1 * GiB, (1, 1, 4), "library"),
    _jetson("orin-nx-jp6", "Jetson Orin NX 8/16 GB", "8.7", "10.3", "6.2", 2, 2 * GiB, (1, 4, 8), "library"),
    _jetson("orin-agx-jp6", "Jetson AGX Orin 32/64 GB", "8.7", "10.3", "6.2", 2, 4 * GiB, (1, 8, 16), "library"),
    # JetPack 7.2.2+ brings TensorRT 11.4 to AGX Orin and Thor: strongly typed only, AOT plugin.
    _jetson("orin-agx-jp7", "Jetson AGX Orin (JetPack 7.2.2+)", "8.7", "11.4", "7.2", 2, 4 * GiB, (1, 8, 16),
            "aot"),
    # Thor: sm_110 in CUDA 13's naming, no DLA. JetPack 7.0 ships TensorRT 10.13.
    _jetson("thor-jp7", "Jetson AGX Thor", "11.0", "10.13", "7.0", 0, 8 * GiB, (1, 8, 32), "aot"),
    _jetson("thor-trt11", "Jetson AGX Thor (TensorRT 11.4)", "11.0", "11.4", "7.2", 0, 8 * GiB, (1, 8, 32), "aot"),
    # Datacenter: built on the GPU itself with TensorRT 10.13+ or 11.x.
    _dc("a100", "A100", "8.0"),
    _dc("a100-portable", "A100 and newer (hardware compatibility AMPERE_PLUS)", "8.0", compat="ampere+"),
    _dc("a10", "A10, A40", "8.6"),
    _dc("l4", "L4", "8.9", batch=(1, 8, 32)),
    _dc("l40s", "L40S", "8.9"),
    _dc("h100", "H100", "9.0", batch=(1, 32, 128)),
    _dc("h200", "H200", "9.0", batch=(1, 32, 128)),
    _dc("b200", "B200", "10.0", batch=(1, 32, 128), trt="11.4"),
    # TensorRT-RTX: ahead-of-time builds for a compute capability on any machine (no GPU needed); no plugins.
    _rtx("7.5", "GeForce RTX 20xx, Quadro RTX, T4"),
    _rtx("8.0", "A100 (TensorRT-RTX)"),
    _rtx("8.6", "GeForce RTX 30xx, RTX A-series"),
    _rtx("8.9", "GeForce RTX 40xx, RTX Ada, L4"),
    _rtx("12.0", "GeForce RTX 50xx, RTX PRO Blackwell"),
    _rtx("12.1", "DGX Spark (GB10)"),
)}


BATCH_NOTE = ("batch: the default MIN:OPT:MAX; a build lowers MAX (and OPT) where the model's attention maps would "
              "not fit half the workspace (4 x heads x N^2 values per image, N = (img/16)^2 + 1 tokens: "
              "refiner-vit-l at 448 builds 1:4:8 on the rtx rows) and says so in the engine's manifest")


def attention_bytes(heads: int, img_size: int, precision: str, variant: str = DEFAULT_VARIANT) -> int:
    """Bytes one image's attention maps take in an engine at their peak: a refinement reads the map A (heads
    channels) while its 3 x heads expansion is alive, over N x N positions (N from the variant's patch size,
    VariantConfig.tokens). Measured: TensorRT-RTX asked for 4.62 GB at batch 32 for Refiner-ViT-L@448 in FP32,
    144 MB per image; this gives 158 MB."""
    tokens = get_variant(variant).tokens(img_size)
    return 4 * heads * tokens * tokens * (4 if precision == "fp32" else 2)


def fitted_batch(batch: tuple[int, int, int], workspace: int, per_image: int) -> tuple[int, int, int]:
    """`batch` with MAX lowered to the largest power of two whose activations fit half the workspace (and OPT
    to half of that), or unchanged when it fits."""
    lo, opt, hi = batch
    fit = max(1, workspace // (2 * per_image))
    if hi <= fit:
        return batch
    top = 1 << (fit.bit_length() - 1)
    return min(lo, top), min(opt, max(1, top // 2)), top


def get_target(name: str | None = None) -> Target:
    """A row of the table, or the local GPU's row for 'auto' (None: defaults.BUILD_TARGET)."""
    name = default(name, BUILD_TARGET)
    if name == "auto":
        return auto_target()
    try:
        return TARGETS[name]
    except KeyError:
        raise InputError(f"unknown target '{name}'; choose auto or one of: {', '.join(TARGETS)}") from None


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str   # "8.9"
    memory: int               # bytes


def _gpu_from_cuda_python() -> Gpu | None:
    """Through cuda-python's runtime API. RuntimeError when the binding cannot ask: cuda-python 13 carries the
    CUDA 13 runtime and fails on a CUDA 12 driver (JetPack 6) with cudaErrorInsufficientDriver, and that says
    nothing about whether there is a GPU."""
    from cuda.bindings import runtime as cudart   # cuda-python 12.0-12.6.0 has no cuda.bindings: ImportError

    err, count = cudart.cudaGetDeviceCount()
    if err == cudart.cudaError_t.cudaErrorNoDevice:
        return None
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(getattr(err, "name", str(err)))
    if count == 0:
        return None
    err, prop = cudart.cudaGetDeviceProperties(0)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(getattr(err, "name", str(err)))
    name = prop.name.decode(errors="replace").rstrip("\0") if isinstance(prop.name, bytes) else str(prop.name)
    return Gpu(name, f"{prop.major}.{prop.minor}", int(prop.totalGlobalMem))


def _gpu_from_nvidia_smi() -> Gpu | None:
    """Through the driver's own nvidia-smi (compute_cap needs driver 510+). Jetson has no nvidia-smi: that case
    raises FileNotFoundError and the next way is tried."""
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader,nounits",
                           "--id=0"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(((done.stderr or done.stdout).strip().splitlines() or ["nvidia-smi failed"])[-1])
    line = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    if not line:
        return None
    name, cc, memory = (part.strip() for part in line.rsplit(",", 2))
    return Gpu(name, cc, int(float(memory)) << 20)


def _gpu_from_torch() -> Gpu | None:
    torch = importlib.import_module("torch")
    if not torch.cuda.is_available():
        return None
    p = torch.cuda.get_device_properties(0)
    return Gpu(p.name, f"{p.major}.{p.minor}", int(p.total_memory))


GPU_PROBES = (("cuda-python", _gpu_from_cuda_python), ("nvidia-smi", _gpu_from_nvidia_smi), ("torch", _gpu_from_torch))


def detect_gpu(failures: list[str] | None = None) -> Gpu | None:
    """The first local CUDA GPU, asked through cuda-python, then nvidia-smi, then torch: the first way that can
    answer decides. A way that cannot ask (not installed, or a binding newer than the driver) passes to the next,
    so a machine is never called GPU-less because one binding does not fit its driver. None when no way finds one;
    `failures` (when given) collects the ways that were there but failed, and `-v` logs every way that could not
    answer."""
    for name, probe in GPU_PROBES:
        try:
            return probe()
        except (ImportError, FileNotFoundError) as e:
            log.debug("GPU detection through %s could not answer: %s", name, e)
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:
            log.debug("GPU detection through %s could not answer: %s", name, e)
            if failures is not None:
                failures.append(f"{name}: {e}")
    return None


MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}


def import_tensorrt(flavour: str):
    """The tensorrt or tensorrt_rtx module, or a MissingDependencyError naming the extra to install."""
    try:
        return importlib.import_module(MODULES[flavour])
    except ImportError:
        raise MissingDependencyError(f"{flavour} is not installed ({install_hint(MODULES[flavour])})"
                                     ) from None


def installed_tensorrt() -> tuple[str, str] | None:
    """(flavour, version) of the TensorRT Python package that is installed, TensorRT proper first."""
    for flavour, module in MODULES.items():
        try:
            return flavour, importlib.import_module(module).__version__
        except ImportError:
            continue
    return None


def match_target(gpu: Gpu, flavour: str, version: str | None = None) -> Target:
    """The table row for `gpu` and the installed builder: the RTX row of its compute capability under TensorRT-RTX;
    under TensorRT the row of its compute capability whose TensorRT line is the installed one's major version,
    preferring a row whose device name matches the GPU's."""
    rows = [t for t in TARGETS.values() if t.compute_capability == gpu.compute_capability and t.flavour == flavour
            and t.hardware_compat == "none"]
    if flavour == "tensorrt" and version:
        major = version.split(".")[0]
        rows = [t for t in rows if t.tensorrt.split(".")[0] == major] or rows
    if not rows:
        raise InputError(f"no target for {gpu.name} (sm_{gpu.compute_capability.replace('.', '')}) with {flavour}: "
                         f"name one with --target (see docs/engines.md)")
    words = set(gpu.name.lower().replace("-", " ").split())
    return max(rows, key=lambda t: len(words & set(t.devices.lower().replace(",", " ").split())))


def auto_target() -> Target:
    failures: list[str] = []
    gpu = detect_gpu(failures)
    if gpu is None and failures:   # a driver may well be there: say what failed, not that there is no GPU
        raise InputError(f"--target auto could not read the GPU ({'; '.join(failures)}): install the cuda-python "
                         f"that matches the driver's CUDA major ({PLATFORM_HINT}), or name a target")
    if gpu is None:
        raise InputError("--target auto needs a local CUDA GPU and none was found: name a target instead, e.g. "
                         "--target rtx-sm89 (TensorRT-RTX builds without a GPU); see docs/engines.md")
    installed = installed_tensorrt()
    if installed is None:
        raise InputError(f"found {gpu.name} but neither tensorrt nor tensorrt-rtx is installed "
                         f"({PLATFORM_HINT}; or pip install 'refiner-edge[rtx]')")
    return match_target(gpu, *installed)


def tensorrt_at_least(version: str, minimum: tuple[int, int]) -> bool:
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    return parts >= minimum
