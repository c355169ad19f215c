// A host-memory CUDA runtime for the plugin harness: the runtime calls the plugin and nvcc's host stubs make,
// backed by malloc (so LeakSanitizer sees device memory that is never freed), recording every kernel launch and
// checking it against an H100's limits. Nothing runs on a GPU; kernels are recorded, not executed.
#include "fake_cudart.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace
{

// Pointers are kept masked: a table of live allocations must not make them reachable for LeakSanitizer.
constexpr uintptr_t kMask = static_cast<uintptr_t>(0xa5a5a5a5a5a5a5a5ULL);

struct State
{
    std::mutex mutex;
    std::map<uintptr_t, size_t> live;           // masked pointer -> bytes
    std::map<std::string, int> calls;           // runtime call counts
    std::map<void const*, std::string> kernels; // host stub -> device name (__cudaRegisterFunction)
    std::map<void const*, int> maxDynamicShared;
    std::vector<FakeCudaLaunch> launches;
    std::vector<std::string> violations;
    bool capturing{false};
    int failMallocs{0};
    int device{0};
    int optinShared{227 * 1024}; // H100: cudaDevAttrMaxSharedMemoryPerBlockOptin
};

State& state()
{
    static State* s = new State; // never destroyed: static destructors of other libraries may still call in
    return *s;
}

thread_local cudaError_t tLastError = cudaSuccess;

struct CallConfig
{
    dim3 grid;
    dim3 block;
    size_t shared;
    cudaStream_t stream;
};
thread_local std::vector<CallConfig> tConfigs;

void tally(char const* name)
{
    std::lock_guard<std::mutex> lock(state().mutex);
    ++state().calls[name];
}

// A synchronous call inside stream capture invalidates the capture (cudaErrorStreamCaptureUnsupported).
bool refusedInCapture(char const* name)
{
    std::lock_guard<std::mutex> lock(state().mutex);
    ++state().calls[name];
    if (state().capturing)
    {
        state().violations.push_back(std::string(name) + " during stream capture");
        return true;
    }
    return false;
}

} // namespace

