// Running an engine on TensorRT 10.x / 11.x: checks, plugin library, deserialization, pre-allocated buffers,
// enqueueV3 on the caller's stream, optionally replayed as a CUDA graph (refiner_edge/runners/tensorrt.py).
// An engine with several optimisation profiles runs each batch in profileFor's profile (the first that holds it):
// one execution context, switched with setOptimizationProfileAsync on the stream when the batch size changes (a
// context per profile would hold activation memory for each profile's MAX).
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>

#include "classifier_common.h"
#include "graph_steps.h"

namespace refiner_edge {
namespace {

std::string baseName(const std::string& path) {
    size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Keeps TensorRT's errors for the Status message; warnings go to stderr only with REFINER_EDGE_VERBOSE set.
class Logger : public nvinfer1::ILogger {
public:
    void log(Severity severity, const char* msg) noexcept override {
        try {
            if (severity <= Severity::kERROR) {
                std::lock_guard<std::mutex> lock(mutex_);
                last_error_ = msg ? msg : "";
            }
            if (std::getenv("REFINER_EDGE_VERBOSE") && severity <= Severity::kWARNING)
                std::fprintf(stderr, "tensorrt: %s\n", msg ? msg : "");
        } catch (...) {
        }
    }
    std::string lastError() {
        std::lock_guard<std::mutex> lock(mutex_);
        return last_error_;
    }

private:
    std::mutex mutex_;
    std::string last_error_;
};

Logger& logger() {
    static Logger instance;
    return instance;
}

std::string cudaMessage(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

Runtime localRuntime(int device) {
    Runtime r;
    r.flavour = "tensorrt";
    r.version = std::to_string(getInferLibMajorVersion()) + "." + std::to_string(getInferLibMinorVersion()) + "." +
                std::to_string(getInferLibPatchVersion()) + "." + std::to_string(getInferLibBuildVersion());
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count <= device) {
        cudaGetLastError();
        return r;  // no GPU: compute_capability stays empty
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) == cudaSuccess) {
        r.compute_capability = std::to_string(prop.major) + "." + std::to_string(prop.minor);
        r.gpu = prop.name;
    }
    return r;
}

class TensorRTClassifier final : public Classifier {
public:
    ~TensorRTClassifier() override {
        if (device_set_) cudaSetDevice(options_.device);  // frees go to the device they were made on
        for (auto& g : graphs_) cudaGraphExecDestroy(g.second);
        context_.reset();
        engine_.reset();
        runtime_.reset();
        if (d_in_) cudaFree(d_in_);
        if (d_out_) cudaFree(d_out_);
        if (h_in_) cudaFreeHost(h_in_);
        if (h_out_) cudaFreeHost(h_out_);
        if (own_stream_ && stream_) cudaStreamDestroy(stream_);
    }

