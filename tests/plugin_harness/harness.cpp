// The RefinerDLA plugin host harness: plays TensorRT's call sequence on librefiner_edge_plugin.so, built against one
// TensorRT header set, under AddressSanitizer, UBSan and LeakSanitizer (build.sh). TensorRT itself is faked by
// fake_nvinfer.cpp (registry, global logger) and the GPU by fake_cudart.cpp (host memory, recorded launches).
//   harness SCENARIO PLUGIN_LIBRARY FAKE_LIBNVINFER
// Scenarios: sequence (loadLibrary, then every IPluginV3 method), bare (a Triton/DeepStream dlopen RTLD_LOCAL beside
// an RTLD_LOCAL libnvinfer, then loadLibrary of the same file), linked (the same with the library linked to
// libnvinfer), first (dlopen before libnvinfer is loaded: no libnvinfer of its own, loadLibrary later works),
// preload (run under LD_PRELOAD: the library loads libnvinfer by soname and registers at start-up).
// Prints one line per failed check and "harness: N checks, 0 failures"; exits 1 on any failure.
#include "NvInfer.h"
#include "NvInferRuntime.h"
#include "NvInferVersion.h"

#include "fake_cudart.h"

#include <dlfcn.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace nvinfer1;

namespace
{

std::atomic<int> gChecks{0};
std::atomic<int> gFailures{0};

#define CHECK(cond, what)                                                                                              \
    do                                                                                                                 \
    {                                                                                                                  \
        ++gChecks;                                                                                                     \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            ++gFailures;                                                                                               \
            std::printf("FAIL %s:%d: %s [%s]\n", __FILE__, __LINE__, std::string(what).c_str(), #cond);                \
        }                                                                                                              \
    } while (0)

#define STR2(x) #x
#define STR(x) STR2(x)

// ---- loggers

class Logger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        std::lock_guard<std::mutex> lock(mMutex);
        mRecords.emplace_back(severity, msg != nullptr ? msg : "");
    }
    size_t errors()
    {
        std::lock_guard<std::mutex> lock(mMutex);
        size_t n = 0;
        for (auto const& r : mRecords)
        {
            n += r.first <= Severity::kERROR ? 1 : 0;
        }
        return n;
    }
    std::string last()
    {
        std::lock_guard<std::mutex> lock(mMutex);
        return mRecords.empty() ? std::string() : mRecords.back().second;
    }
    size_t size()
    {
        std::lock_guard<std::mutex> lock(mMutex);
        return mRecords.size();
    }

private:
    std::mutex mMutex;
    std::vector<std::pair<Severity, std::string>> mRecords;
};

class Finder : public ILoggerFinder
{
public:
    explicit Finder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() override
    {
        return mLogger;
    }

private:
    ILogger* mLogger;
};

Logger gLogger;       // the logger TensorRT's finder returns (setLoggerFinder)
Logger gGlobalLogger; // TensorRT's global logger (getLogger), for a library loaded by a bare dlopen
Finder gFinder(&gLogger);

// ---- a symbolic IExprBuilder, as the builder passes to getOutputShapes

class ExprImpl : public apiv::VDimensionExpr
{
public:
    ExprImpl(bool constant, int64_t value)
        : mConstant(constant)
        , mValue(value)
    {
    }
    bool isConstant() const override
    {
        return mConstant;
    }
    int64_t getConstantValue() const override
    {
        return mConstant ? mValue : -1;
    }
    bool isSizeTensor() const override
    {
        return false;
    }

private:
    bool mConstant;
    int64_t mValue;
};

class Expr : public IDimensionExpr
{
public:
    explicit Expr(apiv::VDimensionExpr* impl)
    {
        mImpl = impl;
    }
    ~Expr() noexcept override = default;
};

struct Node
{
    Node(bool constant, int64_t value)
        : impl(constant, value)
        , expr(&impl)
    {
    }
    ExprImpl impl;
    Expr expr;
};

class ExprBuilderImpl : public apiv::VExprBuilder
{
public:
    IDimensionExpr const* constant(int64_t value) override
    {
        return add(true, value);
    }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override
    {
        if (!a.isConstant() || !b.isConstant())
        {
            return add(false, 0);
        }
        int64_t const x = a.getConstantValue();
        int64_t const y = b.getConstantValue();
        switch (op)
        {
        case DimensionOperation::kSUM: return add(true, x + y);
        case DimensionOperation::kPROD: return add(true, x * y);
        case DimensionOperation::kMAX: return add(true, x > y ? x : y);
        case DimensionOperation::kMIN: return add(true, x < y ? x : y);
        case DimensionOperation::kSUB: return add(true, x - y);
        default: return add(false, 0);
        }
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return add(false, 0);
    }
    IDimensionExpr const* symbol()
    {
        return add(false, 0);
    }

private:
    IDimensionExpr const* add(bool constant, int64_t value)
    {
        mNodes.emplace_back(new Node(constant, value));
        return &mNodes.back()->expr;
    }
    std::vector<std::unique_ptr<Node>> mNodes;
};

class ExprBuilder : public IExprBuilder
{
public:
    explicit ExprBuilder(apiv::VExprBuilder* impl)
    {
        mImpl = impl;
    }
    ~ExprBuilder() noexcept override = default;
};

class ResourceContext : public IPluginResourceContext
{
public:
    IGpuAllocator* getGpuAllocator() const noexcept override
    {
        return nullptr;
    }
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
};

// ---- fields as the ONNX parser passes them

struct Fields
{
    std::vector<std::vector<char>> storage;
    std::vector<PluginField> fields;
    std::vector<std::string> names;

