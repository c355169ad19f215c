// RefinerDLA TensorRT plugin: glue between TensorRT's IPluginV3 interfaces and the kernel in refinerDLAKernel.cu.
#include "refinerDLAPlugin.h"

#include "NvInferVersion.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <sstream>

using namespace nvinfer1;

// TensorRT's own entry points, weak: resolved when libnvinfer is linked (CMake links it where it finds it) or
// already in the global scope, null otherwise (a headers-only build loaded beside an RTLD_LOCAL libnvinfer), where
// they are looked up in the loaded library instead (findTensorRT).
extern "C" nvinfer1::IPluginRegistry* getPluginRegistry() noexcept __attribute__((weak));
extern "C" nvinfer1::ILogger* getLogger() noexcept __attribute__((weak));

namespace refiner_edge
{
namespace
{

char const* const kPluginName = "RefinerDLA";
char const* const kPluginVersion = "1";
char const* const kPluginNamespace = "refiner_edge";

constexpr int32_t kIn = 0;  // input index: the attention map
constexpr int32_t kOut = 1; // position of the output in supportsFormatCombination

using GetRegistry = IPluginRegistry* (*) () noexcept;
using GetLogger = ILogger* (*) () noexcept;

std::mutex gLoggerMutex;
ILoggerFinder* gLoggerFinder{nullptr}; // set by setLoggerFinder (IPluginRegistry::loadLibrary)
GetLogger gGlobalLogger{nullptr};      // TensorRT's global logger, for a library loaded by a bare dlopen

void log(ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::lock_guard<std::mutex> lock(gLoggerMutex);
        ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
        if (logger == nullptr && gGlobalLogger != nullptr)
        {
            logger = gGlobalLogger();
        }
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

//! One INT32 or INT64 value in [INT32_MIN, INT32_MAX]; else the reason.
char const* readInt(PluginField const& f, int32_t& value)
{
    if (f.length != 1 || f.data == nullptr)
    {
        return "must hold exactly one value";
    }
    if (f.type == PluginFieldType::kINT32)
    {
        std::memcpy(&value, f.data, sizeof(value)); // the parser's buffers need not be aligned
        return nullptr;
    }
    if (f.type == PluginFieldType::kINT64)
    {
        int64_t v = 0;
        std::memcpy(&v, f.data, sizeof(v));
        if (v < INT32_MIN || v > INT32_MAX)
        {
            return "is out of the 32-bit range";
        }
        value = static_cast<int32_t>(v);
        return nullptr;
    }
    return "must be INT32 or INT64";
}

char const* typeName(DataType type)
{
    switch (type)
    {
    case DataType::kFLOAT: return "FLOAT";
    case DataType::kHALF: return "HALF";
    default: break;
    }
    return "a type other than FLOAT or HALF";
}

bool supportedType(DataType type)
{
    return type == DataType::kFLOAT || type == DataType::kHALF;
}

std::string sharedMemoryReason(int32_t heads, int32_t expanded, size_t limit, char const* what)
{
    std::ostringstream msg;
    msg << "num_heads = " << heads << " with num_expanded = " << expanded << " needs "
        << refinerDLASharedBytes(heads, expanded) << " bytes of shared memory per block, over the " << limit
        << " bytes " << what;
    return msg.str();
}

} // namespace

// ---------------------------------------------------------------------------------------------------------------
// RefinerDLAWeights

RefinerDLAWeights::RefinerDLAWeights(std::vector<float> host)
    : mHost(std::move(host))
{
}

RefinerDLAWeights::~RefinerDLAWeights()
{
    for (auto const& copy : mDevice)
    {
        cudaFree(copy.second);
    }
}

float const* RefinerDLAWeights::device(int32_t device, std::string& error) noexcept
{
    try
    {
        std::lock_guard<std::mutex> lock(mMutex);
        for (auto const& copy : mDevice)
        {
            if (copy.first == device)
            {
                return copy.second;
            }
        }
        mDevice.reserve(mDevice.size() + 1); // no throw after the allocation below
        size_t const bytes = mHost.size() * sizeof(float);
        float* buffer = nullptr;
        cudaError_t status = cudaMalloc(reinterpret_cast<void**>(&buffer), bytes);
        if (status == cudaSuccess)
        {
            status = cudaMemcpy(buffer, mHost.data(), bytes, cudaMemcpyHostToDevice);
        }
        if (status != cudaSuccess)
        {
            error = std::string("cannot copy the weights to the GPU: ") + cudaGetErrorString(status);
            if (buffer != nullptr)
            {
                cudaFree(buffer);
            }
            return nullptr;
        }
        mDevice.emplace_back(device, buffer);
        return buffer;
    }
    catch (std::exception const& e)
    {
        error = std::string("cannot copy the weights to the GPU: ") + e.what();
    }
    return nullptr;
}

// ---------------------------------------------------------------------------------------------------------------
// RefinerDLAPlugin

RefinerDLAPlugin::RefinerDLAPlugin(int32_t heads, int32_t expanded, std::vector<float> weights, std::string const& ns)
    : mHeads(heads)
    , mExpanded(expanded)
    , mWeights(std::make_shared<RefinerDLAWeights>(std::move(weights)))
    , mNamespace(ns)
{
}

RefinerDLAPlugin::RefinerDLAPlugin(RefinerDLAPlugin const& other)
    : mHeads(other.mHeads)
    , mExpanded(other.mExpanded)
    , mWeights(other.mWeights) // shared: the weights never change, and one device copy serves every clone
    , mDeviceWeights(other.mDeviceWeights)
    , mDevice(other.mDevice)
    , mNamespace(other.mNamespace)
{
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

bool RefinerDLAPlugin::readDevice() noexcept
{
    if (mDevice.id >= 0)
    {
        return true;
    }
    RefinerDLADevice device;
    cudaError_t const status = refinerDLAQueryDevice(device);
    if (status != cudaSuccess)
    {
        logError(std::string("cannot query the CUDA device: ") + cudaGetErrorString(status));
        return false;
    }
    mDevice = device;
    return true;
}

bool RefinerDLAPlugin::attachWeights() noexcept
{
    if (!readDevice())
    {
        return false;
    }
    std::string error;
    mDeviceWeights = mWeights->device(mDevice.id, error);
    if (mDeviceWeights == nullptr)
    {
        logError(error);
        return false;
    }
    return true;
}

std::string RefinerDLAPlugin::unsupported(Dims const& d, DataType type) const
{
    if (d.nbDims != 4)
    {
        return "expects a 4-D input [batch, heads, rows, cols], got " + std::to_string(d.nbDims) + " dimensions";
    }
    if (d.d[1] != mHeads)
    {
        return "the input has " + std::to_string(d.d[1]) + " heads but the weights are for " + std::to_string(mHeads);
    }
    if (!supportedType(type))
    {
        return std::string("the input must be FLOAT or HALF, not ") + typeName(type);
    }
    char const* reason = refinerDLAUnsupported(d.d[0], mHeads, mExpanded, d.d[2], d.d[3], mDevice.maxSharedBytes);
    if (reason != nullptr)
    {
        std::ostringstream msg;
        msg << reason << " (input [" << d.d[0] << ", " << d.d[1] << ", " << d.d[2] << ", " << d.d[3] << "]";
        if (refinerDLASharedBytes(mHeads, mExpanded) > mDevice.maxSharedBytes)
        {
            msg << "; " << sharedMemoryReason(mHeads, mExpanded, mDevice.maxSharedBytes, "this GPU allows");
        }
        msg << ")";
        return msg.str();
    }
    return std::string();
}

int32_t RefinerDLAPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (in == nullptr || out == nullptr || nbInputs != 1 || nbOutputs != 1 || in[kIn].desc.dims.nbDims != 4)
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
        // the build's device: refuse here what every enqueue would refuse (the limits are read once)
        if (!readDevice())
        {
            return -1;
        }
        if (refinerDLASharedBytes(mHeads, mExpanded) > mDevice.maxSharedBytes)
        {
            logError(sharedMemoryReason(mHeads, mExpanded, mDevice.maxSharedBytes,
                "this GPU allows (cudaDevAttrMaxSharedMemoryPerBlockOptin)"));
            return -1;
        }
        // the largest shape the profile admits must fit a grid and 32-bit indices
        Dims const& max = in[kIn].max;
        if (max.nbDims == 4 && max.d[0] >= 0 && max.d[2] >= 0 && max.d[3] >= 0) // -1: not known yet
        {
            char const* reason
                = refinerDLAUnsupported(max.d[0], mHeads, mExpanded, max.d[2], max.d[3], mDevice.maxSharedBytes);
            if (reason != nullptr)
            {
                logError(std::string("the profile's largest input: ") + reason);
                return -1;
            }
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string("configurePlugin failed: ") + e.what());
    }
    return -1;
}

int32_t RefinerDLAPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != 1 || nbInputs != 1)
    {
        logError("expects one input and one output");
        return -1;
    }
    if (!supportedType(inputTypes[kIn]))
    {
        logError("the input must be FLOAT or HALF: the kernel has no other type");
        return -1;
    }
    outputTypes[0] = inputTypes[kIn];
    return 0;
}