    Status init(const std::string& path, const Options& options) {
        path_ = path;
        name_ = baseName(path);
        options_ = options;
        Status s = readEngineManifest(path, m_);
        if (!s) return s;
        const EngineInfo& info = *m_.engine;
        Runtime here = localRuntime(options.device);
        s = checkEngine(path, m_, here, options.check_sha256);
        if (!s) return s;
        if (!(s = useDevice())) return s;
        device_set_ = true;
        auto rebuild = [&](const std::string& why) {
            return Status::Error(name_ + " " + why + ": rebuild with: " + rebuildLine(path, info.rebuild));
        };
        runtime_.reset(nvinfer1::createInferRuntime(logger()));
        if (!runtime_) return Status::Error("TensorRT could not create a runtime: " + logger().lastError());
        if (info.plugin_form == "library") {
            // checkEngine has seen the file and its hash; the registry calls its getCreators.
            // loadLibrary also returns null when a creator is already registered (a second Classifier in this
            // process): a failure only when RefinerDLA is not in the registry afterwards.
            const std::string library = pluginLibraryPath(path, *info.plugin_library);
            nvinfer1::IPluginRegistry& registry = runtime_->getPluginRegistry();
            const PluginInfo plugin = m_.graph.plugin.value_or(PluginInfo{"RefinerDLA", "1", "refiner_edge"});
            if (!registry.loadLibrary(library.c_str()) &&
                !registry.getCreator(plugin.name.c_str(), plugin.version.c_str(), plugin.ns.c_str()))
                return rebuild("needs the RefinerDLA plugin library " + *info.plugin_library +
                               ", which TensorRT could not load (" + logger().lastError() + ")");
        }
        if (info.version_compatible) runtime_->setEngineHostCodeAllowed(true);
        if (info.dla_core) runtime_->setDLACore(*info.dla_core);
        std::vector<char> plan;
        {
            std::ifstream in(path, std::ios::binary | std::ios::ate);
            if (!in) return Status::Error("cannot read " + path);
            plan.resize(static_cast<size_t>(in.tellg()));
            in.seekg(0);
            in.read(plan.data(), static_cast<std::streamsize>(plan.size()));
            if (!in) return Status::Error("cannot read " + path);
        }
        engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
        if (!engine_)
            return Status::Error(info.flavour + " " + here.version + " could not load " + name_ +
                                 ": rebuild with: " + rebuildLine(path, info.rebuild));
        std::vector<std::string> inputs, outputs;
        for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
            const char* n = engine_->getIOTensorName(i);
            (engine_->getTensorIOMode(n) == nvinfer1::TensorIOMode::kINPUT ? inputs : outputs).push_back(n);
        }
        if (inputs.size() != 1 || outputs.size() != 1)
            return Status::Error(name_ + " has " + std::to_string(inputs.size()) + " inputs and " +
                                 std::to_string(outputs.size()) + " outputs; expected one each");
        input_ = inputs[0];
        output_ = outputs[0];
        if (engine_->getTensorDataType(input_.c_str()) != nvinfer1::DataType::kFLOAT ||
            engine_->getTensorDataType(output_.c_str()) != nvinfer1::DataType::kFLOAT)
            return Status::Error(name_ + ": expected float32 input and output tensors");
        const int S = m_.preprocess.img_size;
        nvinfer1::Dims fixed = engine_->getTensorShape(input_.c_str());
        if (fixed.nbDims != 4 || fixed.d[1] != 3 || fixed.d[2] != S || fixed.d[3] != S)
            return rebuild("does not take [batch, 3, " + std::to_string(S) + ", " + std::to_string(S) +
                           "] as its manifest says");
        // a dynamic batch: the engine's own profiles (the manifest's, which checkEngine tied to this file, must
        // agree in number); a fixed batch has none to pick among
        const int32_t count = fixed.d[0] > 0 ? 0 : engine_->getNbOptimizationProfiles();
        if (fixed.d[0] <= 0 && (count < 1 || size_t(count) != info.profiles.size()))
            return rebuild("has " + std::to_string(count) + " optimisation profiles and its manifest " +
                           std::to_string(info.profiles.size()));
        for (int32_t i = 0; i < count; ++i) {
            nvinfer1::Dims lo = engine_->getProfileShape(input_.c_str(), i, nvinfer1::OptProfileSelector::kMIN);
            nvinfer1::Dims opt = engine_->getProfileShape(input_.c_str(), i, nvinfer1::OptProfileSelector::kOPT);
            nvinfer1::Dims hi = engine_->getProfileShape(input_.c_str(), i, nvinfer1::OptProfileSelector::kMAX);
            if (lo.nbDims != 4 || hi.nbDims != 4 || opt.nbDims != 4)
                return Status::Error(name_ + ": the engine has no optimisation profile");
            Profile p;
            p.input = input_;
            p.min.assign(lo.d, lo.d + 4);
            p.opt.assign(opt.d, opt.d + 4);
            p.max.assign(hi.d, hi.d + 4);
            profiles_.push_back(std::move(p));
        }
        if (fixed.d[0] > 0) {
            min_batch_ = max_batch_ = static_cast<int>(fixed.d[0]);
        } else {
            // build's profiles run from the first's MIN to the last's MAX without a gap; run() checks each batch
            min_batch_ = static_cast<int>(profiles_.front().min[0]);
            max_batch_ = static_cast<int>(profiles_.back().max[0]);
        }
        if (min_batch_ < 1 || max_batch_ < min_batch_ || max_batch_ > 4096)
            return Status::Error(name_ + ": implausible batch range " + std::to_string(min_batch_) + ".." +
                                 std::to_string(max_batch_));
        context_.reset(engine_->createExecutionContext());
        if (!context_) return Status::Error(name_ + ": TensorRT could not create an execution context: " + logger().lastError());
        in_count_ = size_t(3) * S * S;
        classes_ = m_.model.num_classes;
        cudaError_t e;
        if (options.stream) {
            stream_ = static_cast<cudaStream_t>(options.stream);
        } else {
            if ((e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)) != cudaSuccess)
                return Status::Error("cudaStreamCreate: " + cudaMessage(e));
            own_stream_ = true;
        }
        const size_t in_bytes = in_count_ * max_batch_ * sizeof(float);
        const size_t out_bytes = size_t(classes_) * max_batch_ * sizeof(float);
        if ((e = cudaMalloc(&d_in_, in_bytes)) != cudaSuccess || (e = cudaMalloc(&d_out_, out_bytes)) != cudaSuccess ||
            (e = cudaMallocHost(&h_in_, in_bytes)) != cudaSuccess || (e = cudaMallocHost(&h_out_, out_bytes)) != cudaSuccess)
            return Status::Error("allocating buffers for batch " + std::to_string(max_batch_) + ": " + cudaMessage(e));
        if (!context_->setTensorAddress(input_.c_str(), d_in_) || !context_->setTensorAddress(output_.c_str(), d_out_))
            return Status::Error(name_ + ": TensorRT refused the buffers: " + logger().lastError());
        return Status::Ok();
    }