    void add(std::string const& name, PluginFieldType type, void const* data, size_t bytes, int32_t length)
    {
        storage.emplace_back(static_cast<char const*>(data), static_cast<char const*>(data) + bytes);
        names.push_back(name);
        fields.emplace_back(nullptr, nullptr, type, length);
    }
    void addInt64(std::string const& name, int64_t v)
    {
        add(name, PluginFieldType::kINT64, &v, sizeof(v), 1);
    }
    void addInt32(std::string const& name, int32_t v)
    {
        add(name, PluginFieldType::kINT32, &v, sizeof(v), 1);
    }
    void addFloats(std::string const& name, std::vector<float> const& v)
    {
        add(name, PluginFieldType::kFLOAT32, v.data(), v.size() * sizeof(float), static_cast<int32_t>(v.size()));
    }
    void addString(std::string const& name, std::string const& v)
    {
        add(name, PluginFieldType::kCHAR, v.data(), v.size(), static_cast<int32_t>(v.size()));
    }
    int find(std::string const& name) const
    {
        for (size_t i = 0; i < names.size(); ++i)
        {
            if (names[i] == name)
            {
                return static_cast<int>(i);
            }
        }
        return -1;
    }
    void remove(std::string const& name)
    {
        int const i = find(name);
        storage.erase(storage.begin() + i);
        names.erase(names.begin() + i);
        fields.erase(fields.begin() + i);
    }
    void duplicate(std::string const& name)
    {
        int const i = find(name);
        storage.push_back(storage[i]);
        names.push_back(names[i]);
        fields.push_back(fields[i]);
    }
    PluginField& at(std::string const& name)
    {
        return fields[find(name)];
    }
    PluginFieldCollection collection()
    {
        for (size_t i = 0; i < fields.size(); ++i)
        {
            fields[i].name = names[i].c_str();
            if (fields[i].data == nullptr || fields[i].data != reinterpret_cast<void const*>(1))
            {
                fields[i].data = storage[i].empty() ? nullptr : storage[i].data();
            }
            else
            {
                fields[i].data = nullptr; // marked null on purpose
            }
        }
        PluginFieldCollection fc;
        fc.nbFields = static_cast<int32_t>(fields.size());
        fc.fields = fields.data();
        return fc;
    }
};

char const* const kWeightNames[] = {"w1", "b1", "wd", "bd", "w2", "b2", "alpha"};

size_t weightLength(int w, int64_t h, int64_t e)
{
    int64_t const sizes[] = {e * h, e, 9 * e, e, h * e, h, h};
    return static_cast<size_t>(sizes[w]);
}

//! num_heads/num_expanded as INT64 (the ONNX parser's ints), the weights as FLOAT32, the parser's selectors.
Fields onnxFields(int64_t h, int64_t e, bool int64Ints = true)
{
    Fields f;
    if (int64Ints)
    {
        f.addInt64("num_heads", h);
        f.addInt64("num_expanded", e);
    }
    else
    {
        f.addInt32("num_heads", static_cast<int32_t>(h));
        f.addInt32("num_expanded", static_cast<int32_t>(e));
    }
    for (int w = 0; w < 7; ++w)
    {
        std::vector<float> v(weightLength(w, h, e));
        for (size_t i = 0; i < v.size(); ++i)
        {
            v[i] = 0.01F * static_cast<float>((i * 7 + static_cast<size_t>(w)) % 23) - 0.1F;
        }
        f.addFloats(kWeightNames[w], v);
    }
    f.addString("plugin_version", "1");
    f.addString("plugin_namespace", "refiner_edge");
    return f;
}

// ---- plugin helpers

