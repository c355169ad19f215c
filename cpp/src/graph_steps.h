// When the TensorRT classifier may replay a CUDA graph (runners/tensorrt.py's GraphSteps, step for step).
// Graphs are captured per batch size; after setInputShape changes the shape, TensorRT wants one plain enqueue
// before a graph captured for that shape is valid again. So a call whose batch differs from the last one's sets the
// shape and enqueues plainly (and captures, the first time for that size); only a repeat of the same batch replays.
// Header-only and TensorRT-free, so tests/test_engine_runtime.py compares it with the Python steps.
#pragma once

#include <set>

namespace refiner_edge {

struct GraphSteps {
    struct Actions {
        bool shape = false, plain = false, capture = false, replay = false;
    };

    Actions step(int batch) {
        Actions a;
        if (batch == shape_) {
            if (captured_.count(batch)) {
                a.replay = true;
            } else {
                a.plain = a.capture = true;
            }
            return a;
        }
        shape_ = batch;
        a.shape = a.plain = true;
        a.capture = captured_.count(batch) == 0;
        return a;
    }

    void capturedFor(int batch) { captured_.insert(batch); }
    // the shape was not set after all (TensorRT refused it or the profile switch): the next call sets it again
    void forgetShape() { shape_ = 0; }

private:
    int shape_ = 0;
    std::set<int> captured_;
};

}  // namespace refiner_edge
