// RefinerDLA TensorRT plugin: glue between TensorRT's IPluginV3 interfaces and the kernel in refinerDLAKernel.cu.
#include "refinerDLAPlugin.h"

#include "refinerDLAKernel.h"

#include <cstring>
#include <exception>
#include <mutex>
#include <sstream>

using namespace nvinfer1;

namespace refiner_edge
{
namespace
{

char const* const kPluginName = "RefinerDLA";
char const* const kPluginVersion = "1";
char const* const kPluginNamespace = "refiner_edge";

constexpr int32_t kIn = 0;  // input index: the attention map
constexpr int32_t kOut = 1; // position of the output in supportsFormatCombination

ILoggerFinder* gLoggerFinder{nullptr};
std::mutex gLoggerMutex;

void log(ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::lock_guard<std::mutex> lock(gLoggerMutex);
        ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(severity, ("RefinerDLA: " + message).c_str());
        }
    }
    catch (...)
    {
    }
}

void logError(std::string const& message) noexcept
{
    log(ILogger::Severity::kERROR, message);
}

bool readInt(PluginField const& f, int32_t& value)
{
    if (f.length != 1 || f.data == nullptr)
    {
        return false;
    }
    if (f.type == PluginFieldType::kINT32)
    {
        value = *static_cast<int32_t const*>(f.data);
        return true;
    }
    if (f.type == PluginFieldType::kINT64)
    {
        int64_t const v = *static_cast<int64_t const*>(f.data);
        if (v < INT32_MIN || v > INT32_MAX)
        {
            return false;
        }
        value = static_cast<int32_t>(v);
        return true;
    }
    return false;
}

} // namespace

// ---------------------------------------------------------------------------------------------------------------
// RefinerDLAPlugin

RefinerDLAPlugin::RefinerDLAPlugin(int32_t heads, int32_t expanded, std::vector<float> weights, std::string const& ns)
    : mHeads(heads)
    , mExpanded(expanded)
    , mWeights(std::move(weights))
    , mNamespace(ns)
{
}

RefinerDLAPlugin::RefinerDLAPlugin(RefinerDLAPlugin const& other)
    : mHeads(other.mHeads)
    , mExpanded(other.mExpanded)
    , mWeights(other.mWeights)
    , mNamespace(other.mNamespace)
{
    // the device copy of the weights is per instance: a clone makes its own on first use
}

RefinerDLAPlugin::~RefinerDLAPlugin()
{
    if (mDeviceWeights != nullptr)
    {
        cudaFree(mDeviceWeights);
    }
}

IPluginCapability* RefinerDLAPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* RefinerDLAPlugin::clone() noexcept
{
    try
    {
        return new RefinerDLAPlugin(*this);
    }
    catch (std::exception const& e)
    {
        logError(std::string("clone failed: ") + e.what());
    }
    return nullptr;
}

char const* RefinerDLAPlugin::getPluginName() const noexcept
{
    return kPluginName;
}

char const* RefinerDLAPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* RefinerDLAPlugin::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

int32_t RefinerDLAPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t RefinerDLAPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != 1 || nbOutputs != 1 || in[kIn].desc.dims.nbDims != 4)
    {
        logError("expects one 4-D input [batch, heads, rows, cols] and one output");
        return -1;
    }
    int64_t const heads = in[kIn].desc.dims.d[1];
    if (heads != -1 && heads != mHeads)
    {
        std::ostringstream msg;
        msg << "the input has " << heads << " heads but the weights are for " << mHeads;
        logError(msg.str());
        return -1;
    }
    return 0;
}

int32_t RefinerDLAPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != 1 || nbInputs != 1)
    {
        return -1;
    }
    outputTypes[0] = inputTypes[kIn];
    return 0;
}

int32_t RefinerDLAPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /*exprBuilder*/) noexcept
{
    if (nbInputs != 1 || nbOutputs != 1 || inputs[kIn].nbDims != 4)
    {
        logError("expects one 4-D input [batch, heads, rows, cols]");
        return -1;
    }
    outputs[0] = inputs[kIn];
    return 0;
}