IPluginV3OneCore* core(IPluginV3* p)
{
    return static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE));
}
IPluginV3OneBuild* build(IPluginV3* p)
{
    return static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
}
IPluginV3OneRuntime* runtime(IPluginV3* p)
{
    return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

PluginTensorDesc desc(std::vector<int64_t> const& dims, DataType type = DataType::kFLOAT)
{
    PluginTensorDesc d{};
    d.dims.nbDims = static_cast<int32_t>(dims.size());
    for (size_t i = 0; i < dims.size(); ++i)
    {
        d.dims.d[i] = dims[i];
    }
    d.type = type;
    d.format = TensorFormat::kLINEAR;
    d.scale = 1.F;
    return d;
}

DynamicPluginTensorDesc dynDesc(std::vector<int64_t> const& dims, std::vector<int64_t> const& min,
    std::vector<int64_t> const& max, DataType type = DataType::kFLOAT)
{
    DynamicPluginTensorDesc d{};
    d.desc = desc(dims, type);
    d.min = desc(min).dims;
    d.opt = desc(max).dims;
    d.max = desc(max).dims;
    return d;
}

size_t launchCount()
{
    return fakeCudaLaunches(nullptr, 0);
}

std::vector<FakeCudaLaunch> launches()
{
    std::vector<FakeCudaLaunch> all(launchCount());
    fakeCudaLaunches(all.data(), all.size());
    return all;
}

int deviceQueries()
{
    return fakeCudaCalls("cudaGetDevice") + fakeCudaCalls("cudaDeviceGetAttribute");
}

//! enqueue one map through onShapeChange + enqueue, as enqueueV3 does; returns enqueue's status (or onShapeChange's).
int32_t run(IPluginV3* p, std::vector<int64_t> const& dims, DataType type = DataType::kFLOAT)
{
    PluginTensorDesc in = desc(dims, type);
    PluginTensorDesc out = in;
    // the kernel is recorded, not run: the buffers are never touched, and allocating them here would be a
    // synchronous call during the capture the harness plays
    static float buffer[16];
    int32_t const status = runtime(p)->onShapeChange(&in, 1, &out, 1);
    // enqueue is also called when onShapeChange refused: TensorRT does not, but the plugin must refuse it again
    void const* inputs[] = {buffer};
    void* outputs[] = {buffer};
    int32_t const enq = runtime(p)->enqueue(&in, &out, inputs, outputs, nullptr, reinterpret_cast<cudaStream_t>(0x5));
    return status != 0 ? status : enq;
}

void checkMessage(std::string const& message, std::string const& what)
{
    CHECK(message.rfind("RefinerDLA: ", 0) == 0, what + ": message starts with 'RefinerDLA: ': " + message);
    CHECK(message.find("RefinerDLA: RefinerDLA") == std::string::npos, what + ": prefix repeated: " + message);
    CHECK(message.size() > std::strlen("RefinerDLA: ") + 8, what + ": a reason is given: " + message);
}

//! HARNESS_SKIP (comma-separated parts of check names) leaves out refusal checks, so that a plugin that crashes on
//! one case (an older version, a mutation) can still be run through the others.
bool skipped(std::string const& what)
{
    char const* env = std::getenv("HARNESS_SKIP");
    std::string list = env != nullptr ? env : "";
    size_t start = 0;
    while (start < list.size())
    {
        size_t end = list.find(',', start);
        end = end == std::string::npos ? list.size() : end;
        std::string const part = list.substr(start, end - start);
        if (!part.empty() && what.find(part) != std::string::npos)
        {
            std::printf("skipped: %s\n", what.c_str());
            return true;
        }
        start = end + 1;
    }
    return false;
}

//! One call that must fail: checks that it is refused and that one error naming `needle` was logged.
template <typename F>
void expectRefused(Logger& logger, std::string const& what, std::string const& needle, F call)
{
    if (skipped(what))
    {
        return;
    }
    size_t const before = logger.errors();
    bool const refused = call();
    CHECK(refused, what + ": refused");
    CHECK(logger.errors() > before, what + ": an error is logged");
    if (logger.errors() > before)
    {
        checkMessage(logger.last(), what);
        CHECK(logger.last().find(needle) != std::string::npos, what + ": the message names '" + needle + "': "
            + logger.last());
    }
}

// ---- the malformed field sets: each createPlugin must return null with a logged reason

struct Malformed
{
    std::string what;
    std::string needle; // a word the message must contain
    Fields fields;
    int mode{0}; // 1: fc == nullptr, 2: fields == nullptr with nbFields > 0, 3: nbFields < 0
};

std::vector<Malformed> malformedSets()
{
    std::vector<Malformed> sets;
    auto base = [] { return onnxFields(4, 12); };
    std::vector<std::string> const all = {"num_heads", "num_expanded", "w1", "b1", "wd", "bd", "w2", "b2", "alpha"};
    for (auto const& name : all)
    {
        Malformed m{"missing " + name, name, base()};
        m.fields.remove(name);
        sets.push_back(std::move(m));
        Malformed d{"duplicate " + name, name, base()}; // defect 17: duplicates were last-wins
        d.fields.duplicate(name);
        sets.push_back(std::move(d));
    }
    for (int w = 0; w < 7; ++w)
    {
        std::string const name = kWeightNames[w];
        Malformed shorter{name + " one float short", name, base()};
        shorter.fields.at(name).length -= 1;
        sets.push_back(std::move(shorter));
        Malformed longer{name + " length over its data", name, base()};
        longer.fields.at(name).length = 1 << 30; // would read past the buffer if trusted
        sets.push_back(std::move(longer));
        Malformed negative{name + " negative length", name, base()};
        negative.fields.at(name).length = -1;
        sets.push_back(std::move(negative));
        Malformed type{name + " as INT32", name, base()};
        type.fields.at(name).type = PluginFieldType::kINT32;
        sets.push_back(std::move(type));
        Malformed null{name + " null data", name, base()};
        null.fields.at(name).data = reinterpret_cast<void const*>(1);
        sets.push_back(std::move(null));
    }
    struct IntCase
    {
        char const* field;
        int64_t value;
        char const* what;
    };
    IntCase const ints[] = {{"num_heads", 0, "zero heads"}, {"num_heads", -1, "negative heads"},
        {"num_heads", 33, "33 heads"}, {"num_heads", int64_t{1} << 40, "heads past 32 bits"},
        {"num_expanded", 0, "zero expanded"}, {"num_expanded", -5, "negative expanded"},
        {"num_expanded", int64_t{1} << 33, "expanded past 32 bits"},
        // defect 12: 2^31 - 1 expanded channels reserved 644 GB before the lengths were checked
        {"num_expanded", 2147483647, "2^31-1 expanded"}};
    for (auto const& c : ints)
    {
        Malformed m{c.what, c.field, base()};
        m.fields.remove(c.field);
        m.fields.addInt64(c.field, c.value);
        sets.push_back(std::move(m));
    }
    {
        // defect 10: H = 16, E = 2000 needs ~380 KB of shared memory: no GPU runs it; refused at createPlugin
        Malformed m{"H=16 E=2000", "shared memory", onnxFields(16, 2000)};
        sets.push_back(std::move(m));
        Malformed w{"H=12 with weights for H=4", "w1", base()};
        w.fields.remove("num_heads");
        w.fields.addInt64("num_heads", 12);
        sets.push_back(std::move(w));
        Malformed len{"num_heads with two values", "num_heads", base()};
        len.fields.at("num_heads").length = 2;
        sets.push_back(std::move(len));
        Malformed f32{"num_heads as FLOAT32", "num_heads", base()};
        f32.fields.at("num_heads").type = PluginFieldType::kFLOAT32;
        sets.push_back(std::move(f32));
        Malformed i8{"num_expanded as INT8", "num_expanded", base()};
        i8.fields.at("num_expanded").type = PluginFieldType::kINT8;
        sets.push_back(std::move(i8));
        Malformed nul{"num_heads null data", "num_heads", base()};
        nul.fields.at("num_heads").data = reinterpret_cast<void const*>(1);
        sets.push_back(std::move(nul));
        Malformed empty{"no fields", "num_heads", Fields()};
        sets.push_back(std::move(empty));
        Malformed only{"only the selectors", "num_heads", Fields()};
        only.fields.addString("plugin_version", "1");
        only.fields.addString("plugin_namespace", "refiner_edge");
        sets.push_back(std::move(only));
        Malformed noname{"a field without a name", "name", base()};
        sets.push_back(std::move(noname)); // the name is cleared below
        sets.back().mode = 4;
        Malformed fcNull{"no field collection", "field", Fields()};
        fcNull.mode = 1;
        sets.push_back(std::move(fcNull));
        Malformed arrayNull{"nbFields 9 with fields == nullptr", "field", base()}; // defect 13
        arrayNull.mode = 2;
        sets.push_back(std::move(arrayNull));
        Malformed negativeCount{"nbFields -1", "field", base()};
        negativeCount.mode = 3;
        sets.push_back(std::move(negativeCount));
    }
    return sets;
}

IPluginCreatorV3One* findCreator(IPluginRegistry* registry)
{
    IPluginCreatorInterface* c = registry->getCreator("RefinerDLA", "1", "refiner_edge");
    if (c == nullptr)
    {
        return nullptr;
    }
    CHECK(std::strcmp(c->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0, "the creator is an IPluginCreatorV3One");
    return static_cast<IPluginCreatorV3One*>(c);
}

int registeredCount(IPluginRegistry* registry)
{
    int32_t n = 0;
    IPluginCreatorInterface* const* all = registry->getAllCreators(&n);
    int count = 0;
    for (int32_t i = 0; i < n; ++i)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(all[i]);
        count += std::strcmp(c->getPluginName(), "RefinerDLA") == 0 ? 1 : 0;
    }
    return count;
}

// ---- the call sequence

void creatorChecks(IPluginCreatorV3One* creator)
{
    CHECK(std::strcmp(creator->getPluginName(), "RefinerDLA") == 0, "creator name");
    CHECK(std::strcmp(creator->getPluginVersion(), "1") == 0, "creator version");
    CHECK(std::strcmp(creator->getPluginNamespace(), "refiner_edge") == 0, "creator namespace");
    PluginFieldCollection const* names = creator->getFieldNames();
    CHECK(names != nullptr && names->nbFields == 9, "getFieldNames lists the 9 fields");
    if (names != nullptr && names->nbFields == 9)
    {
        CHECK(std::strcmp(names->fields[0].name, "num_heads") == 0, "first field is num_heads");
        for (int w = 0; w < 7; ++w)
        {
            CHECK(std::strcmp(names->fields[2 + w].name, kWeightNames[w]) == 0, "weight field names in layout order");
            CHECK(names->fields[2 + w].type == PluginFieldType::kFLOAT32, "weight fields are FLOAT32");
        }
    }
}

void malformedChecks(IPluginCreatorV3One* creator, Logger& logger)
{
    std::vector<Malformed> sets = malformedSets();
    CHECK(sets.size() >= 50, "at least 50 malformed field sets: " + std::to_string(sets.size()));
    for (auto& m : sets)
    {
        expectRefused(logger, "malformed: " + m.what, m.needle, [&] {
            PluginFieldCollection fc = m.fields.collection();
            if (m.mode == 2)
            {
                fc.fields = nullptr;
            }
            if (m.mode == 3)
            {
                fc.nbFields = -1;
            }
            if (m.mode == 4)
            {
                m.fields.fields[3].name = nullptr;
            }
            for (auto phase : {TensorRTPhase::kBUILD, TensorRTPhase::kRUNTIME})
            {
                IPluginV3* p = creator->createPlugin("refine", m.mode == 1 ? nullptr : &fc, phase);
                if (p != nullptr)
                {
                    delete p;
                    return false;
                }
            }
            return true;
        });
    }
}

bool sameFields(PluginFieldCollection const* a, PluginFieldCollection const* b)
{
    if (a == nullptr || b == nullptr || a->nbFields != b->nbFields)
    {
        return false;
    }
    for (int32_t i = 0; i < a->nbFields; ++i)
    {
        PluginField const& x = a->fields[i];
        PluginField const& y = b->fields[i];
        size_t const elem = x.type == PluginFieldType::kFLOAT32 || x.type == PluginFieldType::kINT32 ? 4 : 8;
        if (std::strcmp(x.name, y.name) != 0 || x.type != y.type || x.length != y.length
            || std::memcmp(x.data, y.data, elem * static_cast<size_t>(x.length)) != 0)
        {
            return false;
        }
    }
    return true;
}

void buildPhaseChecks(IPluginCreatorV3One* creator, Logger& logger)
{
    Fields f = onnxFields(12, 36);
    PluginFieldCollection fc = f.collection();
    IPluginV3* p = creator->createPlugin("refine0", &fc, TensorRTPhase::kBUILD);
    CHECK(p != nullptr, "createPlugin with the ONNX parser's fields (INT64 ints, selectors)");
    if (p == nullptr)
    {
        return;
    }
    CHECK(core(p) != nullptr && build(p) != nullptr && runtime(p) != nullptr, "the three capabilities");
    CHECK(std::strcmp(core(p)->getPluginName(), "RefinerDLA") == 0, "plugin name");
    CHECK(std::strcmp(core(p)->getPluginVersion(), "1") == 0, "plugin version");
    CHECK(std::strcmp(core(p)->getPluginNamespace(), "refiner_edge") == 0, "plugin namespace");
    IPluginV3OneBuild* b = build(p);
    CHECK(b->getNbOutputs() == 1, "one output");

    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        DataType out = DataType::kINT8;
        CHECK(b->getOutputDataTypes(&out, 1, &t, 1) == 0 && out == t, "the output has the input's type");
    }
    // defect 11: types the kernel lacks were echoed
    for (DataType t : {DataType::kINT8, DataType::kINT32, DataType::kBOOL, DataType::kUINT8, DataType::kBF16,
             DataType::kINT64, DataType::kFP8, DataType::kINT4})
    {
        DataType out = DataType::kFLOAT;
        expectRefused(logger, "getOutputDataTypes type " + std::to_string(static_cast<int>(t)), "FLOAT or HALF",
            [&] { return b->getOutputDataTypes(&out, 1, &t, 1) != 0; });
    }
    DataType two[2] = {DataType::kFLOAT, DataType::kFLOAT};
    CHECK(b->getOutputDataTypes(two, 2, two, 1) != 0, "getOutputDataTypes refuses two outputs");

    ExprBuilderImpl impl;
    ExprBuilder exprs(&impl);
    DimsExprs in{};
    in.nbDims = 4;
    in.d[0] = impl.symbol();
    in.d[1] = exprs.constant(12);
    in.d[2] = exprs.operation(DimensionOperation::kSUM, *exprs.constant(196), *exprs.constant(1));
    in.d[3] = in.d[2];
    DimsExprs out{};
    CHECK(b->getOutputShapes(&in, 1, nullptr, 0, &out, 1, exprs) == 0, "getOutputShapes");
    CHECK(out.nbDims == 4 && out.d[0] == in.d[0] && !out.d[0]->isConstant() && out.d[2]->getConstantValue() == 197,
        "the output shape is the input's (symbolic batch kept)");
    DimsExprs three = in;
    three.nbDims = 3;
    expectRefused(logger, "getOutputShapes of a 3-D input", "4-D",
        [&] { return b->getOutputShapes(&three, 1, nullptr, 0, &out, 1, exprs) != 0; });

    for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kINT8, DataType::kBF16, DataType::kINT32})
    {
        for (TensorFormat fmt : {TensorFormat::kLINEAR, TensorFormat::kCHW32, TensorFormat::kHWC8})
        {
            DynamicPluginTensorDesc io[2] = {dynDesc({-1, 12, 197, 197}, {1, 12, 197, 197}, {8, 12, 197, 197}, t),
                dynDesc({-1, 12, 197, 197}, {1, 12, 197, 197}, {8, 12, 197, 197}, t)};
            io[0].desc.format = fmt;
            io[1].desc.format = fmt;
            bool const ok = fmt == TensorFormat::kLINEAR && (t == DataType::kFLOAT || t == DataType::kHALF);
            CHECK(b->supportsFormatCombination(0, io, 1, 1) == ok, "supportsFormatCombination input");
            CHECK(b->supportsFormatCombination(1, io, 1, 1) == ok, "supportsFormatCombination output");
            io[1].desc.type = t == DataType::kFLOAT ? DataType::kHALF : DataType::kFLOAT;
            CHECK(!b->supportsFormatCombination(1, io, 1, 1), "the output's type must be the input's");
            CHECK(!b->supportsFormatCombination(2, io, 1, 1) && !b->supportsFormatCombination(-1, io, 1, 1),
                "positions out of range");
        }
    }

    DynamicPluginTensorDesc cin = dynDesc({-1, 12, 197, 197}, {1, 12, 197, 197}, {64, 12, 197, 197});
    DynamicPluginTensorDesc cout = cin;
    int const queries = deviceQueries();
    CHECK(b->configurePlugin(&cin, 1, &cout, 1) == 0, "configurePlugin");
    CHECK(b->configurePlugin(&cin, 1, &cout, 1) == 0, "configurePlugin again");
    // defect 18: the device's limits are read once per plugin object, not per call
    CHECK(deviceQueries() - queries <= 2, "configurePlugin reads the device once: "
        + std::to_string(deviceQueries() - queries) + " queries");
    DynamicPluginTensorDesc wrong = dynDesc({-1, 8, 197, 197}, {1, 8, 197, 197}, {64, 8, 197, 197});
    expectRefused(logger, "configurePlugin with 8 heads", "heads", [&] { return b->configurePlugin(&wrong, 1, &cout, 1) != 0; });
    // defects 14/15 at build time: a profile whose largest map no grid takes
    DynamicPluginTensorDesc huge = dynDesc({-1, 12, -1, -1}, {1, 12, 1, 1}, {1, 12, 2147483647, 2147483647});
    expectRefused(logger, "configurePlugin with a 2^31-1 square profile", "grid",
        [&] { return b->configurePlugin(&huge, 1, &cout, 1) != 0; });
    CHECK(b->getWorkspaceSize(&cin, 1, &cout, 1) == 0, "no workspace");
    // the methods the plugin leaves to IPluginV3OneBuild's defaults: one tactic-free, alias-free kernel
    CHECK(b->getNbTactics() == 0, "getNbTactics");
    int32_t tactics[4] = {};
    CHECK(b->getValidTactics(tactics, 4) == 0 || b->getNbTactics() == 0, "getValidTactics");
    CHECK(b->getFormatCombinationLimit() > 0, "getFormatCombinationLimit");
    char const* timing = b->getTimingCacheID();
    char const* metadata = b->getMetadataString();
    CHECK(timing == nullptr || std::strlen(timing) < 4096, "getTimingCacheID");
    CHECK(metadata == nullptr || std::strlen(metadata) < 4096, "getMetadataString");
    CHECK(runtime(p)->setTactic(0) == 0, "setTactic(0)");

    IPluginV3* c = p->clone();
    CHECK(c != nullptr && std::strcmp(core(c)->getPluginName(), "RefinerDLA") == 0, "clone");
    delete c;

    // the serialize round trip: getFieldsToSerialize -> createPlugin in the runtime phase -> the same fields
    PluginFieldCollection const* ser = runtime(p)->getFieldsToSerialize();
    CHECK(ser != nullptr && ser->nbFields == 9, "getFieldsToSerialize");
    IPluginV3* r = creator->createPlugin("refine0", ser, TensorRTPhase::kRUNTIME);
    CHECK(r != nullptr, "createPlugin from the serialized fields (runtime phase)");
    if (r != nullptr)
    {
        CHECK(sameFields(ser, runtime(r)->getFieldsToSerialize()), "the round trip serializes the same fields");
        delete r;
    }
    // INT32 ints (the serialized form) are accepted from the parser too
    Fields f32 = onnxFields(12, 36, false);
    PluginFieldCollection fc32 = f32.collection();
    IPluginV3* p32 = creator->createPlugin("refine0", &fc32, TensorRTPhase::kBUILD);
    CHECK(p32 != nullptr, "createPlugin with INT32 ints");
    delete p32;
    delete p;

    // defect 10: E that fits some GPU but not this one is refused when the engine is built, naming the limit
    fakeCudaSetOptinShared(99 * 1024); // sm_86/sm_89
    Fields big = onnxFields(32, 400);  // ~171 KB: fits an H100, not an L4
    PluginFieldCollection bigfc = big.collection();
    IPluginV3* pb = creator->createPlugin("refine1", &bigfc, TensorRTPhase::kBUILD);
    CHECK(pb != nullptr, "H=32 E=400 is created (some GPU runs it)");
    if (pb != nullptr)
    {
        DynamicPluginTensorDesc bin = dynDesc({-1, 32, 197, 197}, {1, 32, 197, 197}, {8, 32, 197, 197});
        expectRefused(logger, "configurePlugin of H=32 E=400 on a 99 KiB GPU", "101376",
            [&] { return build(pb)->configurePlugin(&bin, 1, &bin, 1) != 0; });
        delete pb;
    }
    fakeCudaSetOptinShared(227 * 1024);
}

