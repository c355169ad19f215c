// The library's TensorRT-free parts from the command line, for tests/test_cpp.py (not installed):
//   refiner_edge_probe preprocess MANIFEST.json IMAGE OUT.rfet [IMAGE OUT.rfet ...]
//                                                                the C++ input tensor of each IMAGE
//   refiner_edge_probe decode IMAGE OUT.rfet [IMAGE OUT.rfet ...] the decoded upright RGB, [H, W, 3] floats 0-255
//   refiner_edge_probe manifest MANIFEST.json                    parse a manifest: "ok ..." or the error
//   refiner_edge_probe profiles MANIFEST.json BATCH...          an engine manifest's profiles ("profile I MIN OPT
//                                                                MAX", batches) and, per BATCH, "batch B -> I"
//   refiner_edge_probe check-engine ENGINE FLAVOUR VERSION CC GPU  checkEngine against a described machine
//                                                                  (CC "none": no GPU)
//   refiner_edge_probe topk LOGITS.rfet K                        the JSON of top-k over a [B, C] tensor
// Exit status: 0 ok, 1 a refusal (its message on stderr), 2 a usage error.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "refiner_edge/refiner_edge.h"

using namespace refiner_edge;

namespace {

int refuse(const Status& s) {
    std::cerr << "error: " << s.message() << "\n";
    return 1;
}

Status readManifestFile(const std::string& path, Manifest& m) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Status::Error("cannot read " + path);
    std::ostringstream text;
    text << in.rdbuf();
    return parseManifest(text.str(), path, m);
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> a(argv + 1, argv + argc);
    if (a.empty()) {
        std::cerr << "usage: refiner_edge_probe preprocess|decode|manifest|check-engine|topk ...\n";
        return 2;
    }
    if (a[0] == "decoder" && a.size() == 1) {
        std::cout << imageDecoder() << "\n";
        return 0;
    }
    if (a[0] == "manifest" && a.size() == 2) {
        Manifest m;
        Status s = readManifestFile(a[1], m);
        if (!s) return refuse(s);
        std::cout << "ok " << m.stage << " " << m.model.variant << "@" << m.model.img_size << " resize "
                  << m.preprocess.resize_size << " " << m.preprocess.interpolation << " classes "
                  << m.model.num_classes << (m.engine ? " engine " + m.engine->tensorrt_version : "") << "\n";
        return 0;
    }
    if (a[0] == "profiles" && a.size() >= 2) {
        Manifest m;
        Status s = readManifestFile(a[1], m);
        if (!s) return refuse(s);
        if (!m.engine) return refuse(Status::Error(a[1] + ": not an engine manifest"));
        const std::vector<Profile>& profiles = m.engine->profiles;
        for (size_t i = 0; i < profiles.size(); ++i)
            std::cout << "profile " << i << " " << profiles[i].min[0] << " " << profiles[i].opt[0] << " "
                      << profiles[i].max[0] << "\n";
        for (size_t i = 2; i < a.size(); ++i)
            std::cout << "batch " << a[i] << " -> " << profileFor(profiles, std::atoi(a[i].c_str())) << "\n";
        return 0;
    }
    // Many images in one process keeps the parity tests fast; each refusal is one line, the exit status 1.
    if (a[0] == "preprocess" && a.size() >= 4 && a.size() % 2 == 0) {
        Manifest m;
        Status s = readManifestFile(a[1], m);
        if (!s) return refuse(s);
        const uint32_t S = static_cast<uint32_t>(m.preprocess.img_size);
        int status = 0;
        for (size_t i = 2; i < a.size(); i += 2) {
            std::vector<float> x;
            s = loadInput(a[i], m.preprocess, x);
            if (s) s = writeTensorFile(a[i + 1], {3, S, S}, x.data());
            if (!s) status = refuse(s);
        }
        return status;
    }
    if (a[0] == "decode" && a.size() >= 3 && a.size() % 2 == 1) {
        int status = 0;
        for (size_t i = 1; i < a.size(); i += 2) {
            Image img;
            Status s = loadImage(a[i], img);
            if (s) {
                std::vector<float> v(img.rgb.begin(), img.rgb.end());
                s = writeTensorFile(a[i + 1], {uint32_t(img.height), uint32_t(img.width), 3}, v.data());
            }
            if (!s) status = refuse(s);
        }
        return status;
    }
    if (a[0] == "check-engine" && a.size() == 6) {
        Manifest m;
        Status s = readEngineManifest(a[1], m);
        if (!s) return refuse(s);
        Runtime r;
        r.flavour = a[2];
        r.version = a[3];
        if (a[4] != "none") r.compute_capability = a[4];
        r.gpu = a[5];
        s = checkEngine(a[1], m, r);
        if (!s) return refuse(s);
        std::cout << "ok\n";
        return 0;
    }
    if (a[0] == "topk" && a.size() == 3) {
        std::vector<uint32_t> dims;
        std::vector<float> v;
        Status s = readTensorFile(a[1], dims, v);
        if (!s) return refuse(s);
        if (dims.size() != 2) return refuse(Status::Error("logits must be [batch, classes]"));
        auto preds = topK(v.data(), int(dims[0]), int(dims[1]), std::atoi(a[2].c_str()));
        std::vector<ImageResult> results;
        for (size_t i = 0; i < preds.size(); ++i) results.push_back({"row" + std::to_string(i), preds[i], ""});
        std::cout << resultsToJson(results) << "\n";
        return 0;
    }
    std::cerr << "usage: refiner_edge_probe preprocess|decode|manifest|check-engine|topk ... (see its header)\n";
    return 2;
}
