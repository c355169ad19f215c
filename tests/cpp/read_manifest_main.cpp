// The C++ side of tests/test_one_img_size.py: the library's manifest reader (cpp/src/manifest.cpp) on its own,
// compiled with json.cpp only, so the test needs no CMake build.
//   read_manifest FILE    -> "ok SCHEMA MODEL_IMG_SIZE PREPROCESS_IMG_SIZE RESIZE_SIZE" (exit 0)
//                            or "error: <the refusal>" on stderr (exit 1); FILE is named "M" in messages
#include <fstream>
#include <iostream>
#include <sstream>

#include "refiner_edge/refiner_edge.h"

int main(int argc, char** argv) {
    using namespace refiner_edge;
    if (argc != 2) {
        std::cerr << "usage: read_manifest FILE\n";
        return 2;
    }
    std::ifstream in(argv[1], std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    Manifest m;
    Status s = parseManifest(text.str(), "M", m);
    if (!s) {
        std::cerr << "error: " << s.message() << "\n";
        return 1;
    }
    std::cout << "ok " << m.schema_version << " " << m.model.img_size << " " << m.preprocess.img_size << " "
              << m.preprocess.resize_size << "\n";
    return 0;
}