void runtimePhaseChecks(IPluginCreatorV3One* creator, Logger& logger)
{
    Fields f = onnxFields(12, 36);
    PluginFieldCollection fc = f.collection();
    IPluginV3* engine = creator->createPlugin("refine0", &fc, TensorRTPhase::kRUNTIME);
    CHECK(engine != nullptr, "runtime createPlugin");
    if (engine == nullptr)
    {
        return;
    }
    ResourceContext ctx;
    fakeCudaReset();
    size_t const liveBefore = fakeCudaLiveAllocations(nullptr);
    std::vector<IPluginV3*> contexts;
    for (int i = 0; i < 3; ++i)
    {
        contexts.push_back(runtime(engine)->attachToContext(&ctx));
        CHECK(contexts.back() != nullptr, "attachToContext");
    }
    // defect 19: the weights reach the GPU at attachToContext, once for all contexts on the device
    CHECK(fakeCudaCalls("cudaMalloc") == 1, "one device copy of the weights for three contexts: "
        + std::to_string(fakeCudaCalls("cudaMalloc")));
    CHECK(fakeCudaLiveAllocations(nullptr) == liveBefore + 1, "one live device buffer");
    if (contexts[0] == nullptr)
    {
        return;
    }
    IPluginV3* ctx0 = contexts[0];

    // a CUDA graph captured with no warm-up: the first enqueueV3 (onShapeChange + enqueue) under capture
    int const queries = deviceQueries();
    int const mallocs = fakeCudaCalls("cudaMalloc");
    size_t const before = launchCount();
    fakeCudaSetCapturing(1);
    PluginTensorDesc in = desc({2, 12, 197, 197});
    PluginTensorDesc out = in;
    void* a = reinterpret_cast<void*>(0x1000);
    void const* inputs[] = {a};
    void* outputs[] = {a};
    CHECK(runtime(ctx0)->onShapeChange(&in, 1, &out, 1) == 0, "onShapeChange under capture");
    CHECK(runtime(ctx0)->enqueue(&in, &out, inputs, outputs, nullptr, nullptr) == 0, "first enqueue under capture");
    fakeCudaSetCapturing(0);
    CHECK(fakeCudaViolations(nullptr, 0) == 0, "no synchronous CUDA call during capture");
    CHECK(fakeCudaCalls("cudaMalloc") == mallocs, "nothing allocated in enqueue");
    // defect 18: no cudaGetDevice/cudaDeviceGetAttribute per launch
    CHECK(deviceQueries() == queries, "no device query in onShapeChange/enqueue after attach: "
        + std::to_string(deviceQueries() - queries));
    CHECK(launchCount() == before + 1, "one kernel launch");

    size_t n0 = launchCount();
    int const q0 = deviceQueries();
    CHECK(run(ctx0, {2, 12, 197, 197}, DataType::kHALF) == 0, "FP16 enqueue");
    CHECK(run(contexts[1], {3, 12, 14, 14}) == 0, "a second context's enqueue");
    CHECK(run(ctx0, {70000, 12, 9, 9}) == 0, "a batch past grid.y's 65535");
    CHECK(launchCount() == n0 + 3, "three more launches");
    CHECK(deviceQueries() == q0, "no device query per launch: " + std::to_string(deviceQueries() - q0) + " in 3");

    // defect 16: empty tensors are no-ops, launching nothing
    n0 = launchCount();
    CHECK(run(ctx0, {0, 12, 197, 197}) == 0, "batch 0");
    CHECK(run(ctx0, {2, 12, 0, 0}) == 0, "an empty map [2, 12, 0, 0]");
    CHECK(run(ctx0, {2, 12, 5, 0}) == 0, "an empty map [2, 12, 5, 0]");
    CHECK(launchCount() == n0, "no launch for empty tensors");

    // defect 14: 64-bit dimensions were truncated to int32 and ran on the wrong data
    expectRefused(logger, "enqueue of rows 2^32 + 8", "2^31", [&] { return run(ctx0, {1, 12, 4294967304LL, 8}) != 0; });
    expectRefused(logger, "enqueue of batch 2^31", "2^31", [&] { return run(ctx0, {2147483648LL, 12, 8, 8}) != 0; });
    expectRefused(logger, "enqueue of negative rows", "negative", [&] { return run(ctx0, {1, 12, -3, 8}) != 0; });
    // defect 15: the tile count overflowed int32 in the guard (UBSan), then the launch failed
    expectRefused(logger, "enqueue of a 2^31-1 square map", "grid",
        [&] { return run(ctx0, {1, 12, 2147483647, 2147483647}) != 0; });
    expectRefused(logger, "enqueue of a 65536 x 2^21 map", "grid",
        [&] { return run(ctx0, {1, 12, 65536 * 8, 2097152LL * 32}) != 0; });
    // defect 11: a non-HALF type ran the float kernel
    for (DataType t : {DataType::kINT8, DataType::kBF16, DataType::kINT32, DataType::kBOOL})
    {
        expectRefused(logger, "enqueue of type " + std::to_string(static_cast<int>(t)), "FLOAT or HALF",
            [&] { return run(ctx0, {1, 12, 8, 8}, t) != 0; });
    }
    expectRefused(logger, "enqueue with 16 heads", "heads", [&] { return run(ctx0, {1, 16, 8, 8}) != 0; });
    expectRefused(logger, "enqueue of a 3-D map", "4-D", [&] { return run(ctx0, {1, 12, 8}) != 0; });
    CHECK(launchCount() == n0, "no launch for refused shapes");

    for (IPluginV3* c : contexts)
    {
        delete c;
    }
    CHECK(fakeCudaLiveAllocations(nullptr) == liveBefore + 1, "the engine's plugin keeps the shared copy");
    delete engine;
    CHECK(fakeCudaLiveAllocations(nullptr) == liveBefore, "the device copy is freed with the last plugin");

    // large E: shared memory past 48 KiB, opted into per launch
    Fields big = onnxFields(32, 400);
    PluginFieldCollection bigfc = big.collection();
    IPluginV3* pb = creator->createPlugin("refine1", &bigfc, TensorRTPhase::kRUNTIME);
    CHECK(pb != nullptr, "H=32 E=400 runtime plugin");
    if (pb != nullptr)
    {
        IPluginV3* cb = runtime(pb)->attachToContext(&ctx);
        CHECK(cb != nullptr && run(cb, {2, 32, 64, 64}) == 0, "H=32 E=400 runs with opted-in shared memory");
        delete cb;
        delete pb;
    }

    // failure injection: the GPU copy fails at attachToContext
    IPluginV3* pf = creator->createPlugin("refine2", &fc, TensorRTPhase::kRUNTIME);
    if (pf != nullptr)
    {
        fakeCudaFailNextMallocs(1);
        expectRefused(logger, "attachToContext when cudaMalloc fails", "out of memory",
            [&] { return runtime(pf)->attachToContext(&ctx) == nullptr; });
        fakeCudaFailNextMallocs(0);
        // the builder's timing runs enqueue a plugin never attached: the weights are copied once, outside capture
        IPluginV3* unattached = pf->clone();
        fakeCudaSetCapturing(1);
        expectRefused(logger, "enqueue under capture with no attachToContext", "capturing",
            [&] { return run(unattached, {1, 12, 16, 16}) != 0; });
        fakeCudaSetCapturing(0);
        CHECK(run(unattached, {1, 12, 16, 16}) == 0, "enqueue with no attachToContext, outside capture");
        CHECK(run(unattached, {1, 12, 16, 16}) == 0, "and again (copied once)");
        delete unattached;
        delete pf;
    }
    CHECK(fakeCudaLiveAllocations(nullptr) == liveBefore, "no device memory left");
}

