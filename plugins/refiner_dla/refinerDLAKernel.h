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

//! Dynamic shared memory a block may use without cudaFuncAttributeMaxDynamicSharedMemorySize.
constexpr size_t kRefinerDLADefaultSharedBytes = 48 * 1024;

//! The largest opt-in shared memory per block of any GPU the library is built for (sm_90/sm_100: 227 KiB);
//! heads x expanded channels needing more run nowhere, so the plugin refuses them before knowing the device.
constexpr size_t kRefinerDLAMaxSharedBytesAnyGpu = 227 * 1024;

//! Dynamic shared memory one block needs (weights, the input tile with its halo, one chunk of x1).
size_t refinerDLASharedBytes(int32_t heads, int32_t expanded);

//! What a launch needs to know of the device; read once (refinerDLAQueryDevice), not on every launch.
struct RefinerDLADevice
{
    int32_t id{-1};
    size_t maxSharedBytes{0}; //!< cudaDevAttrMaxSharedMemoryPerBlockOptin
};

//! Reads the current device's limits (cudaGetDevice, cudaDeviceGetAttribute).
cudaError_t refinerDLAQueryDevice(RefinerDLADevice& device);

//! nullptr when the shape is supported with `maxSharedBytes` of shared memory per block, else a sentence saying
//! what is not (no prefix: callers add their own). An empty map (a zero batch, rows or columns) is supported.
char const* refinerDLAUnsupported(
    int64_t batch, int32_t heads, int32_t expanded, int64_t rows, int64_t cols, size_t maxSharedBytes);

//! Launch on `stream`. `weights` is a device pointer to the packed float32 buffer. An empty map launches nothing.
//! Returns cudaErrorInvalidValue for unsupported shapes (see refinerDLAUnsupported), else the launch status.
cudaError_t launchRefinerDLA(void const* input, void* output, RefinerDLAType type, float const* weights,
    int32_t batch, int32_t heads, int32_t expanded, int32_t rows, int32_t cols, size_t maxSharedBytes,
    cudaStream_t stream);

} // namespace refiner_edge