bool RefinerDLAPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != 1 || nbOutputs != 1 || pos < 0 || pos > kOut)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == kIn)
    {
        return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    }
    return desc.type == inOut[kIn].desc.type; // the output has the input's type
}

size_t RefinerDLAPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

int32_t RefinerDLAPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != 1 || nbOutputs != 1 || in[kIn].dims.nbDims != 4 || in[kIn].dims.d[1] != mHeads)
    {
        logError("input shape does not match the plugin's head count");
        return -1;
    }
    return ensureDeviceWeights() ? 0 : -1;
}

bool RefinerDLAPlugin::ensureDeviceWeights() noexcept
{
    if (mDeviceWeights != nullptr)
    {
        return true;
    }
    size_t const bytes = mWeights.size() * sizeof(float);
    cudaError_t status = cudaMalloc(reinterpret_cast<void**>(&mDeviceWeights), bytes);
    if (status == cudaSuccess)
    {
        status = cudaMemcpy(mDeviceWeights, mWeights.data(), bytes, cudaMemcpyHostToDevice);
    }
    if (status != cudaSuccess)
    {
        logError(std::string("cannot copy the weights to the GPU: ") + cudaGetErrorString(status));
        if (mDeviceWeights != nullptr)
        {
            cudaFree(mDeviceWeights);
            mDeviceWeights = nullptr;
        }
        return false;
    }
    return true;
}

int32_t RefinerDLAPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& d = inputDesc[kIn].dims;
        if (d.nbDims != 4 || d.d[1] != mHeads)
        {
            logError("enqueue: input is not [batch, heads, rows, cols] with the plugin's head count");
            return -1;
        }
        if (!ensureDeviceWeights())
        {
            return -1;
        }
        int32_t const batch = static_cast<int32_t>(d.d[0]);
        int32_t const rows = static_cast<int32_t>(d.d[2]);
        int32_t const cols = static_cast<int32_t>(d.d[3]);
        RefinerDLAType const type
            = inputDesc[kIn].type == DataType::kHALF ? RefinerDLAType::kFLOAT16 : RefinerDLAType::kFLOAT32;
        cudaError_t const status = launchRefinerDLA(
            inputs[kIn], outputs[0], type, mDeviceWeights, batch, mHeads, mExpanded, rows, cols, stream);
        if (status != cudaSuccess)
        {
            // the launcher checks the shape itself; only on failure is the reason worth looking up
            char const* reason = refinerDLAUnsupported(batch, mHeads, mExpanded, rows, cols);
            logError(reason != nullptr ? std::string(reason)
                                       : std::string("kernel launch failed: ") + cudaGetErrorString(status));
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string("enqueue failed: ") + e.what());
    }
    return -1;
}

IPluginV3* RefinerDLAPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* RefinerDLAPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        mFieldsToSerialize.clear();
        mFieldsToSerialize.emplace_back("num_heads", &mHeads, PluginFieldType::kINT32, 1);
        mFieldsToSerialize.emplace_back("num_expanded", &mExpanded, PluginFieldType::kINT32, 1);
        for (int32_t i = 0; i < kRefinerDLANbWeightFields; ++i)
        {
            mFieldsToSerialize.emplace_back(kRefinerDLAWeightFieldNames[i],
                mWeights.data() + refinerDLAFieldOffset<size_t>(i, mHeads, mExpanded), PluginFieldType::kFLOAT32,
                static_cast<int32_t>(refinerDLAFieldSize<size_t>(i, mHeads, mExpanded)));
        }
        mFCToSerialize.nbFields = static_cast<int32_t>(mFieldsToSerialize.size());
        mFCToSerialize.fields = mFieldsToSerialize.data();
        return &mFCToSerialize;
    }
    catch (std::exception const& e)
    {
        logError(std::string("serialization failed: ") + e.what());
    }
    return nullptr;
}

// ---------------------------------------------------------------------------------------------------------------
// RefinerDLAPluginCreator

