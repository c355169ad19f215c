// No image decoder in this build: only raw tensor files from `refiner-edge preprocess` are read.
#include "decode.h"

namespace refiner_edge {

const char* decoderName() { return "none"; }

bool decodeImage(const std::vector<uint8_t>&, Decoded&, std::string& error) {
    error = "this build of refiner_edge has no image decoder (neither OpenCV nor stb_image was found): write the "
            "image's tensor with `refiner-edge preprocess` and pass that file";
    return false;
}

}  // namespace refiner_edge