    // The CUDA runtime's current device is per host thread: every entry point that touches CUDA makes the
    // engine's device current first, or a run() from another thread than init()'s launches on device 0.
    Status useDevice() const {
        cudaError_t e = cudaSetDevice(options_.device);
        if (e != cudaSuccess)
            return Status::Error("cannot use CUDA device " + std::to_string(options_.device) + ": " + cudaMessage(e));
        return Status::Ok();
    }

    Status enqueue() {
        if (!context_->enqueueV3(stream_))
            return Status::Error(name_ + ": TensorRT could not run the batch: " + logger().lastError());
        return Status::Ok();
    }

    // Switch the context to profile `index` on the stream (nothing of the last batch still runs: run() ends with a
    // synchronize); the caller sets the input shape again, which TensorRT forgets on a switch, and the buffers'
    // addresses are set again here rather than relying on TensorRT keeping them across it.
    Status useProfile(int index) {
        if (index == active_profile_) return Status::Ok();
        if (!context_->setOptimizationProfileAsync(index, stream_))
            return Status::Error(name_ + ": TensorRT could not switch to optimisation profile " +
                                 std::to_string(index) + ": " + logger().lastError());
        active_profile_ = index;
        if (!context_->setTensorAddress(input_.c_str(), d_in_) || !context_->setTensorAddress(output_.c_str(), d_out_))
            return Status::Error(name_ + ": TensorRT refused the buffers: " + logger().lastError());
        return Status::Ok();
    }

    Status run(const float* input, int batch, float* logits) {
        const int profile = profiles_.empty() ? 0 : profileFor(profiles_, batch);
        if (batch < min_batch_ || batch > max_batch_ || profile < 0)
            return Status::Error("batch " + std::to_string(batch) + " is outside the engine's profile (" +
                                 std::to_string(min_batch_) + ".." + std::to_string(max_batch_) +
                                 "): use --batch-size within it, or rebuild with a wider --batch MIN:OPT:MAX");
        Status s = useDevice();
        if (!s) return s;
        cudaError_t e;
        std::memcpy(h_in_, input, in_count_ * batch * sizeof(float));
        if ((e = cudaMemcpyAsync(d_in_, h_in_, in_count_ * batch * sizeof(float), cudaMemcpyHostToDevice, stream_)) != cudaSuccess)
            return Status::Error("copying the input: " + cudaMessage(e));
        // the CUDA-graph steps of graph_steps.h (and runners/tensorrt.py): a plain enqueue after every shape change
        const GraphSteps::Actions steps = steps_.step(batch);
        if (steps.shape) {
            // the batch changed: its profile may too (a batch has one profile, so only then)
            if (!profiles_.empty() && !(s = useProfile(profile))) {
                steps_.forgetShape();
                return s;
            }
            const int S = m_.preprocess.img_size;
            if (!context_->setInputShape(input_.c_str(), nvinfer1::Dims4(batch, 3, S, S))) {
                steps_.forgetShape();
                return Status::Error(name_ + ": TensorRT refused input shape batch " + std::to_string(batch) + ": " +
                                     logger().lastError());
            }
        }
        nvinfer1::Dims out = context_->getTensorShape(output_.c_str());
        if (out.nbDims != 2 || out.d[0] != batch || out.d[1] != classes_)
            return Status::Error(name_ + ": output shape is not [" + std::to_string(batch) + ", " +
                                 std::to_string(classes_) + "] as the manifest says");
        if (!options_.cuda_graph || steps.plain) {
            if (!(s = enqueue())) return s;
        }
        if (options_.cuda_graph && steps.capture) {
            // the warm-up: the plain enqueue graph_steps.h puts before every capture runs to completion first, so
            // lazily loaded kernels and what a plugin sets up in its first enqueue are done, not captured
            if ((e = cudaStreamSynchronize(stream_)) != cudaSuccess)
                return Status::Error(name_ + ": running the engine failed: " + cudaMessage(e));
            cudaGraph_t graph;
            if ((e = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal)) != cudaSuccess)
                return Status::Error("CUDA graph capture: " + cudaMessage(e));
            Status q = enqueue();
            graph = nullptr;
            e = cudaStreamEndCapture(stream_, &graph);  // always ended: a stream left capturing fails all later work
            if (!q) {
                if (e == cudaSuccess && graph) cudaGraphDestroy(graph);  // captured around a failure: discarded
                return q;
            }
            if (e != cudaSuccess) return Status::Error("CUDA graph capture: " + cudaMessage(e));
            cudaGraphExec_t exec;
            e = cudaGraphInstantiate(&exec, graph, 0);
            cudaGraphDestroy(graph);
            if (e != cudaSuccess) return Status::Error("CUDA graph instantiate: " + cudaMessage(e));
            graphs_[batch] = exec;
            steps_.capturedFor(batch);
        }
        if (options_.cuda_graph && steps.replay) {
            if ((e = cudaGraphLaunch(graphs_.at(batch), stream_)) != cudaSuccess)
                return Status::Error("CUDA graph launch: " + cudaMessage(e));
        }
        const size_t out_bytes = size_t(classes_) * batch * sizeof(float);
        if ((e = cudaMemcpyAsync(h_out_, d_out_, out_bytes, cudaMemcpyDeviceToHost, stream_)) != cudaSuccess)
            return Status::Error("copying the output: " + cudaMessage(e));
        if ((e = cudaStreamSynchronize(stream_)) != cudaSuccess)
            return Status::Error(name_ + ": running the engine failed: " + cudaMessage(e));
        std::memcpy(logits, h_out_, out_bytes);
        return Status::Ok();
    }

    Manifest m_;
    int min_batch_ = 1, max_batch_ = 1;

