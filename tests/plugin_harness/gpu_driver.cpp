// Runs librefiner_edge_plugin.so's enqueue path on a real GPU, the way TensorRT's runtime calls it (getCreators,
// createPlugin in the runtime phase, attachToContext, onShapeChange, enqueue), for compute-sanitizer
// (gpu_sanitize.sh, from benchmarks/gpu_check.sh). Each output is compared with a float64 reference on the host; the
// first enqueue of a freshly attached plugin is captured into a CUDA graph with no warm-up.
//   gpu_driver PLUGIN_LIBRARY
#include "NvInfer.h"
#include "NvInferRuntime.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

int gFailures = 0;

#define EXPECT(cond, what)                                                                                             \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            ++gFailures;                                                                                               \
            std::printf("FAIL: %s [%s]\n", std::string(what).c_str(), #cond);                                          \
        }                                                                                                              \
    } while (0)

#define CUDA(call)                                                                                                     \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const e_ = (call);                                                                                 \
        if (e_ != cudaSuccess)                                                                                         \
        {                                                                                                              \
            std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__);                       \
            std::exit(1);                                                                                              \
        }                                                                                                              \
    } while (0)

class Logger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            std::printf("plugin: %s\n", msg);
        }
    }
};

class Finder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        return &mLogger;
    }

private:
    Logger mLogger;
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

struct DlaWeights
{
    int h;
    int e;
    std::vector<float> w1, b1, wd, bd, w2, b2, alpha;
};

DlaWeights randomWeights(int h, int e, std::mt19937& rng)
{
    std::uniform_real_distribution<float> u(-0.5F, 0.5F);
    auto fill = [&](size_t n) {
        std::vector<float> v(n);
        for (float& x : v)
        {
            x = u(rng);
        }
        return v;
    };
    return DlaWeights{h, e, fill(size_t(e) * h), fill(e), fill(9 * size_t(e)), fill(e), fill(size_t(h) * e), fill(h),
        fill(h)};
}

double relu6(double v)
{
    return std::min(std::max(v, 0.0), 6.0);
}

// out = W2 . relu6(dw3x3(relu6(W1 . A + b1)) + bd) + b2 + alpha * A, x1 zero outside the map
std::vector<double> reference(DlaWeights const& w, std::vector<float> const& a, int batch, int rows, int cols)
{
    size_t const plane = size_t(rows) * cols;
    std::vector<double> out(a.size());
    std::vector<double> x1(size_t(w.e) * plane);
    std::vector<double> x2(size_t(w.e) * plane);
    for (int b = 0; b < batch; ++b)
    {
        float const* in = a.data() + size_t(b) * w.h * plane;
        for (int e = 0; e < w.e; ++e)
        {
            for (size_t p = 0; p < plane; ++p)
            {
                double s = w.b1[e];
                for (int h = 0; h < w.h; ++h)
                {
                    s += double(w.w1[size_t(e) * w.h + h]) * in[h * plane + p];
                }
                x1[e * plane + p] = relu6(s);
            }
        }
        for (int e = 0; e < w.e; ++e)
        {
            for (int r = 0; r < rows; ++r)
            {
                for (int c = 0; c < cols; ++c)
                {
                    double s = w.bd[e];
                    for (int i = 0; i < 3; ++i)
                    {
                        for (int j = 0; j < 3; ++j)
                        {
                            int const rr = r + i - 1;
                            int const cc = c + j - 1;
                            if (rr >= 0 && rr < rows && cc >= 0 && cc < cols)
                            {
                                s += double(w.wd[size_t(e) * 9 + i * 3 + j]) * x1[e * plane + size_t(rr) * cols + cc];
                            }
                        }
                    }
                    x2[e * plane + size_t(r) * cols + c] = relu6(s);
                }
            }
        }
        for (int h = 0; h < w.h; ++h)
        {
            for (size_t p = 0; p < plane; ++p)
            {
                double s = double(w.b2[h]) + double(w.alpha[h]) * in[h * plane + p];
                for (int e = 0; e < w.e; ++e)
                {
                    s += double(w.w2[size_t(h) * w.e + e]) * x2[e * plane + p];
                }
                out[size_t(b) * w.h * plane + h * plane + p] = s;
            }
        }
    }
    return out;
}

