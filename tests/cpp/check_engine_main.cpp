// The C++ side of tests/test_compat.py: the library's engine checks (cpp/src/checks.cpp) on their own, compiled
// from checks.cpp, manifest.cpp, json.cpp and sha256.cpp only, so the test needs no CMake build and no image code.
//   check_engine ENGINE FLAVOUR VERSION CC GPU    (CC "none": no GPU)
// Prints "ok" (exit 0) or "error: <the refusal>" on stderr (exit 1), as refiner_edge_probe check-engine does.
#include <iostream>

#include "refiner_edge/refiner_edge.h"

int main(int argc, char** argv) {
    using namespace refiner_edge;
    if (argc != 6) {
        std::cerr << "usage: check_engine ENGINE FLAVOUR VERSION CC GPU\n";
        return 2;
    }
    Manifest m;
    Status s = readEngineManifest(argv[1], m);
    Runtime r;
    r.flavour = argv[2];
    r.version = argv[3];
    if (std::string(argv[4]) != "none") r.compute_capability = argv[4];
    r.gpu = argv[5];
    if (s) s = checkEngine(argv[1], m, r);
    if (!s) {
        std::cerr << "error: " << s.message() << "\n";
        return 1;
    }
    std::cout << "ok\n";
    return 0;
}