int32_t RefinerDLAPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /*exprBuilder*/) noexcept
{
    if (inputs == nullptr || outputs == nullptr || nbInputs != 1 || nbOutputs != 1 || inputs[kIn].nbDims != 4)
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
    if (inOut == nullptr || nbInputs != 1 || nbOutputs != 1 || pos < 0 || pos > kOut)
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
        return supportedType(desc.type);
    }
    return desc.type == inOut[kIn].desc.type && supportedType(desc.type); // the output has the input's type
}

size_t RefinerDLAPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

int32_t RefinerDLAPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        if (in == nullptr || nbInputs != 1 || nbOutputs != 1)
        {
            logError("expects one input and one output");
            return -1;
        }
        // no allocation here: this runs inside enqueueV3, possibly under stream capture
        if (!readDevice())
        {
            return -1;
        }
        std::string const reason = unsupported(in[kIn].dims, in[kIn].type);
        if (!reason.empty())
        {
            logError(reason);
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(std::string("onShapeChange failed: ") + e.what());
    }
    return -1;
}

int32_t RefinerDLAPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    try
    {
        if (inputDesc == nullptr || inputs == nullptr || outputs == nullptr)
        {
            logError("enqueue: no input or output given");
            return -1;
        }
        if (!readDevice())
        {
            return -1;
        }
        Dims const& d = inputDesc[kIn].dims;
        std::string const reason = unsupported(d, inputDesc[kIn].type);
        if (!reason.empty())
        {
            logError("enqueue: " + reason);
            return -1;
        }
        if (d.d[0] == 0 || d.d[2] == 0 || d.d[3] == 0)
        {
            return 0; // an empty map: nothing to compute (TensorRT's empty-tensor semantics)
        }
        if (mDeviceWeights == nullptr)
        {
            // attachToContext puts the weights on the GPU; a plugin enqueued without it (the builder's timing
            // runs) copies them once here, which stream capture cannot take
            cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
            if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess || capture != cudaStreamCaptureStatusNone)
            {
                logError("enqueue: the weights are not on the GPU (no attachToContext) and the stream is capturing");
                return -1;
            }
            if (!attachWeights())
            {
                return -1;
            }
        }
        RefinerDLAType const type
            = inputDesc[kIn].type == DataType::kHALF ? RefinerDLAType::kFLOAT16 : RefinerDLAType::kFLOAT32;
        // unsupported() has checked that every dimension fits 32 bits
        cudaError_t const status = launchRefinerDLA(inputs[kIn], outputs[0], type, mDeviceWeights,
            static_cast<int32_t>(d.d[0]), mHeads, mExpanded, static_cast<int32_t>(d.d[2]),
            static_cast<int32_t>(d.d[3]), mDevice.maxSharedBytes, stream);
        if (status != cudaSuccess)
        {
            logError(std::string("kernel launch failed: ") + cudaGetErrorString(status));
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
    try
    {
        // outside enqueueV3: the device limits and the weights' device copy (shared with this plugin's other
        // clones on the same device) are made here, so the first enqueue allocates and copies nothing
        std::unique_ptr<RefinerDLAPlugin> attached(new RefinerDLAPlugin(*this));
        attached->mDeviceWeights = nullptr;
        attached->mDevice = RefinerDLADevice{}; // the context's device may differ from the builder's
        if (!attached->attachWeights())
        {
            return nullptr;
        }
        return attached.release();
    }
    catch (std::exception const& e)
    {
        logError(std::string("attachToContext failed: ") + e.what());
    }
    return nullptr;
}