private:
    struct RuntimeDelete { void operator()(nvinfer1::IRuntime* p) const { delete p; } };
    struct EngineDelete { void operator()(nvinfer1::ICudaEngine* p) const { delete p; } };
    struct ContextDelete { void operator()(nvinfer1::IExecutionContext* p) const { delete p; } };

    std::string path_, name_, input_, output_;
    Options options_;
    std::unique_ptr<nvinfer1::IRuntime, RuntimeDelete> runtime_;
    std::unique_ptr<nvinfer1::ICudaEngine, EngineDelete> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext, ContextDelete> context_;
    cudaStream_t stream_ = nullptr;
    bool own_stream_ = false;
    bool device_set_ = false;
    void* d_in_ = nullptr;
    void* d_out_ = nullptr;
    void* h_in_ = nullptr;
    void* h_out_ = nullptr;
    size_t in_count_ = 0;
    int classes_ = 0;
    GraphSteps steps_;
    std::map<int, cudaGraphExec_t> graphs_;
    std::vector<Profile> profiles_;  // the engine's, in index order; empty for a fixed batch
    int active_profile_ = 0;         // a new context starts in profile 0
};

TensorRTClassifier& impl(Classifier* c) { return *static_cast<TensorRTClassifier*>(c); }
const TensorRTClassifier& impl(const Classifier* c) { return *static_cast<const TensorRTClassifier*>(c); }

}  // namespace

std::string tensorrtVersion() {
    return "tensorrt " + std::to_string(getInferLibMajorVersion()) + "." + std::to_string(getInferLibMinorVersion()) +
           "." + std::to_string(getInferLibPatchVersion());
}

Status Classifier::create(const std::string& engine, const Options& options, std::unique_ptr<Classifier>& out) {
    out.reset();
    try {
        std::unique_ptr<TensorRTClassifier> c(new TensorRTClassifier());
        Status s = c->init(engine, options);
        if (!s) return s;
        out = std::move(c);
        return Status::Ok();
    } catch (const std::bad_alloc&) {
        return Status::Error("out of memory loading " + engine);
    } catch (const std::exception& e) {
        return Status::Error("loading " + engine + " failed: " + e.what());
    }
}

Classifier::~Classifier() = default;
const Manifest& Classifier::manifest() const { return impl(this).m_; }
int Classifier::maxBatch() const { return impl(this).max_batch_; }
int Classifier::minBatch() const { return impl(this).min_batch_; }

Status Classifier::infer(const float* input, int batch, float* logits) {
    try {
        return impl(this).run(input, batch, logits);
    } catch (const std::exception& e) {
        return Status::Error(std::string("inference failed: ") + e.what());
    }
}

Status Classifier::classify(const std::vector<std::string>& images, int k, std::vector<ImageResult>& results) {
    try {
        TensorRTClassifier& c = impl(this);
        return classifyImages(c.m_, c.min_batch_, c.max_batch_, images, k, results,
                              [&](const float* in, int n, float* logits) { return c.run(in, n, logits); });
    } catch (const std::bad_alloc&) {
        return Status::Error("out of memory classifying the images");
    } catch (const std::exception& e) {
        return Status::Error(std::string("classifying failed: ") + e.what());
    }
}

}  // namespace refiner_edge
