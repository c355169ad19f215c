// RefinerDLA TensorRT plugin (IPluginV3): name "RefinerDLA", version "1", namespace "refiner_edge".
// One input, the attention map A [B, H, N, N]; one output of the same shape and type (FP32 or FP16, linear).
// Fields: num_heads, num_expanded (INT32/INT64) and w1, b1, wd, bd, w2, b2, alpha (FLOAT32), serialized in the engine.
#pragma once

#include "NvInfer.h"
#include "NvInferRuntime.h"

#include "refinerDLAKernel.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace refiner_edge
{

//! The packed weights, on the host and (once per device) on the GPU, shared by a plugin and all its clones:
//! read-only once made, so execution contexts on one device share one device copy.
class RefinerDLAWeights
{
public:
    explicit RefinerDLAWeights(std::vector<float> host);
    RefinerDLAWeights(RefinerDLAWeights const&) = delete;
    RefinerDLAWeights& operator=(RefinerDLAWeights const&) = delete;
    ~RefinerDLAWeights();

    std::vector<float> const& host() const noexcept
    {
        return mHost;
    }
    //! The device copy for `device` (the current one), made on first request; nullptr (and `error` set) on failure.
    float const* device(int32_t device, std::string& error) noexcept;

private:
    std::vector<float> const mHost;
    std::mutex mMutex;
    std::vector<std::pair<int32_t, float*>> mDevice;
};

class RefinerDLAPlugin : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuild,
                         public nvinfer1::IPluginV3OneRuntime
{
public:
    //! weights: packed in refinerDLAKernel.h order, refinerDLAWeightCount(heads, expanded) floats.
    RefinerDLAPlugin(int32_t heads, int32_t expanded, std::vector<float> weights, std::string const& ns);
    RefinerDLAPlugin(RefinerDLAPlugin const& other);
    RefinerDLAPlugin& operator=(RefinerDLAPlugin const&) = delete;
    ~RefinerDLAPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    //! Reads the current device's limits once per plugin object; false (and logged) when that fails.
    bool readDevice() noexcept;
    //! Sets mDeviceWeights from the shared copy for this plugin's device; false (and logged) when that fails.
    bool attachWeights() noexcept;
    //! Empty when this plugin runs the 4-D map `dims` of type `type` on its device, else why not.
    std::string unsupported(nvinfer1::Dims const& dims, nvinfer1::DataType type) const;

    int32_t mHeads{};
    int32_t mExpanded{};
    std::shared_ptr<RefinerDLAWeights> mWeights;
    float const* mDeviceWeights{nullptr};
    RefinerDLADevice mDevice{};
    std::string mNamespace;
    std::vector<nvinfer1::PluginField> mFieldsToSerialize;
    nvinfer1::PluginFieldCollection mFCToSerialize{};
};

class RefinerDLAPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    RefinerDLAPluginCreator();
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFC{};
};

} // namespace refiner_edge

//! The TensorRT version ("MAJOR.MINOR.PATCH") whose headers the library was compiled against: a library built for
//! one major must not be loaded by another (ILogger/ILoggerFinder changed their layout in 11.0).
extern "C" __attribute__((visibility("default"))) char const* refinerEdgePluginTensorRTVersion();