PluginFieldCollection const* RefinerDLAPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        std::vector<float> const& weights = mWeights->host();
        mFieldsToSerialize.clear();
        mFieldsToSerialize.emplace_back("num_heads", &mHeads, PluginFieldType::kINT32, 1);
        mFieldsToSerialize.emplace_back("num_expanded", &mExpanded, PluginFieldType::kINT32, 1);
        for (int32_t i = 0; i < kRefinerDLANbWeightFields; ++i)
        {
            mFieldsToSerialize.emplace_back(kRefinerDLAWeightFieldNames[i],
                weights.data() + refinerDLAFieldOffset<size_t>(i, mHeads, mExpanded), PluginFieldType::kFLOAT32,
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
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        if (fc == nullptr)
        {
            logError("createPlugin: no field collection given");
            return nullptr;
        }
        if (fc->nbFields < 0 || (fc->nbFields > 0 && fc->fields == nullptr))
        {
            logError("createPlugin: the field collection has " + std::to_string(fc->nbFields)
                + " fields and no field array");
            return nullptr;
        }
        int32_t heads = -1;
        int32_t expanded = -1;
        bool seenHeads = false;
        bool seenExpanded = false;
        PluginField const* weights[kRefinerDLANbWeightFields] = {};
        for (int32_t i = 0; i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            if (f.name == nullptr)
            {
                logError("createPlugin: field " + std::to_string(i) + " has no name");
                return nullptr;
            }
            std::string const field = f.name;
            if (field == "num_heads" || field == "num_expanded")
            {
                bool& seen = field == "num_heads" ? seenHeads : seenExpanded;
                if (seen)
                {
                    logError("createPlugin: field " + field + " is given more than once");
                    return nullptr;
                }
                seen = true;
                char const* reason = readInt(f, field == "num_heads" ? heads : expanded);
                if (reason != nullptr)
                {
                    logError("createPlugin: field " + field + " " + reason + " (one INT32 or INT64 value)");
                    return nullptr;
                }
                continue;
            }
            bool known = false;
            for (int32_t w = 0; w < kRefinerDLANbWeightFields; ++w)
            {
                if (field != kRefinerDLAWeightFieldNames[w])
                {
                    continue;
                }
                if (weights[w] != nullptr)
                {
                    logError("createPlugin: field " + field + " is given more than once");
                    return nullptr;
                }
                if (f.type != PluginFieldType::kFLOAT32 || f.data == nullptr || f.length < 0)
                {
                    logError("createPlugin: field " + field + " must be FLOAT32 values");
                    return nullptr;
                }
                weights[w] = &f;
                known = true;
            }
            // the ONNX parser's selectors may be passed through; anything else is a mistake worth reporting
            if (!known && field != "plugin_version" && field != "plugin_namespace")
            {
                log(ILogger::Severity::kWARNING, "createPlugin: ignoring unknown field " + field);
            }
        }
        if (!seenHeads || heads < 1 || heads > kRefinerDLAMaxHeads)
        {
            logError("createPlugin: field num_heads must be given, in [1, " + std::to_string(kRefinerDLAMaxHeads)
                + "]" + (seenHeads ? ", got " + std::to_string(heads) : std::string()));
            return nullptr;
        }
        if (!seenExpanded || expanded < 1)
        {
            logError("createPlugin: field num_expanded must be given and positive"
                + (seenExpanded ? ", got " + std::to_string(expanded) : std::string()));
            return nullptr;
        }
        // bounds E (and so every allocation below) before anything is reserved: no GPU has more shared memory
        if (refinerDLASharedBytes(heads, expanded) > kRefinerDLAMaxSharedBytesAnyGpu)
        {
            logError("createPlugin: field num_expanded is too large: "
                + sharedMemoryReason(heads, expanded, kRefinerDLAMaxSharedBytesAnyGpu, "any GPU allows (227 KiB)"));
            return nullptr;
        }
        for (int32_t w = 0; w < kRefinerDLANbWeightFields; ++w)
        {
            size_t const expected = refinerDLAFieldSize<size_t>(w, heads, expanded);
            if (weights[w] == nullptr || static_cast<size_t>(weights[w]->length) != expected)
            {
                std::ostringstream msg;
                msg << "createPlugin: field " << kRefinerDLAWeightFieldNames[w] << " must hold " << expected
                    << " floats for " << heads << " heads and " << expanded << " expanded channels, got "
                    << (weights[w] == nullptr ? std::string("none") : std::to_string(weights[w]->length));
                logError(msg.str());
                return nullptr;
            }
        }
        std::vector<float> packed(refinerDLAWeightCount(heads, expanded));
        for (int32_t w = 0; w < kRefinerDLANbWeightFields; ++w)
        {
            std::memcpy(packed.data() + refinerDLAFieldOffset<size_t>(w, heads, expanded), weights[w]->data,
                refinerDLAFieldSize<size_t>(w, heads, expanded) * sizeof(float));
        }
        return new RefinerDLAPlugin(heads, expanded, std::move(packed), kPluginNamespace);
    }
    catch (std::exception const& e)
    {
        logError(std::string("createPlugin failed: ") + e.what());
    }
    return nullptr;
}

