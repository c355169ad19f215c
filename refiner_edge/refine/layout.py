"""The one description of a folded RefinerDLA's weights: each tensor's name and shape in H (heads) and E (expanded
channels), in the order they are packed into one float32 buffer.

Everything else is derived from FIELDS: the shapes for given H and E, the packed length and its inverse (E from the
length), each tensor's offset, and the C++ header plugins/refiner_dla/refinerDLALayout.h that the CUDA kernel, the
TensorRT plugin and the PyTorch extension include. Regenerate that header after changing FIELDS:

    python -m refiner_edge.refine.layout > plugins/refiner_dla/refinerDLALayout.h

(tests/test_refine.py fails while the checked-in header differs from what this module generates).
"""
from __future__ import annotations

import math
import sys

FIELDS = (
    ("w1", ("E", "H")),
    ("b1", ("E",)),
    ("wd", ("E", 3, 3)),
    ("bd", ("E",)),
    ("w2", ("H", "E")),
    ("b2", ("H",)),
    ("alpha", ("H",)),
)
PACK_ORDER = tuple(name for name, _ in FIELDS)


def shapes(heads: int, expanded: int) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape for H heads and E expanded channels, in PACK_ORDER."""
    dims = {"H": heads, "E": expanded}
    return {name: tuple(dims.get(d, d) for d in shape) for name, shape in FIELDS}


def offsets(heads: int, expanded: int) -> dict[str, int]:
    """Where each tensor starts in the packed buffer, in floats."""
    out, pos = {}, 0
    for name, shape in shapes(heads, expanded).items():
        out[name] = pos
        pos += math.prod(shape)
    return out


def packed_size(heads: int, expanded: int) -> int:
    return sum(math.prod(shape) for shape in shapes(heads, expanded).values())


def _coefficients(fields=FIELDS) -> tuple[int, int, int]:
    """The floats in `fields` as per_eh * E * H + per_e * E + per_h * H (no field may hold E twice or H twice)."""
    per_eh = per_e = per_h = 0
    for _, shape in fields:
        size = math.prod(d for d in shape if isinstance(d, int))
        if "E" in shape and "H" in shape:
            per_eh += size
        elif "E" in shape:
            per_e += size
        else:
            per_h += size
    return per_eh, per_e, per_h


def expanded_of(numel: int, heads: int) -> int:
    """E from the packed buffer's length (packed_size inverted); ValueError where no E fits."""
    per_eh, per_e, per_h = _coefficients()
    e = (numel - per_h * heads) // (per_eh * heads + per_e) if heads > 0 else 0
    if e < 1 or packed_size(heads, e) != numel:
        raise ValueError(f"packed RefinerDLA weights of size {numel} do not fit {heads} heads")
    return e


def _cpp_count(fields) -> str:
    """A C++ expression in e and h for the floats in `fields`: closed form, so a kernel pays no loop."""
    terms = [f"{c} * {v}" if c != 1 else v for c, v in zip(_coefficients(fields), ("e * h", "e", "h")) if c]
    return " + ".join(terms) or "0"


def cpp_header() -> str:
    """plugins/refiner_dla/refinerDLALayout.h: the same layout as constexpr C++ usable in host and device code."""
    def chain(count) -> str:  # one `if (field == kX) return ...;` per field, the last one unconditional
        lines = [f"    if (field == kRefinerDLA{name.capitalize()}) return {count(i)}; // {name} "
                 f"[{', '.join(map(str, shape))}]" for i, (name, shape) in enumerate(FIELDS)]
        return "\n".join(lines + [f"    return {count(len(FIELDS))};"])

    enum = "\n".join(f"    kRefinerDLA{name.capitalize()} = {i}," for i, name in enumerate(PACK_ORDER))
    names = ", ".join(f'"{name}"' for name in PACK_ORDER)
    sizes = chain(lambda i: _cpp_count(FIELDS[i:i + 1]) if i < len(FIELDS) else "0")
    offsets_ = chain(lambda i: _cpp_count(FIELDS[:i]))
    per_eh, per_e, per_h = _coefficients()
    return f"""\
// Generated from refiner_edge/refine/layout.py, the one description of the packed RefinerDLA weights; do not edit.
// Regenerate: python -m refiner_edge.refine.layout > plugins/refiner_dla/refinerDLALayout.h
// (tests/test_refine.py checks this file is current). H: heads, E: expanded channels.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define REFINER_DLA_HOST_DEVICE __host__ __device__
#else
#define REFINER_DLA_HOST_DEVICE
#endif

namespace refiner_edge
{{

//! The packed tensors, in buffer order.
enum RefinerDLAWeightField : int32_t
{{
{enum}
}};
constexpr int32_t kRefinerDLANbWeightFields = {len(FIELDS)};

//! The tensors' names in buffer order: the plugin creator's field names.
constexpr char const* kRefinerDLAWeightFieldNames[kRefinerDLANbWeightFields] = {{{names}}};

// Counts in the integer type Int for h heads and e expanded channels: size_t on the host, int32_t in the kernel
// (64-bit arithmetic there made ptxas spill registers on sm_80-sm_89).

//! Floats in one tensor (0 past the last).
template <typename Int>
REFINER_DLA_HOST_DEVICE constexpr Int refinerDLAFieldSize(int32_t field, Int h, Int e)
{{
{sizes}
}}

//! Where one tensor starts in the packed buffer, in floats (the buffer's length past the last).
template <typename Int>
REFINER_DLA_HOST_DEVICE constexpr Int refinerDLAFieldOffset(int32_t field, Int h, Int e)
{{
{offsets_}
}}

//! Floats in the packed buffer.
REFINER_DLA_HOST_DEVICE constexpr size_t refinerDLAWeightCount(int32_t heads, int32_t expanded)
{{
    return refinerDLAFieldOffset<size_t>(kRefinerDLANbWeightFields, heads, expanded);
}}

//! E from the packed buffer's length for H heads; -1 where no E fits.
constexpr int32_t refinerDLAExpandedOf(int64_t count, int32_t heads)
{{
    int64_t const h = heads;
    int64_t const e = h > 0 ? (count - {per_h} * h) / ({per_eh} * h + {per_e}) : 0;
    bool const fits = e >= 1 && e <= INT32_MAX
        && static_cast<int64_t>(refinerDLAWeightCount(heads, static_cast<int32_t>(e))) == count;
    return fits ? static_cast<int32_t>(e) : -1;
}}

}} // namespace refiner_edge
"""


if __name__ == "__main__":
    sys.stdout.write(cpp_header())
