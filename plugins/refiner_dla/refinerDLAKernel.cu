// RefinerDLA kernel. One block computes a TILE_H x TILE_W patch of the map for all heads of one image:
// it reads the patch plus a one-pixel halo of A once into shared memory, computes x1 for the halo a chunk of
// expanded channels at a time (never recomputed per neighbour), applies the depthwise 3x3 and accumulates the W2
// projection in registers, then writes out. Global traffic: one read of A (plus the halo), one write of out.
#include "refinerDLAKernel.h"

#include <cuda_fp16.h>

#include <cstdint>

namespace refiner_edge
{
namespace
{

constexpr int32_t kTileW = 32;
constexpr int32_t kTileH = 8;
constexpr int32_t kHaloW = kTileW + 2;
constexpr int32_t kHaloH = kTileH + 2;
constexpr int32_t kHalo = kHaloW * kHaloH;
constexpr int32_t kThreads = kTileW * kTileH;
constexpr int32_t kChunk = 12; // expanded channels of x1 held in shared memory at a time
constexpr int32_t kMaxGridY = 65535;

__device__ __forceinline__ float toFloat(float v)
{
    return v;
}
__device__ __forceinline__ float toFloat(__half v)
{
    return __half2float(v);
}
template <typename T>
__device__ __forceinline__ T fromFloat(float v);
template <>
__device__ __forceinline__ float fromFloat<float>(float v)
{
    return v;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}
__device__ __forceinline__ float relu6(float v)
{
    return fminf(fmaxf(v, 0.F), 6.F);
}

// Map coordinates of halo position p of a tile whose halo starts at (r0, c0); false outside the map.
__device__ __forceinline__ bool haloToMap(
    int32_t p, int32_t r0, int32_t c0, int32_t rows, int32_t cols, int32_t& r, int32_t& c)
{
    r = r0 + p / kHaloW;
    c = c0 + p % kHaloW;
    return r >= 0 && r < rows && c >= 0 && c < cols;
}

size_t alignedWeightFloats(int32_t heads, int32_t expanded)
{
    return (refinerDLAWeightCount(heads, expanded) + 3) / 4 * 4; // keep the tiles 16-byte aligned
}

// MAXH: compile-time bound on the head count, so the per-thread accumulators stay in registers.
template <typename T, int32_t MAXH>
__global__ void __launch_bounds__(kThreads) refinerDLAKernel(T const* __restrict__ input, T* __restrict__ output,
    float const* __restrict__ weights, int32_t batch, int32_t heads, int32_t expanded, int32_t rows, int32_t cols,
    int32_t tilesX, int32_t weightFloats)
{
    extern __shared__ float4 smemRaw[];
    float* smem = reinterpret_cast<float*>(smemRaw);
    int32_t const H = heads;
    int32_t const E = expanded;
    float* sW = smem;
    float* sA = sW + weightFloats;   // [H][kHalo]
    float* sX = sA + H * kHalo;      // [kChunk][kHalo]
    // Each tensor follows the one before it (refinerDLALayout.h). Chained from the sizes: pointers taken from
    // each tensor's offset spilled 16-24 bytes of registers on sm_80-sm_89 (nvcc 13).
    float const* W1 = sW;                                                        // [E][H]
    float const* b1 = W1 + refinerDLAFieldSize<int32_t>(kRefinerDLAW1, H, E);    // [E]
    float const* Wd = b1 + refinerDLAFieldSize<int32_t>(kRefinerDLAB1, H, E);    // [E][9]
    float const* bd = Wd + refinerDLAFieldSize<int32_t>(kRefinerDLAWd, H, E);    // [E]
    float const* W2 = bd + refinerDLAFieldSize<int32_t>(kRefinerDLABd, H, E);    // [H][E]
    float const* b2 = W2 + refinerDLAFieldSize<int32_t>(kRefinerDLAW2, H, E);    // [H]
    float const* alpha = b2 + refinerDLAFieldSize<int32_t>(kRefinerDLAB2, H, E); // [H]

    int32_t const tid = threadIdx.x;
    int32_t const count = refinerDLAFieldOffset<int32_t>(kRefinerDLANbWeightFields, H, E);
    for (int32_t i = tid; i < count; i += kThreads)
    {
        sW[i] = weights[i];
    }

    int32_t const tileY = blockIdx.x / tilesX;
    int32_t const tileX = blockIdx.x % tilesX;
    int32_t const r0 = tileY * kTileH - 1; // map coordinates of the halo's top-left corner
    int32_t const c0 = tileX * kTileW - 1;
    int32_t const lr = tid / kTileW;       // this thread's output position inside the tile
    int32_t const lc = tid % kTileW;
    int32_t const r = r0 + 1 + lr;
    int32_t const c = c0 + 1 + lc;
    size_t const plane = static_cast<size_t>(rows) * cols;

    for (int32_t b = blockIdx.y; b < batch; b += gridDim.y)
    {
        T const* in = input + static_cast<size_t>(b) * H * plane;
        T* out = output + static_cast<size_t>(b) * H * plane;
        __syncthreads(); // weights loaded; the previous image's tiles are no longer read

        for (int32_t i = tid; i < H * kHalo; i += kThreads)
        {
            int32_t const h = i / kHalo;
            int32_t hr;
            int32_t hc;
            float v = 0.F;
            if (haloToMap(i - h * kHalo, r0, c0, rows, cols, hr, hc))
            {
                v = toFloat(in[h * plane + static_cast<size_t>(hr) * cols + hc]);
            }
            sA[i] = v;
        }
        __syncthreads();

        float acc[MAXH];
#pragma unroll
        for (int32_t h = 0; h < MAXH; ++h)
        {
            acc[h] = 0.F;
        }

        for (int32_t e0 = 0; e0 < E; e0 += kChunk)
        {
            int32_t const ec = min(kChunk, E - e0);
            // x1 over the halo for channels e0 .. e0+ec-1; zero outside the map (the depthwise conv's padding)
            for (int32_t i = tid; i < ec * kHalo; i += kThreads)
            {
                int32_t const k = i / kHalo;
                int32_t const p = i - k * kHalo;
                int32_t hr;
                int32_t hc;
                float v = 0.F;
                if (haloToMap(p, r0, c0, rows, cols, hr, hc))
                {
                    float const* w = W1 + (e0 + k) * H;
                    float s = b1[e0 + k];
                    for (int32_t h = 0; h < H; ++h)
                    {
                        s = fmaf(w[h], sA[h * kHalo + p], s);
                    }
                    v = relu6(s);
                }
                sX[k * kHalo + p] = v;
            }
            __syncthreads();

            for (int32_t k = 0; k < ec; ++k)
            {
                int32_t const e = e0 + k;
                float const* x = sX + k * kHalo + lr * kHaloW + lc;
                float const* w = Wd + 9 * e;
                float s = bd[e];
#pragma unroll
                for (int32_t i = 0; i < 3; ++i)
                {
#pragma unroll
                    for (int32_t j = 0; j < 3; ++j)
                    {
                        s = fmaf(w[3 * i + j], x[i * kHaloW + j], s);
                    }
                }
                s = relu6(s);
#pragma unroll
                for (int32_t h = 0; h < MAXH; ++h)
                {
                    if (h < H)
                    {
                        acc[h] = fmaf(W2[h * E + e], s, acc[h]);
                    }
                }
            }
            __syncthreads(); // sX is overwritten by the next chunk
        }

        if (r < rows && c < cols)
        {
            int32_t const centre = (lr + 1) * kHaloW + lc + 1;
#pragma unroll
            for (int32_t h = 0; h < MAXH; ++h)
            {
                if (h < H)
                {
                    float const v = acc[h] + b2[h] + alpha[h] * sA[h * kHalo + centre];
                    out[h * plane + static_cast<size_t>(r) * cols + c] = fromFloat<T>(v);
                }
            }
        }
    }
}

template <typename T, int32_t MAXH>
cudaError_t launchTyped(void const* input, void* output, float const* weights, int32_t batch, int32_t heads,
    int32_t expanded, int32_t rows, int32_t cols, cudaStream_t stream)
{
    auto kernel = refinerDLAKernel<T, MAXH>;
    size_t const shared = refinerDLASharedBytes(heads, expanded);
    if (shared > kRefinerDLADefaultSharedBytes)
    {
        // per launch: the attribute belongs to the current device's context, which may change between launches
        cudaError_t const status
            = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
        if (status != cudaSuccess)
        {
            return status;
        }
    }
    // refinerDLAUnsupported has checked that the tile count fits grid.x (2^31 - 1) in 64-bit arithmetic
    int32_t const tilesX = static_cast<int32_t>((static_cast<int64_t>(cols) + kTileW - 1) / kTileW);
    int32_t const tilesY = static_cast<int32_t>((static_cast<int64_t>(rows) + kTileH - 1) / kTileH);
    dim3 const grid(static_cast<uint32_t>(static_cast<int64_t>(tilesX) * tilesY),
        static_cast<uint32_t>(batch < kMaxGridY ? batch : kMaxGridY));
    kernel<<<grid, kThreads, shared, stream>>>(static_cast<T const*>(input), static_cast<T*>(output), weights, batch,
        heads, expanded, rows, cols, tilesX, static_cast<int32_t>(alignedWeightFloats(heads, expanded)));
    return cudaGetLastError();
}

template <typename T>
cudaError_t dispatchHeads(void const* input, void* output, float const* weights, int32_t batch, int32_t heads,
    int32_t expanded, int32_t rows, int32_t cols, cudaStream_t stream)
{
#define REFINER_DLA_CASE(MAXH)                                                                                         \
    if (heads <= MAXH)                                                                                                 \
        return launchTyped<T, MAXH>(input, output, weights, batch, heads, expanded, rows, cols, stream);
    REFINER_DLA_CASE(4)
    REFINER_DLA_CASE(8)
    REFINER_DLA_CASE(12)
    REFINER_DLA_CASE(16)
    REFINER_DLA_CASE(24)
    REFINER_DLA_CASE(32)
#undef REFINER_DLA_CASE
    return cudaErrorInvalidValue;
}

} // namespace

size_t refinerDLASharedBytes(int32_t heads, int32_t expanded)
{
    return sizeof(float) * (alignedWeightFloats(heads, expanded) + static_cast<size_t>(heads) * kHalo + kChunk * kHalo);
}

cudaError_t refinerDLAQueryDevice(RefinerDLADevice& device)
{
    int id = 0;
    int shared = 0;
    cudaError_t status = cudaGetDevice(&id);
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, id);
    }
    if (status == cudaSuccess)
    {
        device.id = id;
        device.maxSharedBytes = static_cast<size_t>(shared);
    }
    return status;
}

