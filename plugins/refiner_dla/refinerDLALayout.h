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
{

//! The packed tensors, in buffer order.
enum RefinerDLAWeightField : int32_t
{
    kRefinerDLAW1 = 0,
    kRefinerDLAB1 = 1,
    kRefinerDLAWd = 2,
    kRefinerDLABd = 3,
    kRefinerDLAW2 = 4,
    kRefinerDLAB2 = 5,
    kRefinerDLAAlpha = 6,
};
constexpr int32_t kRefinerDLANbWeightFields = 7;

//! The tensors' names in buffer order: the plugin creator's field names.
constexpr char const* kRefinerDLAWeightFieldNames[kRefinerDLANbWeightFields] = {"w1", "b1", "wd", "bd", "w2", "b2", "alpha"};

// Counts in the integer type Int for h heads and e expanded channels: size_t on the host, int32_t in the kernel
// (64-bit arithmetic there made ptxas spill registers on sm_80-sm_89).

//! Floats in one tensor (0 past the last).
template <typename Int>
REFINER_DLA_HOST_DEVICE constexpr Int refinerDLAFieldSize(int32_t field, Int h, Int e)
{
    if (field == kRefinerDLAW1) return e * h; // w1 [E, H]
    if (field == kRefinerDLAB1) return e; // b1 [E]
    if (field == kRefinerDLAWd) return 9 * e; // wd [E, 3, 3]
    if (field == kRefinerDLABd) return e; // bd [E]
    if (field == kRefinerDLAW2) return e * h; // w2 [H, E]
    if (field == kRefinerDLAB2) return h; // b2 [H]
    if (field == kRefinerDLAAlpha) return h; // alpha [H]
    return 0;
}

//! Where one tensor starts in the packed buffer, in floats (the buffer's length past the last).
template <typename Int>
REFINER_DLA_HOST_DEVICE constexpr Int refinerDLAFieldOffset(int32_t field, Int h, Int e)
{
    if (field == kRefinerDLAW1) return 0; // w1 [E, H]
    if (field == kRefinerDLAB1) return e * h; // b1 [E]
    if (field == kRefinerDLAWd) return e * h + e; // wd [E, 3, 3]
    if (field == kRefinerDLABd) return e * h + 10 * e; // bd [E]
    if (field == kRefinerDLAW2) return e * h + 11 * e; // w2 [H, E]
    if (field == kRefinerDLAB2) return 2 * e * h + 11 * e; // b2 [H]
    if (field == kRefinerDLAAlpha) return 2 * e * h + 11 * e + h; // alpha [H]
    return 2 * e * h + 11 * e + 2 * h;
}

//! Floats in the packed buffer.
REFINER_DLA_HOST_DEVICE constexpr size_t refinerDLAWeightCount(int32_t heads, int32_t expanded)
{
    return refinerDLAFieldOffset<size_t>(kRefinerDLANbWeightFields, heads, expanded);
}

//! E from the packed buffer's length for H heads; -1 where no E fits.
constexpr int32_t refinerDLAExpandedOf(int64_t count, int32_t heads)
{
    int64_t const h = heads;
    int64_t const e = h > 0 ? (count - 2 * h) / (2 * h + 11) : 0;
    bool const fits = e >= 1 && e <= INT32_MAX
        && static_cast<int64_t>(refinerDLAWeightCount(heads, static_cast<int32_t>(e))) == count;
    return fits ? static_cast<int32_t>(e) : -1;
}

} // namespace refiner_edge
