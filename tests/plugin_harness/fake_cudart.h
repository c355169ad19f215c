// Controls of the harness's host-memory CUDA runtime (fake_cudart.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

struct CUstream_st;

struct FakeCudaLaunch
{
    char kernel[256];
    uint32_t grid[3];
    uint32_t block[3];
    size_t shared;
    CUstream_st* stream;
    bool captured; //!< launched while the harness played stream capture
    bool valid;    //!< within the device limits
};

extern "C" {
void fakeCudaReset(); //!< forgets calls, launches and violations (not allocations)
void fakeCudaSetCapturing(int capturing);
void fakeCudaSetOptinShared(int bytes);
void fakeCudaFailNextMallocs(int n);
int fakeCudaCalls(char const* name);
size_t fakeCudaLiveAllocations(size_t* bytes);
size_t fakeCudaLaunches(FakeCudaLaunch* out, size_t capacity);
size_t fakeCudaViolations(char* out, size_t capacity);
}
