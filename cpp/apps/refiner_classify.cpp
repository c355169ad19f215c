// refiner_classify MODEL.engine IMAGE [IMAGE ...] [--topk K] [--json] [--cuda-graph]
//
// Top-k classes per image from a refiner-edge engine, the same JSON as `refiner-edge infer --engine ... --json`.
// Exit codes as the Python CLI: 0 ok; 2 a bad option, an engine that cannot run here, or an unreadable image
// (the other images are still classified and printed); 3 this build has no TensorRT.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "refiner_edge/refiner_edge.h"

namespace {

const char* kUsage =
    "usage: refiner_classify MODEL.engine IMAGE [IMAGE ...] [--topk K] [--json] [--cuda-graph]\n"
    "\n"
    "Classify images with a TensorRT engine from `refiner-edge build` (its manifest MODEL.engine.json beside it).\n"
    "IMAGE: image files, directories (searched recursively), or tensor files from `refiner-edge preprocess`.\n"
    "\n"
    "  --topk K       predictions per image (1..classes) [default: 5]\n"
    "  --json         print the result as JSON on stdout (the shape of `refiner-edge infer --json`)\n"
    "  --cuda-graph   replay each batch size's enqueue as a CUDA graph\n"
    "  --version      print the library's version, decoder and TensorRT, and exit\n"
    "  -h, --help     print this help and exit\n";

int usageError(const std::string& message) {
    std::cerr << "error: " << message << " (see 'refiner_classify --help')\n";
    return 2;
}

bool isImageSuffix(std::string ext) {
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    for (const char* s : {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".rfet"})
        if (ext == s) return true;
    return false;
}

// A path as Python's pathlib prints it ("./a//b.png" -> "a/b.png"), so the JSON names images as
// `refiner-edge infer` does; and its parts, which pathlib sorts by.
std::vector<std::string> parts(const std::string& path) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= path.size()) {
        size_t end = path.find('/', start);
        if (end == std::string::npos) end = path.size();
        std::string part = path.substr(start, end - start);
        if (!part.empty() && part != ".") out.push_back(part);
        start = end + 1;
    }
    return out;
}

std::string pathlibStr(const std::string& path) {
    std::string out = !path.empty() && path[0] == '/' ? "/" : "";
    auto ps = parts(path);
    for (size_t i = 0; i < ps.size(); ++i) out += (i ? "/" : "") + ps[i];
    return out.empty() ? "." : out;
}

// Files as given; directories expanded to their image files, sorted, recursively (images/preprocess.py).
bool expand(const std::vector<std::string>& inputs, std::vector<std::string>& out, std::string& error) {
    namespace fs = std::filesystem;
    for (const std::string& item : inputs) {
        std::error_code ec;
        if (fs::is_directory(item, ec)) {
            std::vector<std::string> found;
            for (fs::recursive_directory_iterator it(item, ec), end; !ec && it != end; it.increment(ec))
                if (it->is_regular_file(ec) && isImageSuffix(it->path().extension().string()))
                    found.push_back(pathlibStr(it->path().string()));
            if (found.empty()) {
                error = item + ": directory holds no images (.bmp, .gif, .jpeg, .jpg, .png, .rfet, .tif, .tiff, .webp)";
                return false;
            }
            std::sort(found.begin(), found.end(),
                      [](const std::string& a, const std::string& b) { return parts(a) < parts(b); });
            out.insert(out.end(), found.begin(), found.end());
        } else if (fs::is_regular_file(item, ec)) {
            out.push_back(pathlibStr(item));
        } else {
            error = "no such file or directory: " + item;
            return false;
        }
    }
    std::vector<std::string> unique;
    for (const auto& p : out)
        if (std::find(unique.begin(), unique.end(), p) == unique.end()) unique.push_back(p);
    out.swap(unique);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> positional;
    int topk = 5;
    bool as_json = false;
    refiner_edge::Classifier::Options options;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            std::cout << kUsage;
            return 0;
        } else if (a == "--version") {
            std::cout << "refiner_classify " << REFINER_EDGE_VERSION_MAJOR << "." << REFINER_EDGE_VERSION_MINOR
                      << " (image decoder: " << refiner_edge::imageDecoder() << "; " <<
                      (refiner_edge::tensorrtVersion() == "none" ? std::string("built without TensorRT")
                                                                 : refiner_edge::tensorrtVersion())
                      << ")\n";
            return 0;
        } else if (a == "--json") {
            as_json = true;
        } else if (a == "--cuda-graph") {
            options.cuda_graph = true;
        } else if (a == "--topk" || a.rfind("--topk=", 0) == 0) {
            std::string v;
            if (a == "--topk") {
                if (i + 1 >= argc) return usageError("option '--topk' requires an argument");
                v = argv[++i];
            } else {
                v = a.substr(7);
            }
            char* end = nullptr;
            long k = std::strtol(v.c_str(), &end, 10);
            if (v.empty() || *end != '\0' || k < 1 || k > 1000000)
                return usageError("invalid value for '--topk': '" + v + "' is not a positive integer");
            topk = static_cast<int>(k);
        } else if (a == "--") {
            for (++i; i < argc; ++i) positional.push_back(argv[i]);
        } else if (a.size() > 1 && a[0] == '-') {
            return usageError("no such option: " + a);
        } else {
            positional.push_back(a);
        }
    }
    if (positional.empty()) return usageError("missing argument 'MODEL.engine'");
    if (positional.size() < 2) return usageError("missing argument 'IMAGE...'");
    const std::string engine = positional[0];
    std::vector<std::string> images;
    std::string error;
    if (!expand({positional.begin() + 1, positional.end()}, images, error)) {
        std::cerr << "error: " << error << "\n";
        return 2;
    }
    std::unique_ptr<refiner_edge::Classifier> model;
    refiner_edge::Status s = refiner_edge::Classifier::create(engine, options, model);
    if (!s) {
        std::cerr << "error: " << s.message() << "\n";
        return refiner_edge::tensorrtVersion() == "none" && s.message().find("built without TensorRT") != std::string::npos ? 3 : 2;
    }
    const refiner_edge::Manifest& m = model->manifest();
    if (topk < 1 || topk > m.model.num_classes) {
        std::cerr << "error: --topk must be between 1 and the model's " << m.model.num_classes << " classes, got "
                  << topk << "\n";
        return 2;
    }
    if (!m.model.checkpoint_sha256)
        std::cerr << "note: no checkpoint: the weights are random, so the predictions are meaningless\n";
    std::vector<refiner_edge::ImageResult> results;
    s = model->classify(images, topk, results);
    if (!s) {
        std::cerr << "error: " << s.message() << "\n";
        return 2;
    }
    if (as_json) {
        std::cout << refiner_edge::resultsToJson(results) << "\n";
    } else {
        for (const auto& r : results) {
            if (!r.error.empty()) continue;
            std::cout << r.image << "\n";
            int rank = 1;
            for (const auto& p : r.predictions) {
                char prob[32];
                std::snprintf(prob, sizeof prob, "%.4f", p.prob);
                std::cout << "  " << rank++ << "  " << p.index << "  " << p.label << "  " << prob << "\n";
            }
        }
    }
    bool failed = false;
    for (const auto& r : results)
        if (!r.error.empty()) {
            std::cerr << "error: " << r.error << "\n";
            failed = true;
        }
    return failed ? 2 : 0;
}
