// The C++ side of tests/test_engine_runtime.py's CUDA-graph steps: prints the actions cpp/src/graph_steps.h takes
// for each batch size given, one line each ("shape plain capture", "replay", ...).
#include <cstdlib>
#include <iostream>
#include <string>

#include "graph_steps.h"

int main(int argc, char** argv) {
    refiner_edge::GraphSteps steps;
    for (int i = 1; i < argc; ++i) {
        const int batch = std::atoi(argv[i]);
        const auto a = steps.step(batch);
        std::string line;
        for (auto [on, word] : {std::pair{a.shape, "shape"}, {a.plain, "plain"}, {a.capture, "capture"},
                                {a.replay, "replay"}})
            if (on) line += std::string(line.empty() ? "" : " ") + word;
        if (a.capture) steps.capturedFor(batch);
        std::cout << line << "\n";
    }
    return 0;
}
