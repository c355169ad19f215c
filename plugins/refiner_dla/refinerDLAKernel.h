// RefinerDLA CUDA kernel: the Refiner-ViT attention refinement (DLA + adapt_bn + scale, folded) in one pass.
//
//   out[b,h] = sum_e W2[h,e] * x2[b,e] + b2[h] + alpha[h] * A[b,h]
//   x2[b,e]  = relu6(dw3x3(x1[b,e]; Wd[e]) + bd[e])        (x1 is zero outside the map)
//   x1[b,e]  = relu6(sum_h W1[e,h] * A[b,h] + b1[e])
//
// A and out are [batch, heads, rows, cols] in linear (NCHW) layout, FP32 or FP16 (the same for both),
// accumulated in FP32. This header needs only the CUDA runtime, so the TensorRT plugin, the PyTorch extension
// and the tests share the kernel.
#pragma once

// The packed weight buffer (tensor order, sizes, offsets, refinerDLAWeightCount), generated from
// refiner_edge/refine/layout.py.
#include "refinerDLALayout.h"

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

namespace refiner_edge
{

enum class RefinerDLAType : int32_t
{
    kFLOAT32 = 0,
    kFLOAT16 = 1,
};

//! Largest head count the kernel is instantiated for (Refiner-ViT uses 12 and 16).
constexpr int32_t kRefinerDLAMaxHeads = 32;

//! Dynamic shared memory one block needs (weights, the input tile with its halo, one chunk of x1).
size_t refinerDLASharedBytes(int32_t heads, int32_t expanded);

//! nullptr when the shape is supported on the current device, else a sentence saying what is not.
char const* refinerDLAUnsupported(int32_t batch, int32_t heads, int32_t expanded, int32_t rows, int32_t cols);

//! Launch on `stream`. `weights` is a device pointer to the packed float32 buffer.
//! Returns cudaErrorInvalidValue for unsupported shapes (see refinerDLAUnsupported), else the launch status.
cudaError_t launchRefinerDLA(void const* input, void* output, RefinerDLAType type, float const* weights,
    int32_t batch, int32_t heads, int32_t expanded, int32_t rows, int32_t cols, cudaStream_t stream);

} // namespace refiner_edge