extern "C" {

// ---- the runtime API the plugin uses

cudaError_t cudaMalloc(void** ptr, size_t size)
{
    if (refusedInCapture("cudaMalloc"))
    {
        return cudaErrorStreamCaptureUnsupported;
    }
    if (ptr == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    {
        std::lock_guard<std::mutex> lock(state().mutex);
        if (state().failMallocs > 0)
        {
            --state().failMallocs;
            *ptr = nullptr;
            return cudaErrorMemoryAllocation;
        }
    }
    void* p = std::malloc(size == 0 ? 1 : size);
    if (p == nullptr)
    {
        return cudaErrorMemoryAllocation;
    }
    std::memset(p, 0xcd, size); // device memory is not zeroed
    std::lock_guard<std::mutex> lock(state().mutex);
    state().live[reinterpret_cast<uintptr_t>(p) ^ kMask] = size;
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void* ptr)
{
    if (refusedInCapture("cudaFree"))
    {
        return cudaErrorStreamCaptureUnsupported;
    }
    if (ptr == nullptr)
    {
        return cudaSuccess;
    }
    {
        std::lock_guard<std::mutex> lock(state().mutex);
        auto found = state().live.find(reinterpret_cast<uintptr_t>(ptr) ^ kMask);
        if (found == state().live.end())
        {
            state().violations.push_back("cudaFree of a pointer cudaMalloc did not return (or freed twice)");
            return cudaErrorInvalidValue;
        }
        state().live.erase(found);
    }
    std::free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, void const* src, size_t count, cudaMemcpyKind /*kind*/)
{
    if (refusedInCapture("cudaMemcpy"))
    {
        return cudaErrorStreamCaptureUnsupported;
    }
    std::memcpy(dst, src, count);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, void const* src, size_t count, cudaMemcpyKind /*kind*/, cudaStream_t /*s*/)
{
    tally("cudaMemcpyAsync");
    std::memcpy(dst, src, count);
    return cudaSuccess;
}

char const* cudaGetErrorString(cudaError_t error)
{
    switch (error)
    {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    default: break;
    }
    return "unknown error";
}

char const* cudaGetErrorName(cudaError_t error)
{
    return cudaGetErrorString(error);
}

cudaError_t cudaGetLastError()
{
    tally("cudaGetLastError");
    cudaError_t const e = tLastError;
    tLastError = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError()
{
    return tLastError;
}

cudaError_t cudaGetDevice(int* device)
{
    tally("cudaGetDevice");
    std::lock_guard<std::mutex> lock(state().mutex);
    *device = state().device;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    tally("cudaSetDevice");
    std::lock_guard<std::mutex> lock(state().mutex);
    state().device = device;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int /*device*/)
{
    tally("cudaDeviceGetAttribute");
    std::lock_guard<std::mutex> lock(state().mutex);
    switch (attr)
    {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = state().optinShared; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrMaxGridDimX: *value = 0x7fffffff; return cudaSuccess;
    case cudaDevAttrMaxGridDimY:
    case cudaDevAttrMaxGridDimZ: *value = 65535; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = 132; return cudaSuccess;
    default: break;
    }
    return cudaErrorInvalidValue;
}

cudaError_t cudaFuncSetAttribute(void const* func, cudaFuncAttribute attr, int value)
{
    tally("cudaFuncSetAttribute");
    std::lock_guard<std::mutex> lock(state().mutex);
    if (state().kernels.count(func) == 0)
    {
        state().violations.push_back("cudaFuncSetAttribute on a function nvcc never registered");
        return cudaErrorInvalidDeviceFunction;
    }
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize)
    {
        if (value < 0 || value > state().optinShared)
        {
            return cudaErrorInvalidValue; // what the runtime answers past the device's opt-in limit
        }
        state().maxDynamicShared[func] = value;
    }
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t /*stream*/, cudaStreamCaptureStatus* status)
{
    tally("cudaStreamIsCapturing");
    std::lock_guard<std::mutex> lock(state().mutex);
    *status = state().capturing ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}

// ---- nvcc's host-stub ABI (crt/host_runtime.h, crt/device_functions.h)

void** __cudaRegisterFatBinary(void* fatCubin)
{
    tally("__cudaRegisterFatBinary");
    return static_cast<void**>(new void*(fatCubin));
}

void __cudaRegisterFatBinaryEnd(void** /*handle*/)
{
    tally("__cudaRegisterFatBinaryEnd");
}

void __cudaUnregisterFatBinary(void** handle)
{
    tally("__cudaUnregisterFatBinary");
    delete handle;
}

void __cudaRegisterFunction(void** /*handle*/, char const* hostFun, char* /*deviceFun*/, char const* deviceName,
    int /*threadLimit*/, uint3* /*tid*/, uint3* /*bid*/, dim3* /*bDim*/, dim3* /*gDim*/, int* /*wSize*/)
{
    std::lock_guard<std::mutex> lock(state().mutex);
    ++state().calls["__cudaRegisterFunction"];
    state().kernels[hostFun] = deviceName;
}

void __cudaRegisterVar(void** /*handle*/, char* /*hostVar*/, char* /*deviceAddress*/, char const* /*deviceName*/,
    int /*ext*/, size_t /*size*/, int /*constant*/, int /*global*/)
{
    tally("__cudaRegisterVar");
}

unsigned __cudaPushCallConfiguration(dim3 grid, dim3 block, size_t shared, struct CUstream_st* stream)
{
    tConfigs.push_back(CallConfig{grid, block, shared, stream});
    return 0;
}

cudaError_t __cudaPopCallConfiguration(dim3* grid, dim3* block, size_t* shared, void* stream)
{
    if (tConfigs.empty())
    {
        return cudaErrorInvalidConfiguration;
    }
    CallConfig const c = tConfigs.back();
    tConfigs.pop_back();
    *grid = c.grid;
    *block = c.block;
    *shared = c.shared;
    *static_cast<cudaStream_t*>(stream) = c.stream;
    return cudaSuccess;
}

cudaError_t __cudaGetKernel(cudaKernel_t* kernel, void const* fun)
{
    std::lock_guard<std::mutex> lock(state().mutex);
    if (state().kernels.count(fun) == 0)
    {
        return cudaErrorInvalidDeviceFunction;
    }
    *kernel = reinterpret_cast<cudaKernel_t>(const_cast<void*>(fun));
    return cudaSuccess;
}

static cudaError_t launch(void const* fun, dim3 grid, dim3 block, size_t shared, cudaStream_t stream)
{
    std::lock_guard<std::mutex> lock(state().mutex);
    State& s = state();
    ++s.calls["launch"];
    FakeCudaLaunch record{};
    auto name = s.kernels.find(fun);
    std::snprintf(record.kernel, sizeof(record.kernel), "%s", name != s.kernels.end() ? name->second.c_str() : "?");
    record.grid[0] = grid.x;
    record.grid[1] = grid.y;
    record.grid[2] = grid.z;
    record.block[0] = block.x;
    record.block[1] = block.y;
    record.block[2] = block.z;
    record.shared = shared;
    record.stream = stream;
    record.captured = s.capturing;
    std::string problem;
    uint64_t const threads = static_cast<uint64_t>(block.x) * block.y * block.z;
    auto attr = s.maxDynamicShared.find(fun);
    size_t const sharedLimit = attr != s.maxDynamicShared.end() ? static_cast<size_t>(attr->second) : 48 * 1024;
    if (name == s.kernels.end())
    {
        problem = "launch of a kernel nvcc never registered";
    }
    else if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0)
    {
        problem = "a zero grid or block dimension";
    }
    else if (threads > 1024 || block.z > 64)
    {
        problem = "more than 1024 threads per block";
    }
    else if (grid.x > 0x7fffffffU || grid.y > 65535 || grid.z > 65535)
    {
        problem = "grid over 2^31-1 x 65535 x 65535";
    }
    else if (shared > sharedLimit)
    {
        problem = "dynamic shared memory " + std::to_string(shared) + " over the function's limit "
            + std::to_string(sharedLimit) + " (48 KiB unless cudaFuncAttributeMaxDynamicSharedMemorySize)";
    }
    record.valid = problem.empty();
    s.launches.push_back(record);
    if (!problem.empty())
    {
        s.violations.push_back(std::string("invalid launch of ") + record.kernel + ": " + problem);
        tLastError = cudaErrorInvalidConfiguration;
        return cudaErrorInvalidConfiguration;
    }
    return cudaSuccess;
}

cudaError_t __cudaLaunchKernel(
    cudaKernel_t kernel, dim3 grid, dim3 block, void** /*args*/, size_t shared, cudaStream_t stream)
{
    return launch(reinterpret_cast<void const*>(kernel), grid, block, shared, stream);
}

cudaError_t __cudaLaunchKernel_ptsz(
    cudaKernel_t kernel, dim3 grid, dim3 block, void** /*args*/, size_t shared, cudaStream_t stream)
{
    return launch(reinterpret_cast<void const*>(kernel), grid, block, shared, stream);
}

cudaError_t cudaLaunchKernel(void const* func, dim3 grid, dim3 block, void** /*args*/, size_t shared, cudaStream_t stream)
{
    return launch(func, grid, block, shared, stream);
}

// ---- the harness's controls (fake_cudart.h)

void fakeCudaReset()
{
    std::lock_guard<std::mutex> lock(state().mutex);
    state().calls.clear();
    state().launches.clear();
    state().violations.clear();
    state().capturing = false;
    state().failMallocs = 0;
}

void fakeCudaSetCapturing(int capturing)
{
    std::lock_guard<std::mutex> lock(state().mutex);
    state().capturing = capturing != 0;
}

void fakeCudaSetOptinShared(int bytes)
{
    std::lock_guard<std::mutex> lock(state().mutex);
    state().optinShared = bytes;
}

void fakeCudaFailNextMallocs(int n)
{
    std::lock_guard<std::mutex> lock(state().mutex);
    state().failMallocs = n;
}

int fakeCudaCalls(char const* name)
{
    std::lock_guard<std::mutex> lock(state().mutex);
    auto found = state().calls.find(name);
    return found != state().calls.end() ? found->second : 0;
}

size_t fakeCudaLiveAllocations(size_t* bytes)
{
    std::lock_guard<std::mutex> lock(state().mutex);
    size_t total = 0;
    for (auto const& a : state().live)
    {
        total += a.second;
    }
    if (bytes != nullptr)
    {
        *bytes = total;
    }
    return state().live.size();
}

size_t fakeCudaLaunches(FakeCudaLaunch* out, size_t capacity)
{
    std::lock_guard<std::mutex> lock(state().mutex);
    for (size_t i = 0; i < state().launches.size() && i < capacity; ++i)
    {
        out[i] = state().launches[i];
    }
    return state().launches.size();
}

size_t fakeCudaViolations(char* out, size_t capacity)
{
    std::lock_guard<std::mutex> lock(state().mutex);
    std::string all;
    for (auto const& v : state().violations)
    {
        all += v + "\n";
    }
    if (out != nullptr && capacity > 0)
    {
        std::snprintf(out, capacity, "%s", all.c_str());
    }
    return state().violations.size();
}

} // extern "C"
