// Shared between the TensorRT classifier and the build without TensorRT. Internal to the library.
#pragma once

#include "refiner_edge/refiner_edge.h"

namespace refiner_edge {

// Decode and preprocess `images` in groups of up to `max_batch`, call `run` on each group (padded with zero images
// up to `min_batch`), take the top k: the loop of refiner_edge/runners/classify.py.
template <class Run>
Status classifyImages(const Manifest& m, int min_batch, int max_batch, const std::vector<std::string>& images, int k,
                      std::vector<ImageResult>& results, Run&& run) {
    const int classes = m.model.num_classes;
    if (k < 1 || k > classes)
        return Status::Error("--topk must be between 1 and the model's " + std::to_string(classes) + " classes, got " +
                             std::to_string(k));
    const size_t per = size_t(3) * m.preprocess.img_size * m.preprocess.img_size;
    results.assign(images.size(), ImageResult());
    std::vector<float> batch, logits, one;
    std::vector<size_t> ok;
    size_t next = 0;
    while (next < images.size()) {
        batch.clear();
        ok.clear();
        for (; next < images.size() && ok.size() < size_t(max_batch); ++next) {
            results[next].image = images[next];
            Status s = loadInput(images[next], m.preprocess, one);
            if (!s) { results[next].error = s.message(); continue; }
            batch.insert(batch.end(), one.begin(), one.end());
            ok.push_back(next);
        }
        if (ok.empty()) continue;
        int n = static_cast<int>(ok.size());
        int run_n = std::max(n, min_batch);
        batch.resize(per * run_n, 0.0f);
        logits.assign(size_t(run_n) * classes, 0.0f);
        Status s = run(batch.data(), run_n, logits.data());
        if (!s) return s;
        auto preds = topK(logits.data(), n, classes, k);
        if (preds.size() != size_t(n)) return Status::Error("out of memory taking the top-k");
        for (int i = 0; i < n; ++i) results[ok[i]].predictions = std::move(preds[i]);
    }
    return Status::Ok();
}

}  // namespace refiner_edge