void cyclesAndThreads(IPluginCreatorV3One* creator)
{
    ResourceContext ctx;
    size_t const live = fakeCudaLiveAllocations(nullptr);
    for (int i = 0; i < 150; ++i)
    {
        Fields f = onnxFields(1 + i % 16, 3 * (1 + i % 16));
        PluginFieldCollection fc = f.collection();
        IPluginV3* p = creator->createPlugin("cycle", &fc, i % 2 ? TensorRTPhase::kBUILD : TensorRTPhase::kRUNTIME);
        CHECK(p != nullptr, "create/destroy cycle");
        if (p == nullptr)
        {
            continue;
        }
        IPluginV3* a = runtime(p)->attachToContext(&ctx);
        IPluginV3* b = runtime(p)->attachToContext(&ctx);
        CHECK(a != nullptr && b != nullptr, "attach in a cycle");
        if (a != nullptr)
        {
            CHECK(run(a, {1, 1 + i % 16, 9, 9}) == 0, "enqueue in a cycle");
        }
        PluginFieldCollection const* ser = runtime(p)->getFieldsToSerialize();
        IPluginV3* r = creator->createPlugin("cycle", ser, TensorRTPhase::kRUNTIME);
        CHECK(r != nullptr, "round trip in a cycle");
        delete r;
        delete p; // before its contexts: they keep the shared weights alive
        delete a;
        delete b;
    }
    CHECK(fakeCudaLiveAllocations(nullptr) == live, "no device memory left after the cycles");

    Fields f = onnxFields(12, 36);
    PluginFieldCollection fc = f.collection();
    IPluginV3* engine = creator->createPlugin("threads", &fc, TensorRTPhase::kRUNTIME);
    CHECK(engine != nullptr, "engine plugin for the threads");
    if (engine == nullptr)
    {
        return;
    }
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
    {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 40; ++i)
            {
                IPluginV3* c = runtime(engine)->attachToContext(&ctx);
                CHECK(c != nullptr, "attachToContext from a thread");
                if (c != nullptr)
                {
                    CHECK(run(c, {1 + t, 12, 17, 17}) == 0, "enqueue from a thread");
                    IPluginV3* k = c->clone();
                    delete c;
                    CHECK(k != nullptr && run(k, {2, 12, 0, 3}) == 0, "a clone outlives its original");
                    delete k;
                }
                Fields g = onnxFields(4, 12);
                PluginFieldCollection gc = g.collection();
                delete creator->createPlugin("t", &gc, TensorRTPhase::kBUILD);
                PluginFieldCollection bad = gc;
                bad.fields = nullptr;
                CHECK(creator->createPlugin("t", &bad, TensorRTPhase::kBUILD) == nullptr, "refused from a thread");
            }
        });
    }
    for (auto& th : threads)
    {
        th.join();
    }
    delete engine;
    CHECK(fakeCudaLiveAllocations(nullptr) == live, "no device memory left after the threads");
}