IPluginV3* create(IPluginCreatorV3One* creator, DlaWeights const& w)
{
    int64_t const h = w.h;
    int64_t const e = w.e;
    std::vector<PluginField> f;
    f.emplace_back("num_heads", &h, PluginFieldType::kINT64, 1);
    f.emplace_back("num_expanded", &e, PluginFieldType::kINT64, 1);
    std::vector<float> const* tensors[] = {&w.w1, &w.b1, &w.wd, &w.bd, &w.w2, &w.b2, &w.alpha};
    char const* names[] = {"w1", "b1", "wd", "bd", "w2", "b2", "alpha"};
    for (int i = 0; i < 7; ++i)
    {
        f.emplace_back(names[i], tensors[i]->data(), PluginFieldType::kFLOAT32, int32_t(tensors[i]->size()));
    }
    PluginFieldCollection fc{int32_t(f.size()), f.data()};
    return creator->createPlugin("refine", &fc, TensorRTPhase::kRUNTIME);
}

IPluginV3OneRuntime* rt(IPluginV3* p)
{
    return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

//! One map through onShapeChange + enqueue on `stream` (captured into a graph when `capture`), checked against float64.
void runCase(IPluginCreatorV3One* creator, int h, int e, int batch, int rows, int cols, bool half, bool capture,
    std::mt19937& rng)
{
    std::string const name = "H=" + std::to_string(h) + " E=" + std::to_string(e) + " [" + std::to_string(batch) + ","
        + std::to_string(h) + "," + std::to_string(rows) + "," + std::to_string(cols) + "] "
        + (half ? "FP16" : "FP32") + (capture ? " captured" : "");
    DlaWeights const w = randomWeights(h, e, rng);
    IPluginV3* engine = create(creator, w);
    EXPECT(engine != nullptr, name + ": createPlugin");
    if (engine == nullptr)
    {
        return;
    }
    ResourceContext ctx;
    IPluginV3* p = rt(engine)->attachToContext(&ctx);
    EXPECT(p != nullptr, name + ": attachToContext");
    if (p == nullptr)
    {
        delete engine;
        return;
    }
    size_t const n = size_t(batch) * h * rows * cols;
    std::vector<float> a(n);
    std::uniform_real_distribution<float> u(-1.F, 1.F);
    for (float& x : a)
    {
        x = half ? __half2float(__float2half(u(rng))) : u(rng);
    }
    size_t const elem = half ? 2 : 4;
    void* dIn = nullptr;
    void* dOut = nullptr;
    CUDA(cudaMalloc(&dIn, std::max<size_t>(n * elem, 1)));
    CUDA(cudaMalloc(&dOut, std::max<size_t>(n * elem, 1)));
    if (half)
    {
        std::vector<__half> ah(n);
        for (size_t i = 0; i < n; ++i)
        {
            ah[i] = __float2half(a[i]);
        }
        CUDA(cudaMemcpy(dIn, ah.data(), n * elem, cudaMemcpyHostToDevice));
    }
    else
    {
        CUDA(cudaMemcpy(dIn, a.data(), n * elem, cudaMemcpyHostToDevice));
    }
    PluginTensorDesc d{};
    d.dims.nbDims = 4;
    d.dims.d[0] = batch;
    d.dims.d[1] = h;
    d.dims.d[2] = rows;
    d.dims.d[3] = cols;
    d.type = half ? DataType::kHALF : DataType::kFLOAT;
    d.format = TensorFormat::kLINEAR;
    cudaStream_t stream = nullptr;
    CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    void const* inputs[] = {dIn};
    void* outputs[] = {dOut};
    cudaGraph_t graph = nullptr;
    if (capture)
    {
        CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    }
    int32_t const shape = rt(p)->onShapeChange(&d, 1, &d, 1);
    int32_t const status = rt(p)->enqueue(&d, &d, inputs, outputs, nullptr, stream);
    if (capture)
    {
        cudaError_t const end = cudaStreamEndCapture(stream, &graph);
        EXPECT(end == cudaSuccess, name + ": the capture ends cleanly: " + cudaGetErrorString(end));
        if (end == cudaSuccess)
        {
            cudaGraphExec_t exec = nullptr;
            CUDA(cudaGraphInstantiate(&exec, graph, 0));
            CUDA(cudaGraphLaunch(exec, stream));
            CUDA(cudaGraphExecDestroy(exec));
            CUDA(cudaGraphDestroy(graph));
        }
    }
    CUDA(cudaStreamSynchronize(stream));
    EXPECT(shape == 0 && status == 0, name + ": onShapeChange and enqueue succeed");
    if (n > 0 && status == 0)
    {
        std::vector<float> got(n);
        if (half)
        {
            std::vector<__half> oh(n);
            CUDA(cudaMemcpy(oh.data(), dOut, n * elem, cudaMemcpyDeviceToHost));
            for (size_t i = 0; i < n; ++i)
            {
                got[i] = __half2float(oh[i]);
            }
        }
        else
        {
            CUDA(cudaMemcpy(got.data(), dOut, n * elem, cudaMemcpyDeviceToHost));
        }
        std::vector<double> const ref = reference(w, a, batch, rows, cols);
        double worst = 0;
        for (size_t i = 0; i < n; ++i)
        {
            double const tol = half ? 2e-2 + 1e-2 * std::fabs(ref[i]) : 1e-4 + 1e-5 * std::fabs(ref[i]);
            worst = std::max(worst, std::fabs(got[i] - ref[i]) / tol);
        }
        EXPECT(worst <= 1.0, name + ": matches the float64 reference (worst error " + std::to_string(worst)
            + " x tolerance)");
        std::printf("%s: ok (worst error %.3f x tolerance)\n", name.c_str(), worst);
    }
    CUDA(cudaStreamDestroy(stream));
    CUDA(cudaFree(dIn));
    CUDA(cudaFree(dOut));
    delete p;
    delete engine;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::fprintf(stderr, "usage: %s PLUGIN_LIBRARY\n", argv[0]);
        return 2;
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr)
    {
        std::printf("cannot load %s: %s\n", argv[1], dlerror());
        return 1;
    }
    static Finder finder;
    auto setLoggerFinder = reinterpret_cast<void (*)(ILoggerFinder*)>(dlsym(lib, "setLoggerFinder"));
    auto getCreators = reinterpret_cast<IPluginCreatorInterface* const* (*) (int32_t&)>(dlsym(lib, "getCreators"));
    if (setLoggerFinder == nullptr || getCreators == nullptr)
    {
        std::printf("the library exports no setLoggerFinder/getCreators\n");
        return 1;
    }
    setLoggerFinder(&finder);
    int32_t nb = 0;
    auto* creator = static_cast<IPluginCreatorV3One*>(getCreators(nb)[0]);
    std::mt19937 rng(7);
    runCase(creator, 12, 36, 2, 20, 37, false, true, rng); // a CUDA graph of the very first enqueue
    runCase(creator, 12, 36, 2, 20, 37, true, false, rng);
    runCase(creator, 16, 48, 1, 33, 65, false, false, rng);
    runCase(creator, 16, 48, 1, 33, 65, true, true, rng);
    runCase(creator, 4, 12, 3, 1, 1, false, false, rng);
    runCase(creator, 32, 400, 1, 17, 40, false, true, rng); // past 48 KiB of shared memory: opted in, captured
    runCase(creator, 1, 3, 70000, 2, 3, false, false, rng);  // a batch past grid.y's 65535
    runCase(creator, 12, 36, 2, 0, 0, false, false, rng);    // an empty map: a no-op
    runCase(creator, 12, 36, 0, 8, 8, true, false, rng);     // batch 0
    std::printf("gpu_driver: %d failures\n", gFailures);
    return gFailures == 0 ? 0 : 1;
}