// ---------------------------------------------------------------------------------------------------------------
// Static registration: a bare dlopen (Triton's --backend-config=tensorrt,plugins=..., LD_PRELOAD, DeepStream's
// custom-lib-path) calls neither getCreators nor setLoggerFinder, so the library registers its creator with
// TensorRT's global registry when it is loaded, as REGISTER_TENSORRT_PLUGIN does.

namespace
{

RefinerDLAPluginCreator& theCreator()
{
    static RefinerDLAPluginCreator creator;
    return creator;
}

//! True when this library is named in LD_PRELOAD (it then initialises before the host has loaded TensorRT).
bool preloaded() noexcept
{
    char const* env = std::getenv("LD_PRELOAD");
    Dl_info self{};
    if (env == nullptr || dladdr(reinterpret_cast<void*>(&preloaded), &self) == 0 || self.dli_fname == nullptr)
    {
        return false;
    }
    char const* slash = std::strrchr(self.dli_fname, '/');
    return std::strstr(env, slash != nullptr ? slash + 1 : self.dli_fname) != nullptr;
}

//! TensorRT's getPluginRegistry and getLogger, from the libnvinfer this process runs.
GetRegistry findTensorRT(GetLogger& logger) noexcept
{
    logger = ::getLogger;
    if (::getPluginRegistry != nullptr)
    {
        return ::getPluginRegistry;
    }
    // libnvinfer loaded RTLD_LOCAL (Triton's backend) is not in our scope: find it by its soname
    std::string const soname = "libnvinfer.so." + std::to_string(NV_TENSORRT_MAJOR);
    void* handle = dlopen(soname.c_str(), RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD);
    if (handle == nullptr && preloaded())
    {
        // LD_PRELOAD: the host loads TensorRT later; load the libnvinfer the dynamic linker finds, which the host's
        // load by soname then shares. Nowhere else: a library opened before TensorRT (a ctypes probe of
        // refinerEdgePluginTensorRTVersion) must not pick a libnvinfer for a process that may import another.
        handle = dlopen(soname.c_str(), RTLD_LAZY | RTLD_LOCAL);
    }
    if (handle == nullptr)
    {
        return nullptr; // no TensorRT loaded: only IPluginRegistry::loadLibrary can register the creator
    }
    // the handle is kept for the library's lifetime: the registry must outlive our registration in it
    logger = reinterpret_cast<GetLogger>(dlsym(handle, "getLogger"));
    return reinterpret_cast<GetRegistry>(dlsym(handle, "getPluginRegistry"));
}

class StaticRegistration
{
public:
    StaticRegistration() noexcept
    {
        RefinerDLAPluginCreator& creator = theCreator(); // constructed first, so destroyed after this
        GetLogger logger = nullptr;
        GetRegistry getRegistry = findTensorRT(logger);
        {
            std::lock_guard<std::mutex> lock(gLoggerMutex);
            gGlobalLogger = logger;
        }
        IPluginRegistry* registry = getRegistry != nullptr ? getRegistry() : nullptr;
        std::lock_guard<std::mutex> lock(mMutex);
        // refused when another library registered RefinerDLA first: that one stays in use
        if (registry != nullptr && registry->registerCreator(creator, kPluginNamespace))
        {
            mRegistry = registry;
        }
    }