void launchLimitChecks()
{
    size_t valid = 0;
    for (FakeCudaLaunch const& l : launches())
    {
        CHECK(l.valid, std::string("launch within the device limits: ") + l.kernel + " grid " + std::to_string(l.grid[0])
            + "x" + std::to_string(l.grid[1]) + " block " + std::to_string(l.block[0]) + " shared "
            + std::to_string(l.shared));
        valid += l.valid ? 1 : 0;
    }
    char buffer[4096];
    size_t const violations = fakeCudaViolations(buffer, sizeof(buffer));
    CHECK(violations == 0, std::string("CUDA runtime misuse: ") + buffer);
}

struct Nvinfer
{
    void* handle{nullptr};
    IPluginRegistry* registry{nullptr};
};

Nvinfer openNvinfer(char const* path, int flags)
{
    Nvinfer n;
    n.handle = dlopen(path, flags);
    CHECK(n.handle != nullptr, std::string("load the fake libnvinfer: ") + (n.handle ? "" : dlerror()));
    if (n.handle == nullptr)
    {
        return n;
    }
    auto getRegistry = reinterpret_cast<IPluginRegistry* (*) ()>(dlsym(n.handle, "getPluginRegistry"));
    auto setLoggers = reinterpret_cast<void (*)(ILoggerFinder*, ILogger*)>(dlsym(n.handle, "fakeNvinferSetLoggers"));
    setLoggers(&gFinder, &gGlobalLogger);
    n.registry = getRegistry();
    return n;
}

