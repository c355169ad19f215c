// refiner-edge C++ library: run a refiner-edge TensorRT engine from a C++ application.
//
// Everything the library needs to feed an engine comes from the manifest beside it (`model.engine.json`,
// docs/manifest.md): the input size, the preprocessing, the labels, and what the engine was built for. No function
// here throws: each returns a Status (ok, or one line saying what is wrong), and an exception raised inside the
// library (std::bad_alloc included) is turned into a Status at the boundary.
//
//   refiner_edge::Classifier::Options options;            // options.stream: your cudaStream_t (default: its own)
//   std::unique_ptr<refiner_edge::Classifier> model;
//   refiner_edge::Status s = refiner_edge::Classifier::create("model.engine", options, model);
//   if (!s) { std::cerr << "error: " << s.message() << "\n"; return 1; }
//   std::vector<refiner_edge::ImageResult> results;
//   s = model->classify({"cat.jpg", "dog.png"}, /*k=*/5, results);
//   for (auto& r : results) std::cout << r.image << ": " << r.predictions[0].label << "\n";
//
// Built with -DREFINER_EDGE_WITH_TENSORRT=OFF, the manifest reader, the engine checks and the preprocessing work
// and Classifier::create returns a Status saying that TensorRT is not part of this build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#define REFINER_EDGE_VERSION_MAJOR 0
#define REFINER_EDGE_VERSION_MINOR 1

