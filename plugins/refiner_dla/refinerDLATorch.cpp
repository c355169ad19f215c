// PyTorch extension around the RefinerDLA kernel (built on demand by refiner_edge/refine/torch_op.py).
#include "refinerDLAKernel.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <map>
#include <mutex>

namespace
{

// The device's shared-memory limit, read once per device rather than on every call.
size_t maxSharedBytes(c10::DeviceIndex index)
{
    static std::mutex mutex;
    static std::map<c10::DeviceIndex, size_t> limits;
    std::lock_guard<std::mutex> lock(mutex);
    auto found = limits.find(index);
    if (found == limits.end())
    {
        refiner_edge::RefinerDLADevice device;
        cudaError_t const status = refiner_edge::refinerDLAQueryDevice(device);
        TORCH_CHECK(status == cudaSuccess, "RefinerDLA: cannot query the CUDA device: ", cudaGetErrorString(status));
        found = limits.emplace(index, device.maxSharedBytes).first;
    }
    return found->second;
}

torch::Tensor forwardOut(torch::Tensor const& a, torch::Tensor const& weights, int64_t heads, torch::Tensor out)
{
    TORCH_CHECK(a.is_cuda() && weights.is_cuda() && out.is_cuda(), "RefinerDLA: tensors must be on a CUDA device");
    TORCH_CHECK(a.dim() == 4, "RefinerDLA: the map must be [batch, heads, rows, cols], got ", a.dim(), " dims");
    TORCH_CHECK(a.size(1) == heads, "RefinerDLA: the map has ", a.size(1), " heads, the weights are for ", heads);
    TORCH_CHECK(a.scalar_type() == torch::kFloat32 || a.scalar_type() == torch::kFloat16,
        "RefinerDLA: the map must be float32 or float16");
    TORCH_CHECK(out.scalar_type() == a.scalar_type() && out.sizes() == a.sizes(), "RefinerDLA: bad output tensor");
    TORCH_CHECK(weights.scalar_type() == torch::kFloat32 && weights.dim() == 1, "RefinerDLA: weights must be 1-D float32");
    TORCH_CHECK(heads >= 1 && heads <= refiner_edge::kRefinerDLAMaxHeads,
        "RefinerDLA: the number of heads must be between 1 and ", refiner_edge::kRefinerDLAMaxHeads, ", got ", heads);
    int32_t const expanded = refiner_edge::refinerDLAExpandedOf(weights.numel(), static_cast<int32_t>(heads));
    TORCH_CHECK(expanded > 0, "RefinerDLA: ", weights.numel(), " packed weights do not fit ", heads, " heads");
    auto const input = a.contiguous();
    TORCH_CHECK(out.is_contiguous(), "RefinerDLA: the output must be contiguous");
    c10::cuda::CUDAGuard guard(a.device());
    size_t const maxShared = maxSharedBytes(a.device().index());
    char const* reason = refiner_edge::refinerDLAUnsupported(a.size(0), static_cast<int32_t>(heads), expanded,
        a.size(2), a.size(3), maxShared);
    TORCH_CHECK(reason == nullptr, "RefinerDLA: ", reason);
    auto const type = a.scalar_type() == torch::kFloat16 ? refiner_edge::RefinerDLAType::kFLOAT16
                                                         : refiner_edge::RefinerDLAType::kFLOAT32;
    cudaError_t const status = refiner_edge::launchRefinerDLA(input.data_ptr(), out.data_ptr(), type,
        weights.contiguous().data_ptr<float>(), static_cast<int32_t>(a.size(0)), static_cast<int32_t>(heads),
        expanded, static_cast<int32_t>(a.size(2)), static_cast<int32_t>(a.size(3)), maxShared,
        c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(status == cudaSuccess, "RefinerDLA launch failed: ", cudaGetErrorString(status));
    return out;
}

torch::Tensor forward(torch::Tensor const& a, torch::Tensor const& weights, int64_t heads)
{
    return forwardOut(a, weights, heads, torch::empty_like(a, torch::MemoryFormat::Contiguous));
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("forward", &forward, "RefinerDLA forward (CUDA)");
    m.def("forward_out", &forwardOut, "RefinerDLA forward into a given output tensor (CUDA)");
}
