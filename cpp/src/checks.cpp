// Engine checks: the same order and words as refiner_edge/engine/checks.py, so a stale engine gives the same line
// (ending in the manifest's "rebuild with: refiner-edge build ...") from Python and from C++.
#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
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

// shlex.quote: bare when every character is one of [A-Za-z0-9_@%+=:,./-], else in single quotes with ' as '"'"'.
std::string shellQuote(const std::string& text) {
    if (text.empty()) return "''";
    bool safe = true;
    for (unsigned char c : text)
        if (!(std::isalnum(c) || std::strchr("_@%+=:,./-", c))) safe = false;
    if (safe) return text;
    std::string out = "'";
    for (char c : text) out += c == '\'' ? std::string("'\"'\"'") : std::string(1, c);
    return out + "'";
}

std::string unquote(const std::string& token) {
    if (token.size() < 2 || token.front() != '\'' || token.back() != '\'') return token;
    std::string inner = token.substr(1, token.size() - 2), out;
    const std::string quote = "'\"'\"'";
    for (size_t i = 0; i < inner.size();) {
        if (inner.compare(i, quote.size(), quote) == 0) { out += '\''; i += quote.size(); }
        else out += inner[i++];
    }
    return out;
}

// os.path.abspath: joined to the working directory, '.' and '..' resolved by name, no trailing '/'.
std::string absolutePath(const std::string& path) {
    std::string normal = std::filesystem::absolute(path).lexically_normal().string();
    while (normal.size() > 1 && normal.back() == '/') normal.pop_back();
    return normal;
}

bool isFile(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::vector<long> parts(const std::string& text, bool& ok) {
    std::vector<long> out;
    ok = !text.empty() && text.back() != '.';
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, '.')) {
        // digits only, as Python's check: strtol alone would take "+8" and " 8"
        if (item.empty() || item.size() > 9 || item.find_first_not_of("0123456789") != std::string::npos) ok = false;
        long v = ok ? std::strtol(item.c_str(), nullptr, 10) : -1;
        out.push_back(v);
    }
    return out;
}

// The engine-compatibility rule of refiner_edge/engine/checks.py, case for case (tests/data/engine_compat.json
// holds the cases both are tested against). A plan loads on the TensorRT release that built it: the same
// major.minor.patch; the build number is left out (getInferLibVersion and JetPack's Python package report three
// parts, a registry wheel four), missing parts count as 0 (11.4 is 11.4.0). A version-compatible plan also loads on
// any later release, never an earlier one.
bool release(const std::string& version, std::vector<long>& out) {
    bool ok;
    out = parts(version, ok);
    if (!ok || out.size() > 4) return false;
    out.resize(3, 0);
    return true;
}

std::string sm(const std::string& cc) {
    std::string out;
    for (char c : cc)
        if (c != '.') out += c;
    return "sm_" + out;
}

std::string tensorrtRefusal(const std::string& built_flavour, const std::string& built_version,
                            bool version_compatible, const std::string& flavour, const std::string& version) {
    if (flavour != built_flavour) return "was built by " + built_flavour + " and this is " + flavour;
    std::vector<long> built, here;
    bool okb = release(built_version, built), okh = release(version, here);
    bool same = okb && okh && built == here;
    bool forward = version_compatible && okb && okh && here >= built;
    if (!same && !forward) return "was built by " + built_flavour + " " + built_version + " and this is " + version;
    return "";
}

// plugin_refusal of refiner_edge/engine/checks.py: a library-form plan's library runs only on the TensorRT major
// whose headers it was compiled against (ILogger/ILoggerFinder changed layout in 11.0); one that did not report
// them is taken to be of the builder's major.
std::string pluginRefusal(const EngineInfo& info, const std::string& version) {
    if (info.plugin_form != "library") return "";
    const std::string library = info.plugin_library.value_or("None");
    std::vector<long> here, compiled, built;
    const bool okh = release(version, here);
    if (info.plugin_tensorrt_version && release(*info.plugin_tensorrt_version, compiled)) {
        if (!okh || compiled[0] != here[0])
            return "uses the RefinerDLA plugin library " + library + ", compiled against TensorRT " +
                   *info.plugin_tensorrt_version + " headers, which runs only on TensorRT " +
                   std::to_string(compiled[0]) + ", and this is " + version;
        return "";
    }
    if (!release(info.tensorrt_version, built) || !okh || built[0] != here[0])
        return "uses the RefinerDLA plugin library " + library + ", which does not say which TensorRT headers it "
               "was compiled against, and this is " + version + ", not the major of " + info.tensorrt_version +
               " that built the engine";
    return "";
}

}  // namespace

// A relative plugin path is taken against the engine's folder, never the working directory.
std::string rebuildLine(const std::string& engine, const std::string& recorded) {
    const std::string sep = " -o ";
    for (size_t at = recorded.rfind(sep); at != std::string::npos; at = at ? recorded.rfind(sep, at - 1) : std::string::npos) {
        const std::string tail = recorded.substr(at + sep.size());
        if (shellQuote(unquote(tail)) == tail) return recorded.substr(0, at) + sep + shellQuote(absolutePath(engine));
    }
    return recorded;
}

std::string pluginLibraryPath(const std::string& engine, const std::string& recorded) {
    if (!recorded.empty() && recorded[0] == '/') return recorded;
    size_t slash = engine.find_last_of('/');
    return slash == std::string::npos ? recorded : engine.substr(0, slash + 1) + recorded;
}

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
        if (info.weights == "stripped")   // TensorRT would load it and run with missing weights
            return Status::Error(name + " is a weight-stripped engine: fill its weights in first: refiner-edge refit " +
                                 shellQuote(engine) + " --onnx " +
                                 (info.weights_onnx ? shellQuote(*info.weights_onnx) : std::string("MODEL.onnx")) +
                                 " -o FULL.engine");
        auto stale = [&](const std::string& why) {
            return Status::Error(name + " " + why + ": rebuild with: " + rebuildLine(engine, info.rebuild));
        };
        if (hash_file && !manifest.sha256.empty()) {
            std::string hex;
            Status s = fileSha256(engine, hex);
            if (!s) return s;
            if (hex != manifest.sha256) return stale("is not the engine its manifest describes (SHA-256 differs)");
        }
        if (runtime.flavour != info.flavour)
            return stale("was built by " + info.flavour + " and this is " + runtime.flavour);
        std::string why = tensorrtRefusal(info.flavour, info.tensorrt_version, info.version_compatible,
                                          runtime.flavour, runtime.version);
        if (!why.empty()) return stale(why);
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
            const std::string library = pluginLibraryPath(engine, info.plugin_library.value_or(""));
            if (!info.plugin_library || !isFile(library))
                return stale("needs the RefinerDLA plugin library " + info.plugin_library.value_or("None") +
                             ", which is missing");
            if (info.plugin_sha256) {
                std::string hex;
                Status s = fileSha256(library, hex);
                if (!s) return s;
                if (hex != *info.plugin_sha256)
                    return stale("was built with another RefinerDLA plugin library than " + *info.plugin_library +
                                 " (SHA-256 differs)");
            }
        }
        why = pluginRefusal(info, runtime.version);
        if (!why.empty()) return stale(why);
        return Status::Ok();
    } catch (const std::exception& e) {
        return Status::Error(std::string("checking the engine failed: ") + e.what());
    }
}

}  // namespace refiner_edge
