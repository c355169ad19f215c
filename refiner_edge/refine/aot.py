"""RefinerDLA as a TensorRT quickly-deployable plugin (`tensorrt.plugin`, TensorRT >= 10.9) in its ahead-of-time
form: `aot_impl` hands TensorRT the PTX of the same @triton.jit kernel that the PyTorch op runs
(refine/triton_kernel.py), so the engine embeds the kernel and then runs under trtexec or a C++ app with neither
this package, Python, nor a plugin library.

In that form the plugin's attributes are not serialized into the engine, so the weights cannot travel as attributes:
the AOT node takes them as a second input, an FP32 initializer in layout.PACK_ORDER (refine/plugin_form.py rewrites
fused nodes that way). Inputs: the map A [B, H, N, N] (FP32 or FP16) and the packed weights; output: the refined
map, A's shape and type. Attributes: num_heads, num_expanded.

The IPluginV3 library in plugins/refiner_dla registers the same name, version and namespace (for TensorRT 10.3 /
JetPack 6 and C++ apps): load one or the other in a process, not both.
"""
# No `from __future__ import annotations` here: tensorrt.plugin reads the decorated functions' annotations with
# inspect.signature() and checks them with issubclass(), which fails on the strings that import would make.
import re
from dataclasses import dataclass

from ..errors import MissingDependencyError
from ..extras import PLATFORM_HINT, install_hint
from . import PLUGIN_NAME, PLUGIN_NAMESPACE

QUALIFIED_NAME = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
FALLBACK_CC = 80  # PTX for sm_80 is JIT-compiled forward by the driver on any newer GPU
SHARED_MEMORY_LIMIT = 48 * 1024  # a kernel launch without the opt-in attribute gets at most this much
_registered = False
_target_cc = None  # compute capability the PTX is compiled for; None: the building GPU's
_ptx_version = None  # PTX ISA version the PTX declares (80 = 8.0); None: Triton's newest


@dataclass(frozen=True)
class AotKernel:
    """What aot_impl returns to TensorRT, minus the symbolic grid: kernel name, PTX, threads and shared memory."""
    name: str
    ptx: str
    block_x: int
    shared_mem: int
    block_c: int
    rows: int


def _strip_unused_params(ptx: str, name: str) -> str:
    """Drop trailing kernel parameters the body never reads.

    Triton appends scratch-buffer pointers (global and profile scratch) to every kernel; this kernel needs neither
    (their sizes are 0), and TensorRT passes exactly the inputs, the extra scalars and the outputs. A launch with
    fewer arguments than the PTX declares would read past TensorRT's argument array.
    """
    head = re.search(rf"\.entry {re.escape(name)}\((.*?)\)", ptx, re.S)
    if head is None:
        raise ValueError(f"kernel {name} not found in the PTX")
    params = [p.strip() for p in head.group(1).split(",")]
    body = ptx[head.end():]
    while len(params) > 4:  # a, weights, n, out are the kernel's own
        last = params[-1].split()[-1]
        if re.search(rf"\b{re.escape(last)}\b", body):
            break
        params.pop()
    return ptx[:head.start(1)] + "\n\t" + ",\n\t".join(params) + "\n" + ptx[head.end(1):]


def ptx_version(min_cuda: str, cc: int) -> int:
    """The PTX ISA version (80 = 8.0) to compile for a device whose driver may be as old as CUDA `min_cuda`.

    TensorRT hands the AOT plugin's PTX to the driver of the machine that runs the engine, which assembles only
    PTX versions it knows: Triton 3.9 writes .version 9.4 for sm_90/100/110 and 8.8 for sm_80/87 by default, which
    CUDA 13.0's ptxas (JetPack 7.0) and CUDA 12.0-12.8 drivers reject. So: the newest version that driver knows,
    and no newer than Triton's own ptxas for `cc` knows (triton.compile assembles the PTX too; CUDA 12.9's
    ptxas, which Triton ships for sm_87, stops at 8.8 while JetPack 7 is CUDA 13). Triton's own table maps CUDA
    versions to PTX versions."""
    from triton.backends.nvidia.compiler import get_ptxas_version, ptx_get_version

    own = re.search(r"release (\d+\.\d+)", get_ptxas_version(cc))
    limits = [ptx_get_version(min_cuda)] + ([ptx_get_version(own.group(1))] if own else [])
    return min(limits)