char const* refinerDLAUnsupported(
    int64_t batch, int32_t heads, int32_t expanded, int64_t rows, int64_t cols, size_t maxSharedBytes)
{
    if (batch < 0 || rows < 0 || cols < 0)
    {
        return "the map's batch, rows and columns must not be negative";
    }
    if (batch > INT32_MAX || rows > INT32_MAX || cols > INT32_MAX)
    {
        return "the map's batch, rows and columns must each be below 2^31";
    }
    if (heads < 1 || heads > kRefinerDLAMaxHeads)
    {
        return "the number of heads must be between 1 and 32";
    }
    if (expanded < 1)
    {
        return "the number of expanded channels must be positive";
    }
    // 64-bit: one block per tile in grid.x, whose limit is 2^31 - 1
    if (((cols + kTileW - 1) / kTileW) * ((rows + kTileH - 1) / kTileH) > INT32_MAX)
    {
        return "the map has more tiles than one grid takes (2^31 - 1 blocks of 8 x 32 positions)";
    }
    if (refinerDLASharedBytes(heads, expanded) > maxSharedBytes)
    {
        return "heads x expanded channels need more shared memory per block than the GPU allows";
    }
    return nullptr;
}

cudaError_t launchRefinerDLA(void const* input, void* output, RefinerDLAType type, float const* weights,
    int32_t batch, int32_t heads, int32_t expanded, int32_t rows, int32_t cols, size_t maxSharedBytes,
    cudaStream_t stream)
{
    if (refinerDLAUnsupported(batch, heads, expanded, rows, cols, maxSharedBytes) != nullptr)
    {
        return cudaErrorInvalidValue;
    }
    if (batch == 0 || rows == 0 || cols == 0)
    {
        return cudaSuccess; // an empty tensor: nothing to compute, as TensorRT treats empty tensors
    }
    switch (type)
    {
    case RefinerDLAType::kFLOAT32:
        return dispatchHeads<float>(input, output, weights, batch, heads, expanded, rows, cols, stream);
    case RefinerDLAType::kFLOAT16:
        return dispatchHeads<__half>(input, output, weights, batch, heads, expanded, rows, cols, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace refiner_edge
