"""RefinerDLA as one Triton kernel: the one source of the fused op for PyTorch (GPU), TensorRT's AOT plugin and the
CPU tests (Triton's interpreter).

    x1  = relu6(W1 A + b1)               [E]   (zero outside the map: the depthwise's zero padding)
    x2  = relu6(dw3x3(x1) + bd)          [E]
    out = W2 x2 + b2 + alpha * A         [H]

Tiling, and why (docs/kernel.md says more). One program owns a strip of BLOCK_C columns and a run of about ROWS rows of
one image's N x N map, and walks down it a row at a time:
- The two head mixes run on tensor cores (`tl.dot`, FP16 in / FP32 accumulate; FP32 maps use tf32x3, three TF32
  products, which keeps FP32 accuracy). On CUDA cores they alone would take longer than the memory floor.
- Triton cannot shift a register tile by one position, so the 3x3 neighbourhood cannot come from a shared x1 tile
  with a halo. Recomputing x1 for each of the 9 neighbours (9 tensor-core mixes and 9 relu6 per channel) would
  make the CUDA-core epilogue the bottleneck. Instead each row's x1 is computed for the three column shifts (c-1,
  c, c+1: three small mixes, all from the same cached lines of A), folded at once into the three kernel-row
  partial sums, and the row shifts come for free from walking down: two partial accumulators carry the rows above.
  So x1 is recomputed 3x, not 9x, and nothing is staged through shared memory.
- A is read from DRAM once (the column shifts and the two halo rows per run hit L1/L2) and out written once: a
  run of ROWS rows costs (ROWS + 2) / ROWS of the mixes, and a strip's two edge columns come from its neighbours'
  cache lines.
- b1 rides in the first mix as an extra "ones" column of A where H is not already a multiple of 16. That column is
  1 inside the map and 0 outside, so x1 comes out zero outside the map without a select per channel.
- H and E are padded to powers of two (tl.dot's shapes: at least 16). E = 36 pads to 64; the padded channels carry
  zero weights and cost only CUDA-core work.
"""
from __future__ import annotations

import functools

import triton
import triton.language as tl

from .layout import expanded_of, offsets

ROWS = 32  # rows per program run: the two halo rows cost 2/32 of the mixes
NUM_STAGES = 1  # the row loop's loads are tiny and L1-resident: pipelining them only raised register use
MAX_HEADS = 32


def tile_config(heads: int) -> tuple[int, int]:
    """(BLOCK_C, num_warps) for H heads: one warp per 16 padded channels (each thread then holds two channels'
    taps), and a column strip small enough that the three live [EP, BLOCK_C] FP32 tiles fit in registers.
    Chosen from ptxas's report (no spills on sm_80..sm_120, FP16 and FP32): H <= 16 uses 126-238 registers."""
    return (32, 4) if 3 * heads <= 64 else (16, 8)


@triton.jit
def _relu6(x):
    return tl.minimum(tl.maximum(x, 0.0), 6.0)


@triton.jit
def _mix_in(a_img, r, cols, heads, n, w1, b1, H: tl.constexpr, BIAS_COL: tl.constexpr):
    """x1 [EP, BLOCK_C] at row r, columns `cols` (any of them may lie outside the map), and the A tile it used."""
    rv = r + tl.zeros_like(cols)  # the row check as a tensor: a scalar bool would not broadcast in the interpreter
    inside = (cols >= 0) & (cols < n) & (rv >= 0) & (rv < n)
    a = tl.load(a_img + heads[:, None] * (n * n) + r * n + cols[None, :],
                mask=(heads[:, None] < H) & inside[None, :], other=0.0)
    if BIAS_COL:
        a = tl.where(heads[:, None] == H, inside[None, :].to(a.dtype), a)
        x1 = tl.dot(w1, a, input_precision="tf32x3")
    else:
        x1 = tl.dot(w1, a, input_precision="tf32x3") + b1[:, None]
        x1 = tl.where(inside[None, :], x1, 0.0)
    return _relu6(x1), a


