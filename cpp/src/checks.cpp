// Engine checks: the same order and words as refiner_edge/engine/checks.py, so a stale engine gives the same line
// (ending in the manifest's "rebuild with: refiner-edge build ...") from Python and from C++.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "refiner_edge/refiner_edge.h"
#include "sha256.h"

namespace refiner_edge {
namespace {

std::string baseName(const std::string& path) {
    size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool isFile(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::vector<long> parts(const std::string& text, bool& ok) {
    std::vector<long> out;
    ok = !text.empty();
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, '.')) {
        char* end = nullptr;
        long v = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0') ok = false;
        out.push_back(v);
    }
    return out;
}

// "10.3.0" and "10.3.0.26" are the same TensorRT: the C++ API reports four parts, a Python wheel three or four.
bool sameVersion(const std::string& a, const std::string& b) {
    if (a == b) return true;
    bool oka, okb;
    auto pa = parts(a, oka), pb = parts(b, okb);
    size_t n = std::min(pa.size(), pb.size());
    if (!oka || !okb || n < 3) return false;
    for (size_t i = 0; i < n; ++i)
        if (pa[i] != pb[i]) return false;
    return true;
}

std::string sm(const std::string& cc) {
    std::string out;
    for (char c : cc)
        if (c != '.') out += c;
    return "sm_" + out;
}

}  // namespace

Status fileSha256(const std::string& path, std::string& hex) try {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Status::Error("cannot read " + path);
    Sha256 h;
    char buf[1 << 16];
    while (in) {
        in.read(buf, sizeof buf);
        h.update(reinterpret_cast<const uint8_t*>(buf), static_cast<size_t>(in.gcount()));
    }
    if (in.bad()) return Status::Error("cannot read " + path);
    hex = h.hexdigest();
    return Status::Ok();
} catch (const std::exception& e) {
    return Status::Error("cannot read " + path + " (" + e.what() + ")");
}

Status readEngineManifest(const std::string& engine, Manifest& out) try {
    if (!isFile(engine)) return Status::Error("engine not found: " + engine);
    Manifest m;
    Status s = readManifest(engine, m);
    if (!s) return s;
    if (m.stage != "build" || !m.engine)
        return Status::Error(baseName(engine) + "'s manifest is a " + m.stage + " manifest, not an engine's");
    out = std::move(m);
    return Status::Ok();
} catch (const std::exception& e) {
    return Status::Error("reading the manifest of " + engine + " failed (" + std::string(e.what()) + ")");
}

Status checkEngine(const std::string& engine, const Manifest& manifest, const Runtime& runtime, bool hash_file) {
    try {
        if (!manifest.engine) return Status::Error(baseName(engine) + "'s manifest is not an engine's");
        const EngineInfo& info = *manifest.engine;
        const std::string name = baseName(engine);
        auto stale = [&](const std::string& why) {
            return Status::Error(name + " " + why + ": rebuild with: " + info.rebuild);
        };
        if (hash_file && !manifest.sha256.empty()) {
            std::string hex;
            Status s = fileSha256(engine, hex);
            if (!s) return s;
            if (hex != manifest.sha256) return stale("is not the engine its manifest describes (SHA-256 differs)");
        }
        if (runtime.flavour != info.flavour)
            return stale("was built by " + info.flavour + " and this is " + runtime.flavour);
        if (!sameVersion(runtime.version, info.tensorrt_version) && !info.version_compatible)
            return stale("was built by " + info.flavour + " " + info.tensorrt_version + " and this is " +
                         runtime.version);
        if (!runtime.compute_capability)
            return Status::Error(name + " runs on a CUDA GPU (" + sm(info.compute_capability) + ") and " +
                                 runtime.gpu + " has none");
        bool okh, okw;
        auto have = parts(*runtime.compute_capability, okh), want = parts(info.compute_capability, okw);
        bool portable = info.hardware_compatibility == "ampere+" && okh && !have.empty() && have[0] >= 8;
        if ((have != want || !okh || !okw) && !portable)
            return stale("was built for " + sm(info.compute_capability) + " (" + info.device + ") and " +
                         runtime.gpu + " is " + sm(*runtime.compute_capability));
        if (info.plugin_form == "library") {
            if (!info.plugin_library || !isFile(*info.plugin_library))
                return stale("needs the RefinerDLA plugin library " + info.plugin_library.value_or("None") +
                             ", which is missing");
            if (info.plugin_sha256) {
                std::string hex;
                Status s = fileSha256(*info.plugin_library, hex);
                if (!s) return s;
                if (hex != *info.plugin_sha256)
                    return stale("was built with another RefinerDLA plugin library than " + *info.plugin_library +
                                 " (SHA-256 differs)");
            }
        }
        return Status::Ok();
    } catch (const std::exception& e) {
        return Status::Error(std::string("checking the engine failed: ") + e.what());
    }
}

}  // namespace refiner_edge
