// The manifest reader: the same rules and messages as refiner_edge/manifest.py (docs/manifest.md).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <fstream>
#include <sstream>

#include "json.h"
#include "refiner_edge/refiner_edge.h"

namespace refiner_edge {
namespace {

using json::Value;
using Type = Value::Type;

// Reads the fields of one JSON object, stopping at the first problem (reported as Python's reader words it).
class Fields {
public:
    Fields(const Value& v, std::string where, std::string& error) : v_(v), where_(std::move(where)), error_(error) {
        if (v_.type != Type::Object) fail(where_ + ": expected an object, got " + json::typeName(v_));
    }
    bool ok() const { return error_.empty(); }
    const std::string& where() const { return where_; }

    // nullptr when absent (an error if required) or null (an error unless nullable)
    const Value* field(const char* name, bool required, bool nullable, const char* type) {
        if (!ok()) return nullptr;
        const Value* f = v_.get(name);
        if (!f) {
            if (required) fail(where_ + ": missing field '" + name + "'");
            return nullptr;
        }
        if (f->type == Type::Null) {
            if (!nullable) fail(where_ + ": " + name + " must not be null");
            return nullptr;
        }
        (void)type;
        return f;
    }
    void wrong(const char* name, const char* expected, const Value& got) {
        fail(where_ + ": " + name + " should be " + expected + ", got " + json::typeName(got));
    }
    std::string str(const char* name, bool required = true, const std::string& dflt = "") {
        const Value* f = field(name, required, false, "str");
        if (!f) return dflt;
        if (f->type != Type::String) { wrong(name, "str", *f); return dflt; }
        return f->string;
    }
    std::optional<std::string> optStr(const char* name) {
        const Value* f = field(name, true, true, "str");
        if (!f) return std::nullopt;
        if (f->type != Type::String) { wrong(name, "str or NoneType", *f); return std::nullopt; }
        return f->string;
    }
    long long integer(const char* name, bool required = true) {
        const Value* f = field(name, required, false, "int");
        if (!f) return 0;
        if (f->type != Type::Int) { wrong(name, "int", *f); return 0; }
        return f->integer;
    }
    std::optional<long long> optInt(const char* name) {
        const Value* f = field(name, true, true, "int");
        if (!f) return std::nullopt;
        if (f->type != Type::Int) { wrong(name, "int or NoneType", *f); return std::nullopt; }
        return f->integer;
    }
    double number(const char* name) {
        const Value* f = field(name, true, false, "float");
        if (!f) return 0;
        if (f->type != Type::Int && f->type != Type::Float) { wrong(name, "float", *f); return 0; }
        return f->number;
    }
    bool boolean(const char* name) {
        const Value* f = field(name, true, false, "bool");
        if (!f) return false;
        if (f->type != Type::Bool) { wrong(name, "bool", *f); return false; }
        return f->boolean;
    }
    const Value* object(const char* name, bool required = true, bool nullable = false) {
        const Value* f = field(name, required, nullable, "dict");
        if (f && f->type != Type::Object) { wrong(name, "dict", *f); return nullptr; }
        return f;
    }
    const Value* list(const char* name, bool required = true) {
        const Value* f = field(name, required, false, "list");
        if (f && f->type != Type::Array) { wrong(name, "list", *f); return nullptr; }
        return f;
    }
    void fail(const std::string& message) {
        if (error_.empty()) error_ = message;
    }

private:
    const Value& v_;
    std::string where_;
    std::string& error_;
};

// Range rules: refiner_edge/manifest.py's check() methods, in the same order and words (docs/manifest.md).
constexpr long long kMaxImgSize = 8192, kMaxResizeSize = 65536, kMaxClasses = 1000000, kMaxOpset = 1000;

std::string num(double v) {   // Python's format(v, "g")
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

// False (and the error set) when value is outside [lo, hi].
bool inRange(const std::string& where, const char* name, long long value, long long lo, long long hi,
             std::string& error) {
    if (!error.empty()) return false;
    if (value >= lo && value <= hi) return true;
    error = where + ": " + name + " " + std::to_string(value) + " is out of range (" + std::to_string(lo) + " to " +
            std::to_string(hi) + ")";
    return false;
}

bool oneOf(const std::string& where, const char* name, const std::string& value,
           std::initializer_list<const char*> allowed, std::string& error) {
    if (!error.empty()) return false;
    std::string list;
    for (const char* a : allowed) {
        if (value == a) return true;
        list += (list.empty() ? "" : ", ") + std::string(a);
    }
    error = where + ": " + name + " '" + value + "' is not one of " + list;
    return false;
}

// A nested object field that must hold an object (a dataclass in the Python schema).
const Value* nested(Fields& f, const char* name, bool required, bool nullable, std::string& error) {
    const Value* v = f.field(name, required, nullable, "object");
    if (v && v->type != Type::Object) {
        if (error.empty()) error = f.where() + ": " + name + ": expected an object, got " + json::typeName(*v);
        return nullptr;
    }
    return v;
}

void readFloats(Fields& f, const char* name, float (&out)[3], std::string& error) {
    const Value* v = f.list(name);
    if (!v || !error.empty()) return;
    for (size_t i = 0; i < v->array.size(); ++i) {
        const Value& x = v->array[i];
        if (x.type != Type::Int && x.type != Type::Float) {
            f.fail(f.where() + ": " + name + "[" + std::to_string(i) + "] should be float, got " + json::typeName(x));
            return;
        }
    }
    if (v->array.size() != 3) {
        f.fail(f.where() + ": " + name + " should hold 3 values (R, G, B), got " + std::to_string(v->array.size()));
        return;
    }
    for (int i = 0; i < 3; ++i) out[i] = static_cast<float>(v->array[i].number);
}

// One profile shape: a list of ints (Python's messages), then [batch, 3, size, size] (the C++ reader's own check).
void readShape(Fields& g, const char* name, std::vector<int64_t>& out) {
    const Value* v = g.list(name);
    if (!v || !g.ok()) return;
    for (size_t i = 0; i < v->array.size(); ++i) {
        const Value& d = v->array[i];
        if (d.type != Type::Int) {
            g.fail(g.where() + ": " + name + "[" + std::to_string(i) + "] should be int, got " + json::typeName(d));
            return;
        }
        out.push_back(d.integer);
    }
}

void readEngine(const Value& v, const std::string& where, EngineInfo& e, std::string& error) {
    Fields f(v, where, error);
    e.flavour = f.str("flavour");
    e.tensorrt_version = f.str("tensorrt_version");
    e.target = f.str("target");
    e.compute_capability = f.str("compute_capability");
    e.device = f.str("device");
    e.precision = f.str("precision");
    e.typing = f.str("typing");
    const Value* profiles = f.list("profiles");
    if (profiles && error.empty()) {
        for (size_t i = 0; i < profiles->array.size() && error.empty(); ++i) {
            Fields g(profiles->array[i], where + ": profiles[" + std::to_string(i) + "]", error);
            Profile prof;
            prof.input = g.str("input");
            readShape(g, "min", prof.min);
            readShape(g, "opt", prof.opt);
            readShape(g, "max", prof.max);
            if (error.empty() && (prof.min.size() != 4 || prof.opt.size() != 4 || prof.max.size() != 4))
                error = g.where() + ": min, opt and max should be [batch, 3, size, size]";
            for (size_t d = 0; d < 4 && error.empty(); ++d)
                if (!(1 <= prof.min[d] && prof.min[d] <= prof.opt[d] && prof.opt[d] <= prof.max[d]))
                    error = g.where() + ": min, opt and max must be positive with min <= opt <= max";
            e.profiles.push_back(std::move(prof));
        }
    }
    e.plugin_form = f.str("plugin_form");
    e.plugin_library = f.optStr("plugin_library");
    e.plugin_sha256 = f.optStr("plugin_sha256");
    auto dla = f.optInt("dla_core");
    e.workspace = f.integer("workspace");
    const long long level = f.integer("builder_optimization_level");
    e.hardware_compatibility = f.str("hardware_compatibility");
    e.version_compatible = f.boolean("version_compatible");
    f.optStr("timing_cache");
    e.build_seconds = f.number("build_seconds");
    e.rebuild = f.str("rebuild");
    // fields added later: absent or null in older manifests, typed as Python's reader types them
    if (const Value* t = f.field("tf32", false, true, "bool")) {
        if (t->type != Type::Bool) f.wrong("tf32", "bool or NoneType", *t);
        else e.tf32 = t->boolean;
    }
    if (const Value* u = f.field("user_allocation", false, false, "bool")) {
        if (u->type != Type::Bool) f.wrong("user_allocation", "bool", *u);
        else e.user_allocation = u->boolean;
    }
    if (const Value* h = f.field("plugin_tensorrt_version", false, true, "str")) {
        if (h->type != Type::String) f.wrong("plugin_tensorrt_version", "str or NoneType", *h);
        else e.plugin_tensorrt_version = h->string;
    }
    if (const Value* w = f.field("weights", false, false, "str")) {
        if (w->type != Type::String) f.wrong("weights", "str", *w);
        else e.weights = w->string;
    }
    if (const Value* r = f.field("refit", false, true, "str")) {
        if (r->type != Type::String) f.wrong("refit", "str or NoneType", *r);
        else e.refit = r->string;
    }
    if (const Value* o = f.field("weights_onnx", false, true, "str")) {
        if (o->type != Type::String) f.wrong("weights_onnx", "str or NoneType", *o);
        else e.weights_onnx = o->string;
    }
    if (const Value* h = f.field("weights_sha256", false, true, "str")) {
        if (h->type != Type::String) f.wrong("weights_sha256", "str or NoneType", *h);
        else e.weights_sha256 = h->string;
    }
    if (error.empty() && e.profiles.empty()) error = where + ": profiles is empty: the engine has no input shapes";
    if (dla && inRange(where, "dla_core", *dla, 0, 15, error)) e.dla_core = static_cast<int>(*dla);
    inRange(where, "workspace", e.workspace, 0, 1LL << 50, error);
    if (inRange(where, "builder_optimization_level", level, 0, 5, error))
        e.builder_optimization_level = static_cast<int>(level);
    if (error.empty() && !(e.build_seconds >= 0 && std::isfinite(e.build_seconds)))
        error = where + ": build_seconds " + num(e.build_seconds) + " must be a finite number, 0 or more";
    oneOf(where, "weights", e.weights, {"included", "stripped"}, error);
    if (e.refit) oneOf(where, "refit", *e.refit, {"identical", "any"}, error);
}

void readManifestValue(const Value& root, const std::string& where, Manifest& m, std::string& error) {
    if (root.type != Type::Object) {
        error = where + ": a manifest is a JSON object";
        return;
    }
    const Value* version = root.get("schema_version");
    if (!version || version->type != Type::Int) {
        error = where + ": no schema_version: written before refiner-edge 0.2; make the artifact again";
        return;
    }
    if (version->integer > kManifestSchemaVersion) {
        error = where + ": manifest schema " + std::to_string(version->integer) +
                " is newer than this refiner-edge reads (" + std::to_string(kManifestSchemaVersion) +
                "): upgrade refiner-edge";
        return;
    }
    m.schema_version = static_cast<int>(version->integer);
    Fields f(root, where, error);
    // In the schema's field order, so the first problem reported is the one Python reports.
    m.stage = f.str("stage");
    m.artifact = f.str("artifact");
    const Value* model = nested(f, "model", true, false, error);
    if (model && error.empty()) {
        Fields g(*model, where + ": model", error);
        m.model.variant = g.str("variant");
        const long long img = g.integer("img_size"), classes = g.integer("num_classes"), heads = g.integer("heads"),
                        refining = g.integer("refining_blocks");
        m.model.aux_head = g.boolean("aux_head");
        m.model.checkpoint_sha256 = g.optStr("checkpoint_sha256");
        const std::string at = where + ": model";
        inRange(at, "img_size", img, 1, kMaxImgSize, error);
        inRange(at, "num_classes", classes, 1, kMaxClasses, error);
        inRange(at, "heads", heads, 1, 1024, error);
        inRange(at, "refining_blocks", refining, 0, 1024, error);
        if (error.empty()) {
            m.model.img_size = static_cast<int>(img);
            m.model.num_classes = static_cast<int>(classes);
            m.model.heads = static_cast<int>(heads);
            m.model.refining_blocks = static_cast<int>(refining);
        }
    }
    const Value* pre = nested(f, "preprocess", true, false, error);
    if (pre && error.empty()) {
        Fields g(*pre, where + ": preprocess", error);
        // The crop is the model's input size: schema 2 keeps it once, as model.img_size. A schema 1 manifest holds
        // it here too, read like any field and held to the model's below (refiner_edge/manifest.py alike).
        const bool ownSize = pre->type == Type::Object && pre->get("img_size") != nullptr;
        long long img = ownSize ? g.integer("img_size") : m.model.img_size;
        m.preprocess.crop_pct = g.number("crop_pct");
        long long resize = g.integer("resize_size");
        readFloats(g, "mean", m.preprocess.mean, error);
        readFloats(g, "std", m.preprocess.std, error);
        m.preprocess.interpolation = g.str("interpolation");
        if (error.empty()) {
            // Bounds first, so a hostile manifest never sizes an allocation.
            const std::string at = where + ": preprocess";
            const double crop = m.preprocess.crop_pct;
            inRange(at, "img_size", img, 1, kMaxImgSize, error);
            if (error.empty() && !(crop > 0.0 && std::isfinite(crop)))
                error = at + ": crop_pct " + num(crop) + " must be a finite number above 0";
            inRange(at, "resize_size", resize, 1, kMaxResizeSize, error);
            for (int c = 0; c < 3 && error.empty(); ++c)
                if (!(m.preprocess.std[c] != 0.0f) || !std::isfinite(m.preprocess.std[c]) ||
                    !std::isfinite(m.preprocess.mean[c]))
                    error = at + ": mean and std must be finite and std non-zero";
            oneOf(at, "interpolation", m.preprocess.interpolation, {"bicubic", "bilinear", "nearest"}, error);
            if (error.empty() && std::floor(double(img) / crop) != double(resize))
                error = "manifest preprocessing is inconsistent: resize_size " + std::to_string(resize) +
                        " but floor(img_size / crop_pct) = " +
                        std::to_string(static_cast<long long>(std::floor(double(img) / crop)));
            m.preprocess.img_size = static_cast<int>(img);
            m.preprocess.resize_size = static_cast<int>(resize);
        }
    }
    m.labels = f.str("labels");
    const Value* graph = nested(f, "graph", true, false, error);
    if (graph && error.empty()) {
        Fields g(*graph, where + ": graph", error);
        m.graph.input = g.str("input");
        m.graph.output = g.str("output");
        const Value* batch = g.field("batch", true, false, "int");
        bool batchOk = true;
        if (batch && batch->type == Type::Int) {
            batchOk = batch->integer >= 1 && batch->integer <= INT32_MAX;
            m.graph.batch = batchOk ? static_cast<int>(batch->integer) : 0;
        } else if (batch && batch->type == Type::String) {
            batchOk = batch->string == "dynamic";
            m.graph.batch = 0;
        } else if (batch) {
            g.wrong("batch", "int or str", *batch);
        }
        const long long opset = g.integer("opset");
        m.graph.precision = g.str("precision");
        m.graph.fused = g.boolean("fused");
        g.list("fp32_ops", false);
        g.list("fp16_layers", false);
        const Value* plugin = nested(g, "plugin", false, true, error);
        if (plugin && error.empty()) {
            Fields p(*plugin, where + ": graph: plugin", error);
            PluginInfo info;
            info.name = p.str("name");
            info.version = p.str("version");
            info.ns = p.str("namespace");
            const long long nodes = p.integer("nodes");
            info.form = p.str("form", false, "library");
            if (inRange(p.where(), "nodes", nodes, 0, 1000000, error)) info.nodes = static_cast<int>(nodes);
            m.graph.plugin = info;
        }
        const std::string at = where + ": graph";
        if (error.empty() && !batchOk) error = at + ": batch must be \"dynamic\" or at least 1";
        if (inRange(at, "opset", opset, 1, kMaxOpset, error)) m.graph.opset = static_cast<int>(opset);
        oneOf(at, "precision", m.graph.precision, {"fp32", "fp16", "int8"}, error);
    }
    const Value* source = nested(f, "source", false, true, error);
    if (source && error.empty()) {
        Fields s(*source, where + ": source", error);
        s.str("artifact");
        s.str("sha256");
        s.str("stage");
    }
    const Value* verification = f.list("verification", false);
    if (verification && error.empty()) {
        for (size_t i = 0; i < verification->array.size() && error.empty(); ++i) {
            Fields v(verification->array[i], where + ": verification[" + std::to_string(i) + "]", error);
            v.str("stage");
            v.str("candidate");
            v.str("reference");
            v.str("inputs");
            v.object("metrics");
            v.object("thresholds");
        }
    }
    f.object("report", false);
    const Value* engine = nested(f, "engine", false, true, error);
    if (engine && error.empty()) {
        EngineInfo e;
        readEngine(*engine, where + ": engine", e, error);
        m.engine = std::move(e);
    }
    m.sha256 = f.str("sha256", false);
    m.created = f.str("created", false);
    f.object("versions", false);
    oneOf(where, "stage", m.stage, {"export", "calibrate", "fuse", "build"}, error);
    if (error.empty() && m.preprocess.img_size != m.model.img_size)
        error = where + ": preprocess: img_size " + std::to_string(m.preprocess.img_size) +
                " differs from model: img_size " + std::to_string(m.model.img_size) +
                " (the crop is the model's input size)";
}

}  // namespace

std::string manifestPath(const std::string& artifact) { return artifact + ".json"; }

int profileFor(const std::vector<Profile>& profiles, int batch) {
    for (size_t i = 0; i < profiles.size(); ++i) {
        const Profile& p = profiles[i];
        if (!p.min.empty() && !p.max.empty() && p.min[0] <= batch && batch <= p.max[0]) return static_cast<int>(i);
    }
    return -1;
}

Status parseManifest(const std::string& text, const std::string& where, Manifest& out) {
    try {
        json::Value root;
        std::string error;
        if (!json::parse(text, root, error)) return Status::Error(where + ": not a readable manifest (" + error + ")");
        Manifest m;
        readManifestValue(root, where, m, error);
        if (!error.empty()) return Status::Error(error);
        out = std::move(m);
        return Status::Ok();
    } catch (const std::exception& e) {
        return Status::Error(where + ": not a readable manifest (" + e.what() + ")");
    }
}

Status readManifest(const std::string& artifact, Manifest& out) try {
    std::string path = manifestPath(artifact);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec) && std::filesystem::is_symlink(artifact, ec)) {
        // a link (current.engine -> refiner-vit-m.engine) names the artifact it points to: its manifest lies beside
        // that, as refiner_edge/manifest.py's read_manifest finds it
        std::filesystem::path target = std::filesystem::canonical(artifact, ec);
        if (!ec) path = manifestPath(target.string());
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        size_t slash = path.find_last_of('/');
        std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
        return Status::Error(artifact + " has no manifest (" + name + "): make it with refiner-edge");
    }
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) return Status::Error(path + ": not a readable manifest (read error)");
    return parseManifest(text.str(), path, out);
} catch (const std::exception& e) {
    return Status::Error(manifestPath(artifact) + ": not a readable manifest (" + e.what() + ")");
}

}  // namespace refiner_edge