void checkVersion(void* lib)
{
    auto version = reinterpret_cast<char const* (*) ()>(dlsym(lib, "refinerEdgePluginTensorRTVersion"));
    CHECK(version != nullptr, "refinerEdgePluginTensorRTVersion is exported");
    if (version != nullptr)
    {
        std::string const expected = STR(NV_TENSORRT_MAJOR) "." STR(NV_TENSORRT_MINOR) "." STR(NV_TENSORRT_PATCH);
        CHECK(expected == version(), std::string("the header version the library was built against: ") + version());
    }
}

int sequence(char const* plugin, char const* nvinfer)
{
    Nvinfer n = openNvinfer(nvinfer, RTLD_NOW | RTLD_LOCAL);
    if (n.registry == nullptr)
    {
        return 1;
    }
    // as IPluginRegistry::loadLibrary / trtexec --dynamicPlugins / load_library(): the first load of the file
    void* handle = n.registry->loadLibrary(plugin);
    CHECK(handle != nullptr, "loadLibrary of the plugin library succeeds (its load-time registration gives way)");
    if (handle == nullptr)
    {
        return 1;
    }
    CHECK(registeredCount(n.registry) == 1, "RefinerDLA is registered once");
    checkVersion(handle);
    IPluginCreatorV3One* creator = findCreator(n.registry);
    CHECK(creator != nullptr, "the registry finds RefinerDLA/1/refiner_edge");
    if (creator == nullptr)
    {
        return 1;
    }
    creatorChecks(creator);
    malformedChecks(creator, gLogger);
    buildPhaseChecks(creator, gLogger);
    runtimePhaseChecks(creator, gLogger);
    cyclesAndThreads(creator);
    launchLimitChecks();
    CHECK(launchCount() > 0, "launches were recorded");
    // a second loadLibrary of the same file refuses the duplicate and leaves the first registration working
    void* again = n.registry->loadLibrary(plugin);
    CHECK(again == nullptr, "a second loadLibrary in the same registry is refused (duplicate creator)");
    CHECK(findCreator(n.registry) == creator, "the first registration still answers");
    n.registry->deregisterLibrary(handle);
    CHECK(registeredCount(n.registry) == 0, "deregisterLibrary removes RefinerDLA");
    return 0;
}

