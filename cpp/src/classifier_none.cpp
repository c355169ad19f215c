// Built with -DREFINER_EDGE_WITH_TENSORRT=OFF: the engine's manifest is still read and checked, then creating a
// classifier says that this build cannot run it.
#include "refiner_edge/refiner_edge.h"

namespace refiner_edge {

std::string tensorrtVersion() { return "none"; }

Status Classifier::create(const std::string& engine, const Options&, std::unique_ptr<Classifier>& out) {
    out.reset();
    Manifest m;
    Status s = readEngineManifest(engine, m);
    if (!s) return s;
    return Status::Error("this refiner_edge library was built without TensorRT (REFINER_EDGE_WITH_TENSORRT=OFF): "
                         "rebuild it against TensorRT to run " + engine);
}

Classifier::~Classifier() = default;
const Manifest& Classifier::manifest() const {
    static const Manifest none;
    return none;
}
int Classifier::maxBatch() const { return 0; }
int Classifier::minBatch() const { return 0; }
Status Classifier::infer(const float*, int, float*) { return Status::Error("built without TensorRT"); }
Status Classifier::classify(const std::vector<std::string>&, int, std::vector<ImageResult>&) {
    return Status::Error("built without TensorRT");
}

}  // namespace refiner_edge