    //! Leaves the global registry to the host that is about to register the creator itself (getCreators).
    void withdraw() noexcept
    {
        std::lock_guard<std::mutex> lock(mMutex);
        if (mRegistry != nullptr)
        {
            mRegistry->deregisterCreator(theCreator());
            mRegistry = nullptr;
        }
    }

    ~StaticRegistration()
    {
        withdraw(); // never leave a creator that is about to be unmapped in the registry
        std::lock_guard<std::mutex> lock(gLoggerMutex);
        gGlobalLogger = nullptr;
    }

    StaticRegistration(StaticRegistration const&) = delete;
    StaticRegistration& operator=(StaticRegistration const&) = delete;

private:
    std::mutex mMutex;
    IPluginRegistry* mRegistry{nullptr};
};

StaticRegistration gStaticRegistration;

} // namespace

} // namespace refiner_edge

// ---------------------------------------------------------------------------------------------------------------
// Entry points for IPluginRegistry::loadLibrary, tensorrt.get_plugin_registry().load_library() and
// trtexec --dynamicPlugins. (TENSORRTAPI exports only inside TensorRT's own build, so the visibility is ours.)
#define REFINER_EDGE_EXPORT __attribute__((visibility("default")))
#define REFINER_EDGE_STR2(x) #x
#define REFINER_EDGE_STR(x) REFINER_EDGE_STR2(x)

extern "C" REFINER_EDGE_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    std::lock_guard<std::mutex> lock(refiner_edge::gLoggerMutex);
    refiner_edge::gLoggerFinder = finder;
}

extern "C" REFINER_EDGE_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    // loadLibrary registers what this returns and fails when any of it is registered already (NvInferRuntimeCommon.h):
    // our load-time registration gives way, in whichever registry the host loads us into
    refiner_edge::gStaticRegistration.withdraw();
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&refiner_edge::theCreator()};
    nbCreators = 1;
    return creators;
}

extern "C" REFINER_EDGE_EXPORT char const* refinerEdgePluginTensorRTVersion()
{
    return REFINER_EDGE_STR(NV_TENSORRT_MAJOR) "." REFINER_EDGE_STR(NV_TENSORRT_MINOR) "." REFINER_EDGE_STR(
        NV_TENSORRT_PATCH);
}