def aot_kernel(heads: int, expanded: int, dtype: str, cc: int, ptx: int | None = None) -> AotKernel:
    """Compile the Triton kernel for compute capability `cc` (no GPU needed) as TensorRT's AOT form takes it, its
    PTX declaring ISA version `ptx` (see ptx_version)."""
    from . import triton_kernel

    kernel = triton_kernel.compile_for(heads, expanded, dtype, cc, ptx)
    if kernel.metadata.global_scratch_size or kernel.metadata.profile_scratch_size:
        raise RuntimeError("this Triton build asks for scratch memory, which TensorRT's AOT plugins cannot provide")
    if kernel.metadata.shared > SHARED_MEMORY_LIMIT:  # TensorRT's AOT launch cannot opt in to more
        raise ValueError(f"the RefinerDLA kernel for {heads} heads in {dtype} needs {kernel.metadata.shared} bytes of "
                         f"shared memory, over the {SHARED_MEMORY_LIMIT} an AOT plugin launch gets: use FP16 or the "
                         "plugin library")
    block_c, num_warps = triton_kernel.tile_config(heads)
    return AotKernel(name=kernel.metadata.name, ptx=_strip_unused_params(kernel.asm["ptx"], kernel.metadata.name),
                     block_x=num_warps * 32, shared_mem=kernel.metadata.shared, block_c=block_c,
                     rows=triton_kernel.ROWS)


def _device_cc() -> int:
    """The compute capability of the GPU the engine is being built on; sm_80 PTX where it cannot be read."""
    try:
        from triton.runtime import driver

        return int(driver.active.get_current_target().arch)
    except Exception:
        return FALLBACK_CC


def _tensorrt():
    try:
        import tensorrt as trt
        import tensorrt.plugin as trtp
    except ImportError:
        raise MissingDependencyError(
            "the RefinerDLA AOT plugin needs TensorRT >= 10.9 with its Python package (tensorrt, tensorrt.plugin): "
            f"{PLATFORM_HINT}, or use the plugin library in plugins/refiner_dla"
        ) from None
    return trt, trtp


def available():
    """(tensorrt, tensorrt.plugin) when everything `register` needs is installed, registering nothing (the build
    chain asks before it chooses the form); else the MissingDependencyError `register` would raise."""
    trt, trtp = _tensorrt()
    try:
        import triton  # noqa: F401
    except ImportError:
        raise MissingDependencyError("the RefinerDLA AOT plugin compiles its kernel with Triton: "
                                     f"{install_hint('triton')}") from None
    return trt, trtp


def register(portable_cc: int | None = None, min_cuda: str | None = None) -> dict:
    """Register refiner_edge::RefinerDLA with TensorRT's plugin registry (once per process); returns what the
    engine's manifest records about the embedded PTX.

    portable_cc: compile the embedded PTX for this compute capability instead of the building GPU's, for engines
    that must run on every GPU from that one on (hardware compatibility AMPERE_PLUS: 80). Plain sm_80 PTX is
    JIT-compiled forward by the driver; the building GPU's own (sm_90a on Hopper) runs on that GPU only.
    min_cuda: the oldest CUDA driver the target supports; the PTX declares a version that driver assembles.
    """
    global _registered
    if _registered:
        return _configure(portable_cc, min_cuda)
    trt, trtp = available()
    from typing import List, Tuple, Union

    @trtp.register(QUALIFIED_NAME)
    def _describe(a: trtp.TensorDesc, weights: trtp.TensorDesc, num_heads: int, num_expanded: int) -> trtp.TensorDesc:
        return a.like()

    @trtp.autotune(QUALIFIED_NAME)
    def _formats(a: trtp.TensorDesc, weights: trtp.TensorDesc, num_heads: int, num_expanded: int,
                 outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        combination = trtp.AutoTuneCombination()
        combination.pos([0, 2], "FP32|FP16")  # the map and the output share one type
        combination.pos([1], "FP32")
        return [combination]

    @trtp.aot_impl(QUALIFIED_NAME)
    def _aot(a: trtp.TensorDesc, weights: trtp.TensorDesc, num_heads: int, num_expanded: int,
             outputs: Tuple[trtp.TensorDesc], tactic: int
             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
        kernel = aot_kernel(int(num_heads), int(num_expanded), "fp16" if a.dtype == trt.float16 else "fp32",
                            _target_cc or _device_cc(), _ptx_version)
        shape = a.shape_expr
        n = shape[2]
        params = trtp.KernelLaunchParams()
        # one program per (image, run of rows, strip of columns): triton_kernel.grid_size, symbolically
        params.grid_x = shape[0] * trtp.cdiv(n, kernel.rows) * trtp.cdiv(n, kernel.block_c)
        params.block_x = kernel.block_x
        params.shared_mem = kernel.shared_mem
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(n)])  # the kernel's scalar, between inputs and output
        return kernel.name.encode(), kernel.ptx.encode(), params, extra

    _registered = True
    return _configure(portable_cc, min_cuda)


def _configure(portable_cc: int | None, min_cuda: str | None) -> dict:
    """What aot_impl compiles for from now on, as the engine's manifest records it."""
    global _target_cc, _ptx_version
    _target_cc = portable_cc
    cc = portable_cc or _device_cc()
    _ptx_version = ptx_version(min_cuda, cc) if min_cuda else None
    return {"compute_capability": cc, "min_cuda": min_cuda,
            "ptx_version": f"{_ptx_version // 10}.{_ptx_version % 10}" if _ptx_version else None}