namespace refiner_edge {

// The manifest schema this library reads (docs/manifest.md); a newer manifest is refused, an older one read.
constexpr int kManifestSchemaVersion = 2;

// ok, or one line saying what is wrong. `if (!status)` tests for an error.
class Status {
public:
    Status() = default;
    static Status Ok() { return Status(); }
    static Status Error(std::string message) { return Status(std::move(message), false); }
    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    const std::string& message() const { return message_; }

private:
    Status(std::string message, bool ok) : ok_(ok), message_(std::move(message)) {}
    bool ok_ = true;
    std::string message_;
};

// ---------------------------------------------------------------- the manifest (docs/manifest.md, schema 2)

struct ModelInfo {
    std::string variant;
    int img_size = 0;
    int num_classes = 0;
    int heads = 0;
    int refining_blocks = 0;
    bool aux_head = false;
    std::optional<std::string> checkpoint_sha256;  // none: random weights
};

struct Preprocessing {
    int img_size = 0;        // crop size: the manifest's model.img_size (schema 1 also wrote it here)
    double crop_pct = 1.0;
    int resize_size = 0;     // floor(img_size / crop_pct): the short side goes to this
    float mean[3] = {0.5f, 0.5f, 0.5f};
    float std[3] = {0.5f, 0.5f, 0.5f};
    std::string interpolation = "bicubic";  // bicubic, bilinear or nearest (Pillow's filters)
};

struct PluginInfo {
    std::string name, version, ns, form = "library";
    int nodes = 0;
};

struct GraphInfo {
    std::string input, output;
    int batch = 0;                // 0: dynamic
    int opset = 0;
    std::string precision;
    bool fused = false;
    std::optional<PluginInfo> plugin;
};

struct Profile {
    std::string input;
    std::vector<int64_t> min, opt, max;
};

struct EngineInfo {
    std::string flavour;             // tensorrt or tensorrt-rtx
    std::string tensorrt_version;
    std::string target;
    std::string compute_capability;  // "8.9"
    std::string device;
    std::string precision;
    std::string typing;
    std::vector<Profile> profiles;
    std::string plugin_form;         // none, library or aot
    std::optional<std::string> plugin_library;
    std::optional<std::string> plugin_sha256;
    std::optional<int> dla_core;
    int64_t workspace = 0;
    int builder_optimization_level = 0;
    std::string hardware_compatibility;  // none, ampere+ or same-cc
    bool version_compatible = false;
    double build_seconds = 0;
    std::string rebuild;             // the command line that builds the engine again
    // added later, optional in the file (absent in older manifests)
    std::optional<bool> tf32;        // FP32 layers may run as TF32
    bool user_allocation = false;    // TensorRT-RTX: built with REQUIRE_USER_ALLOCATION
    std::optional<std::string> plugin_tensorrt_version;  // library form: the headers it was compiled against
    std::string weights = "included";  // or stripped: `refiner-edge refit` fills them in before it runs
    std::optional<std::string> refit;  // refittable: identical (its build's weights only) or any
    std::optional<std::string> weights_onnx;    // the ONNX the weights come from
    std::optional<std::string> weights_sha256;
};

struct Manifest {
    int schema_version = 0;
    std::string stage, artifact, sha256, created, labels;
    ModelInfo model;
    Preprocessing preprocess;
    GraphInfo graph;
    std::optional<EngineInfo> engine;  // build stage only
};

// The path of the manifest beside an artifact: `model.engine` -> `model.engine.json`.
std::string manifestPath(const std::string& artifact);
// Read `<artifact>.json`. Errors name the file and the field: "...: missing field 'num_classes'".
Status readManifest(const std::string& artifact, Manifest& out);
// Parse manifest JSON text; `where` prefixes the messages.
Status parseManifest(const std::string& json, const std::string& where, Manifest& out);
// The optimisation profile a runner uses for `batch`: the first that holds it (the smallest MAX, for profiles in
// `refiner-edge build`'s order); -1 when none does. manifest.py profile_for is the same rule.
int profileFor(const std::vector<Profile>& profiles, int batch);

// ---------------------------------------------------------------- engine checks (engine/checks.py)

// What the loading machine has.
struct Runtime {
    std::string flavour = "tensorrt";
    std::string version;                    // "10.3.0"
    std::optional<std::string> compute_capability;  // "8.7"; none: no GPU
    std::string gpu = "this machine";
};

// The same checks, in the same order and words, as refiner_edge/engine/checks.py: the engine's SHA-256, the
// TensorRT flavour and version, the GPU's compute capability and the plugin library; a failure ends in
// "rebuild with: refiner-edge build ...", taken from the manifest (rebuildLine).
Status checkEngine(const std::string& engine, const Manifest& manifest, const Runtime& runtime,
                   bool hash_file = true);
// Read an engine's manifest: refuses a missing engine, a missing manifest and a graph's manifest.
Status readEngineManifest(const std::string& engine, Manifest& out);
// The manifest's rebuild command with its `-o` naming `engine` where it now lies (absolute), as
// refiner_edge/engine/checks.py rebuild_line: a copied engine's line rebuilds the copy.
std::string rebuildLine(const std::string& engine, const std::string& recorded);
// The plugin library a manifest records: a relative path is taken against the engine's folder.
std::string pluginLibraryPath(const std::string& engine, const std::string& recorded);
// SHA-256 of a file as 64 hex digits.
Status fileSha256(const std::string& path, std::string& hex);

// ---------------------------------------------------------------- images and preprocessing

// An upright 8-bit RGB image (EXIF orientation applied), rows top to bottom, RGBRGB...
struct Image {
    int width = 0, height = 0;
    std::vector<uint8_t> rgb;
};

// The decoders compiled in: "opencv", "stb_image" or "none" (raw tensor files only), after "libjpeg-turbo X.Y.Z + "
// where JPEG is decoded by libjpeg-turbo (as Pillow decodes it).
const char* imageDecoder();
// Decode an image file to upright RGB as Pillow does (refiner_edge/images/transform.py: decode, to_rgb).
Status loadImage(const std::string& path, Image& out);
// Resize the short side to resize_size (Pillow's filters, bit-exact on 8-bit RGB), center-crop img_size, scale to
// [0, 1], normalise; writes 3 * img_size * img_size floats, CHW, to `out`.
Status preprocess(const Image& image, const Preprocessing& params, float* out);
// An image file or a raw tensor file from `refiner-edge preprocess` (recognised by its magic) -> the input tensor
// [3, img_size, img_size]. A tensor file must have the manifest's shape.
Status loadInput(const std::string& path, const Preprocessing& params, std::vector<float>& out);

// Raw tensor file (`refiner-edge preprocess`, cpp/README.md): 8 bytes "RFETNSR1", uint32 dtype (0 = float32),
// uint32 ndim (3 or 4), ndim x uint32 dims, then the float32 values, all little-endian, C order.
Status readTensorFile(const std::string& path, std::vector<uint32_t>& dims, std::vector<float>& values);
Status writeTensorFile(const std::string& path, const std::vector<uint32_t>& dims, const float* values);

// ---------------------------------------------------------------- labels and top-k

struct Prediction {
    int index = 0;
    std::string label;
    double prob = 0;
};

struct ImageResult {
    std::string image;
    std::vector<Prediction> predictions;
    std::string error;  // non-empty: this image could not be read (the others still ran)
};

// The ImageNet name for 1000-class models ("imagenet-1k" labels), "class N" otherwise (images/labels.py).
std::string labelFor(int index, int num_classes);
// Softmax (in double) and the k most probable classes, ties in index order, for each of `batch` rows.
std::vector<std::vector<Prediction>> topK(const float* logits, int batch, int num_classes, int k);
// The results as `refiner-edge infer --json` prints them.
std::string resultsToJson(const std::vector<ImageResult>& results);

// ---------------------------------------------------------------- running an engine

class Classifier {
public:
    struct Options {
        void* stream = nullptr;   // a cudaStream_t to enqueue on; null: the classifier creates its own
        bool cuda_graph = false;  // capture each batch size's enqueueV3 once and replay it as a CUDA graph
        int device = 0;           // CUDA device ordinal
        bool check_sha256 = true; // hash the engine file against its manifest before loading it
    };

    // Check the engine against its manifest and this machine, load the plugin library it needs (none for the
    // aot form), deserialize it and allocate buffers for the last profile's largest batch. An engine with several
    // optimisation profiles runs each batch in profileFor's profile, switching the one execution context.
    static Status create(const std::string& engine, const Options& options, std::unique_ptr<Classifier>& out);
    virtual ~Classifier();

    const Manifest& manifest() const;
    int maxBatch() const;   // the largest batch one infer() call takes
    int minBatch() const;

    // input: batch x 3 x S x S float32 on the host; logits: batch x num_classes float32 on the host. Copies in,
    // enqueueV3 (or the CUDA graph) on the stream, copies out, synchronises the stream.
    Status infer(const float* input, int batch, float* logits);
    // Decode, preprocess, batch (up to maxBatch), run and take the top k of each image; an unreadable image gets
    // an error entry and the others still run.
    Status classify(const std::vector<std::string>& images, int k, std::vector<ImageResult>& results);

    Classifier(const Classifier&) = delete;
    Classifier& operator=(const Classifier&) = delete;

protected:
    Classifier() = default;
};

// "tensorrt 10.3.0" when built with TensorRT, "none" otherwise.
std::string tensorrtVersion();

}  // namespace refiner_edge