//! A bare dlopen, as Triton's plugins= option (RTLD_LOCAL, beside an RTLD_LOCAL libnvinfer) and DeepStream's
//! custom-lib-path do: the library must register itself; then loadLibrary of the same file must still work.
int bare(char const* plugin, char const* nvinfer, bool nvinferFirst)
{
    Nvinfer n;
    if (nvinferFirst)
    {
        n = openNvinfer(nvinfer, RTLD_NOW | RTLD_LOCAL);
    }
    void* lib = dlopen(plugin, RTLD_NOW | RTLD_LOCAL);
    CHECK(lib != nullptr, std::string("dlopen of the plugin: ") + (lib ? "" : dlerror()));
    if (lib == nullptr)
    {
        return 1;
    }
    if (!nvinferFirst)
    {
        // opened before TensorRT and not preloaded (a ctypes probe of refinerEdgePluginTensorRTVersion): the library
        // must not load a libnvinfer of its own, which a later `import tensorrt` would then share
        std::string const soname = "libnvinfer.so." STR(NV_TENSORRT_MAJOR);
        void* loaded = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
        CHECK(loaded == nullptr, "a library opened before TensorRT loads no libnvinfer");
        if (loaded != nullptr)
        {
            dlclose(loaded);
        }
        n = openNvinfer(nvinfer, RTLD_NOW | RTLD_LOCAL);
        if (n.registry != nullptr)
        {
            CHECK(findCreator(n.registry) == nullptr, "nothing registered before TensorRT was loaded");
        }
    }
    checkVersion(lib);
    IPluginCreatorV3One* creator = findCreator(n.registry);
    CHECK(creator != nullptr || !nvinferFirst, "a bare dlopen registers RefinerDLA (static registration)");
    if (creator != nullptr)
    {
        // no setLoggerFinder on this path: errors go to TensorRT's global logger
        size_t const before = gGlobalLogger.errors();
        PluginFieldCollection empty{};
        CHECK(creator->createPlugin("x", &empty, TensorRTPhase::kBUILD) == nullptr, "refused without fields");
        CHECK(gGlobalLogger.errors() > before, "the reason reaches TensorRT's global logger");
        Fields f = onnxFields(12, 36);
        PluginFieldCollection fc = f.collection();
        IPluginV3* p = creator->createPlugin("x", &fc, TensorRTPhase::kRUNTIME);
        ResourceContext ctx;
        IPluginV3* c = p != nullptr ? runtime(p)->attachToContext(&ctx) : nullptr;
        CHECK(c != nullptr && run(c, {1, 12, 8, 8}) == 0, "the statically registered creator's plugin runs");
        delete c;
        delete p;
    }
    // later, the host or a runner loads the same file through the registry: it must succeed and stay single
    void* handle = n.registry->loadLibrary(plugin);
    CHECK(handle != nullptr, "loadLibrary after a bare dlopen of the same file succeeds");
    CHECK(registeredCount(n.registry) == 1, "RefinerDLA is registered once");
    IPluginCreatorV3One* after = findCreator(n.registry);
    if (after != nullptr)
    {
        Fields f = onnxFields(4, 12);
        PluginFieldCollection fc = f.collection();
        IPluginV3* p = after->createPlugin("x", &fc, TensorRTPhase::kBUILD);
        CHECK(p != nullptr, "the creator works after loadLibrary");
        delete p;
    }
    if (handle != nullptr)
    {
        n.registry->deregisterLibrary(handle);
    }
    dlclose(lib);
    CHECK(registeredCount(n.registry) == 0, "no RefinerDLA left in the registry after the library is closed");
    // a bare dlopen and dlclose: the load-time registration must leave with the library (no dangling creator).
    // (libstdc++'s STB_GNU_UNIQUE symbols can keep a library mapped after dlclose; it then stays registered.)
    lib = dlopen(plugin, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    bool const unloaded = lib == nullptr;
    if (lib != nullptr)
    {
        dlclose(lib);
    }
    if (unloaded)
    {
        lib = dlopen(plugin, RTLD_NOW | RTLD_LOCAL);
        CHECK(lib != nullptr && registeredCount(n.registry) == 1, "registered again by a second bare dlopen");
        if (lib != nullptr)
        {
            dlclose(lib);
        }
        CHECK(registeredCount(n.registry) == 0, "a closed library leaves no creator in the registry");
    }
    launchLimitChecks();
    return 0;
}

//! Under LD_PRELOAD the library initialised at start-up, before main.
int preload(char const* nvinfer)
{
    std::string const soname = "libnvinfer.so." STR(NV_TENSORRT_MAJOR);
    void* loaded = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    CHECK(loaded != nullptr, "the preloaded plugin loaded libnvinfer at start-up");
    Nvinfer n = openNvinfer(loaded != nullptr ? soname.c_str() : nvinfer, RTLD_NOW | RTLD_LOCAL);
    if (n.registry == nullptr)
    {
        return 1;
    }
    CHECK(findCreator(n.registry) != nullptr, "LD_PRELOAD registers RefinerDLA");
    if (loaded != nullptr)
    {
        dlclose(loaded);
    }
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    std::setvbuf(stdout, nullptr, _IONBF, 0); // every line printed before a sanitizer aborts the process
    if (argc != 4)
    {
        std::fprintf(stderr, "usage: %s sequence|bare|linked|first|preload PLUGIN_LIBRARY FAKE_LIBNVINFER\n", argv[0]);
        return 2;
    }
    std::string const scenario = argv[1];
    int rc = 2;
    if (scenario == "sequence")
    {
        rc = sequence(argv[2], argv[3]);
    }
    else if (scenario == "bare" || scenario == "linked")
    {
        rc = bare(argv[2], argv[3], true);
    }
    else if (scenario == "first")
    {
        rc = bare(argv[2], argv[3], false);
    }
    else if (scenario == "preload")
    {
        rc = preload(argv[3]);
    }
    size_t bytes = 0;
    size_t const live = fakeCudaLiveAllocations(&bytes);
    CHECK(live == 0, "device memory never freed: " + std::to_string(live) + " buffers, " + std::to_string(bytes)
        + " bytes");
    std::printf("harness %s: %d checks, %d failures\n", scenario.c_str(), gChecks.load(), gFailures.load());
    return rc != 0 || gFailures.load() != 0 ? 1 : 0;
}