RefinerDLAPluginCreator::RefinerDLAPluginCreator()
{
    mFields.emplace_back("num_heads", nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back("num_expanded", nullptr, PluginFieldType::kINT32, 1);
    for (char const* name : kRefinerDLAWeightFieldNames)
    {
        mFields.emplace_back(name, nullptr, PluginFieldType::kFLOAT32, 0);
    }
    mFC.nbFields = static_cast<int32_t>(mFields.size());
    mFC.fields = mFields.data();
}

char const* RefinerDLAPluginCreator::getPluginName() const noexcept
{
    return kPluginName;
}

char const* RefinerDLAPluginCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* RefinerDLAPluginCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

PluginFieldCollection const* RefinerDLAPluginCreator::getFieldNames() noexcept
{
    return &mFC;
}

IPluginV3* RefinerDLAPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        if (fc == nullptr)
        {
            logError("no fields given");
            return nullptr;
        }
        int32_t heads = -1;
        int32_t expanded = -1;
        PluginField const* weights[kRefinerDLANbWeightFields] = {};
        for (int32_t i = 0; i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            std::string const field = f.name != nullptr ? f.name : "";
            if (field == "num_heads" || field == "num_expanded")
            {
                if (!readInt(f, field == "num_heads" ? heads : expanded))
                {
                    logError("field " + field + " must be one INT32 or INT64 value");
                    return nullptr;
                }
                continue;
            }
            bool known = false;
            for (int32_t w = 0; w < kRefinerDLANbWeightFields; ++w)
            {
                if (field == kRefinerDLAWeightFieldNames[w])
                {
                    if (f.type != PluginFieldType::kFLOAT32 || f.data == nullptr)
                    {
                        logError("field " + field + " must be FLOAT32 values");
                        return nullptr;
                    }
                    weights[w] = &f;
                    known = true;
                }
            }
            // the ONNX parser's selectors may be passed through; anything else is a mistake worth reporting
            if (!known && field != "plugin_version" && field != "plugin_namespace")
            {
                log(ILogger::Severity::kWARNING, "ignoring unknown field " + field);
            }
        }
        if (heads < 1 || heads > kRefinerDLAMaxHeads || expanded < 1)
        {
            std::ostringstream msg;
            msg << "num_heads must be in [1, " << kRefinerDLAMaxHeads << "] and num_expanded positive, got "
                << heads << " and " << expanded;
            logError(msg.str());
            return nullptr;
        }
        std::vector<float> packed;
        packed.reserve(refinerDLAWeightCount(heads, expanded));
        for (int32_t w = 0; w < kRefinerDLANbWeightFields; ++w)
        {
            size_t const expected = refinerDLAFieldSize<size_t>(w, heads, expanded);
            if (weights[w] == nullptr || static_cast<size_t>(weights[w]->length) != expected)
            {
                std::ostringstream msg;
                msg << "field " << kRefinerDLAWeightFieldNames[w] << " must hold " << expected << " floats for "
                    << heads << " heads and " << expanded << " expanded channels";
                logError(msg.str());
                return nullptr;
            }
            auto const* data = static_cast<float const*>(weights[w]->data);
            packed.insert(packed.end(), data, data + expected);
        }
        (void) name;
        return new RefinerDLAPlugin(heads, expanded, std::move(packed), kPluginNamespace);
    }
    catch (std::exception const& e)
    {
        logError(std::string("createPlugin failed: ") + e.what());
    }
    return nullptr;
}

} // namespace refiner_edge

// ---------------------------------------------------------------------------------------------------------------
// Entry points for IPluginRegistry::loadLibrary, tensorrt.get_plugin_registry().load_library() and
// trtexec --dynamicPlugins. (TENSORRTAPI exports only inside TensorRT's own build, so the visibility is ours.)
#define REFINER_EDGE_EXPORT __attribute__((visibility("default")))

extern "C" REFINER_EDGE_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    std::lock_guard<std::mutex> lock(refiner_edge::gLoggerMutex);
    refiner_edge::gLoggerFinder = finder;
}

extern "C" REFINER_EDGE_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static refiner_edge::RefinerDLAPluginCreator creator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}