@triton.jit
def refiner_dla_kernel(a_ptr, w_ptr, n, out_ptr,
                       H: tl.constexpr, E: tl.constexpr, HP: tl.constexpr, EP: tl.constexpr,
                       BLOCK_C: tl.constexpr, ROWS: tl.constexpr,
                       AT_W1: tl.constexpr, AT_B1: tl.constexpr, AT_WD: tl.constexpr, AT_BD: tl.constexpr,
                       AT_W2: tl.constexpr, AT_B2: tl.constexpr, AT_ALPHA: tl.constexpr):
    """a_ptr/out_ptr: [B, H, n, n] FP32 or FP16 (the same), w_ptr: packed FP32 weights as refine/layout.py lays
    them out; AT_<tensor> is where each tensor starts in them (layout.offsets).

    The argument order (inputs, then the scalar, then the output) is what TensorRT's AOT plugins pass. One program
    per (image, run of rows, strip of columns); the grid is B * cdiv(n, ROWS) * cdiv(n, BLOCK_C).
    """
    dt: tl.constexpr = a_ptr.dtype.element_ty
    BIAS_COL: tl.constexpr = H < HP
    strips = tl.cdiv(n, BLOCK_C)
    runs = tl.cdiv(n, ROWS)
    rows = tl.cdiv(n, runs)  # spread the rows evenly over the runs: no short last run
    pid = tl.program_id(0)
    strip = pid % strips
    run = (pid // strips) % runs
    img = pid // (strips * runs)
    r0 = run * rows
    r1 = tl.minimum(r0 + rows, n)

    heads = tl.arange(0, HP)
    chans = tl.arange(0, EP)
    cols = strip * BLOCK_C + tl.arange(0, BLOCK_C)
    h_ok = heads < H
    e_ok = chans < E

    # packed weights (refine/layout.py): w1 [E,H], b1 [E], wd [E,3,3], bd [E], w2 [H,E], b2 [H], alpha [H]
    b1 = tl.load(w_ptr + AT_B1 + chans, mask=e_ok, other=0.0)
    w1 = tl.load(w_ptr + AT_W1 + chans[:, None] * H + heads[None, :], mask=e_ok[:, None] & h_ok[None, :], other=0.0)
    if BIAS_COL:
        w1 = tl.where(heads[None, :] == H, b1[:, None], w1)
    w1 = w1.to(dt)
    w2 = tl.load(w_ptr + AT_W2 + heads[:, None] * E + chans[None, :],
                 mask=h_ok[:, None] & e_ok[None, :], other=0.0).to(dt)
    bd = tl.load(w_ptr + AT_BD + chans, mask=e_ok, other=0.0)
    b2 = tl.load(w_ptr + AT_B2 + heads, mask=h_ok, other=0.0)
    alpha = tl.load(w_ptr + AT_ALPHA + heads, mask=h_ok, other=0.0)
    wd = w_ptr + AT_WD + chans * 9

    plane = H * n * n
    a_img = a_ptr + img.to(tl.int64) * plane
    o_img = out_ptr + img.to(tl.int64) * plane
    store_ok = h_ok[:, None] & (cols < n)[None, :]

    # Pre-activation x2 of the row above (waits for this row's kernel row 2) and of this row (waits for rows 1, 2).
    # Each x1 column shift is folded into the three partial sums as soon as it exists, so at most one x1 tile is
    # live. Channels are the MMA's M (tiles are [EP, BLOCK_C]): each thread then holds few channels, so the nine
    # depthwise taps it needs stay in a few registers.
    above = tl.zeros([EP, BLOCK_C], tl.float32)
    here = tl.zeros([EP, BLOCK_C], tl.float32)
    a_above = tl.zeros([HP, BLOCK_C], dt)
    for r in range(r0 - 1, r1 + 1):
        below = tl.zeros([EP, BLOCK_C], tl.float32)
        for dc in tl.static_range(3):
            # input row r feeds output row r+1 through kernel row 0, row r through 1, row r-1 through 2
            x1, a = _mix_in(a_img, r, cols + (dc - 1), heads, n, w1, b1, H, BIAS_COL)
            below += x1 * tl.load(wd + dc, mask=e_ok, other=0.0)[:, None]
            here += x1 * tl.load(wd + 3 + dc, mask=e_ok, other=0.0)[:, None]
            above += x1 * tl.load(wd + 6 + dc, mask=e_ok, other=0.0)[:, None]
            if dc == 1:
                a_here = a
        x2 = _relu6(above + bd[:, None])  # complete: output row r-1
        y = tl.dot(w2, x2.to(dt), input_precision="tf32x3") + b2[:, None] + alpha[:, None] * a_above.to(tl.float32)
        rr = r - 1
        tl.store(o_img + heads[:, None] * (n * n) + rr * n + cols[None, :], y.to(dt),
                 mask=store_ok & (rr + tl.zeros_like(cols) >= r0)[None, :])
        above = here
        here = below
        a_above = a_here


def constexprs(heads: int, expanded: int) -> dict:
    if not 1 <= heads <= MAX_HEADS:
        raise ValueError(f"RefinerDLA: the number of heads must be between 1 and {MAX_HEADS}, got {heads}")
    if expanded < 1:
        raise ValueError(f"RefinerDLA: the number of expanded channels must be positive, got {expanded}")
    if expanded > 4 * MAX_HEADS:
        raise ValueError(f"RefinerDLA: at most {4 * MAX_HEADS} expanded channels are supported, got {expanded}")
    # tl.dot needs power-of-two sizes of at least 16: H pads to HP (the spare column carries b1), E to EP
    hp = max(16, triton.next_power_of_2(heads))
    ep = max(16, triton.next_power_of_2(expanded))
    block_c, _ = tile_config(heads)
    at = {f"AT_{name.upper()}": start for name, start in offsets(heads, expanded).items()}
    return {"H": heads, "E": expanded, "HP": hp, "EP": ep, "BLOCK_C": block_c, "ROWS": ROWS, **at}


def grid_size(batch: int, n: int, heads: int) -> int:
    """Programs to launch: one per (image, run of rows, strip of columns)."""
    return batch * triton.cdiv(n, ROWS) * triton.cdiv(n, tile_config(heads)[0])


def launch(a, weights, heads: int, out=None):
    """Run the kernel on torch tensors (CUDA, or CPU under TRITON_INTERPRET=1): a [B, H, N, N] FP32/FP16
    contiguous, weights the packed FP32 vector. Returns out (allocated when not given)."""
    import torch

    if a.dim() != 4 or a.shape[2] != a.shape[3]:
        raise ValueError(f"RefinerDLA: the map must be [batch, heads, N, N], got {tuple(a.shape)}")
    if a.shape[1] != heads:
        raise ValueError(f"RefinerDLA: the map has {a.shape[1]} heads, the weights are for {heads}")
    if a.dtype not in (torch.float32, torch.float16):
        raise ValueError(f"RefinerDLA: the map must be float32 or float16, got {a.dtype}")
    batch, _, n, _ = a.shape
    if heads * n * n >= 2 ** 31:
        raise ValueError(f"RefinerDLA: one image's map ({heads} x {n} x {n}) exceeds 2^31 elements")
    weights = weights.to(device=a.device, dtype=torch.float32).contiguous()
    meta = constexprs(heads, expanded_of(weights.numel(), heads))
    a = a.contiguous()
    if out is None:
        out = torch.empty_like(a)
    elif out.shape != a.shape or out.dtype != a.dtype or not out.is_contiguous():
        raise ValueError("RefinerDLA: the output must be a contiguous tensor of the map's shape and type")
    if batch == 0:
        return out
    refiner_dla_kernel[(grid_size(batch, n, heads),)](a, weights, n, out, num_warps=tile_config(heads)[1],
                                                      num_stages=NUM_STAGES, enable_fp_fusion=True, **meta)
    return out


@functools.lru_cache(maxsize=64)
def compile_for(heads: int, expanded: int, dtype: str, cc: int, ptx_version: int | None = None):
    """Ahead-of-time compile for compute capability `cc` (80, 86, 87, 89, 90, ...) without a GPU. dtype "fp16" or
    "fp32". Returns Triton's CompiledKernel: .asm["ptx"], .asm["cubin"], .metadata (name, shared, num_warps),
    .n_regs and .n_spills. TensorRT's AOT plugin hands TensorRT this PTX. ptx_version (80 = PTX ISA 8.0): the
    `.version` the PTX declares; None: the newest Triton's own ptxas knows, which a device's older driver may
    reject (refine/aot.py picks it from the target's oldest CUDA)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if dtype not in ("fp16", "fp32"):
        raise ValueError(f"RefinerDLA: dtype must be fp16 or fp32, got {dtype}")
    meta = constexprs(heads, expanded)
    signature = {"a_ptr": f"*{dtype}", "w_ptr": "*fp32", "n": "i32", "out_ptr": f"*{dtype}",
                 **{k: "constexpr" for k in meta}}
    src = ASTSource(fn=refiner_dla_kernel, signature=signature, constexprs=meta)
    options = {"num_warps": tile_config(heads)[1], "num_stages": NUM_STAGES, "enable_fp_fusion": True}
    if ptx_version is not None:
        options["ptx_version"] = ptx_version
    return triton.compile(src, target=GPUTarget("cuda", cc, 32), options=options)


def resource_usage(kernel) -> dict:
    """Registers per thread, spilled bytes and shared memory of a compiled kernel, from ptxas -v on its PTX."""
    usage = ptxas_report(kernel.asm["ptx"], kernel.metadata.target.arch)
    return {**usage, "name": kernel.metadata.name, "shared_bytes": kernel.metadata.shared,
            "num_warps": kernel.metadata.num_warps}


def ptxas_report(ptx: str, cc: int) -> dict:
    """Assemble PTX with the ptxas that ships with Triton (no GPU or driver needed); RuntimeError if it fails."""
    import re
    import subprocess
    import tempfile
    from pathlib import Path

    from triton.backends.nvidia.compiler import get_ptxas

    arch = re.search(r"^\.target\s+(sm_\w+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        result = subprocess.run([get_ptxas(cc).path, "-v", f"--gpu-name={arch}", str(src),
                                 "-o", str(Path(tmp) / "k.cubin")], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"ptxas failed on the RefinerDLA PTX for {arch}: {result.stderr[-2000:]}")
    log = result.stdout + result.stderr
    number = lambda pattern: int(m.group(1)) if (m := re.search(pattern, log)) else 0  # noqa: E731
    return {"arch": arch, "registers": number(r"Used (\d+) registers"),
            "spill_stores": number(r"(\d+) bytes spill stores"), "spill_loads": number(r"(\d+) bytes spill loads"),
            "stack_bytes": number(r"(\d+) bytes stack frame"),
            "mma_instructions": sum(ptx.count(op) for op in ("mma.sync", "wgmma.mma_async", "tcgen05.mma"))}
