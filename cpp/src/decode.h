// Image decoders behind one interface (OpenCV or stb_image). Internal to the library.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace refiner_edge {

// Pillow's decompression-bomb limit (refiner_edge/images/preprocess.py: MAX_PIXELS); larger images are refused.
constexpr long long kMaxPixels = 89478485;

// A decoded image as the file holds it: 1 (gray), 2 (gray + alpha), 3 or 4 (+ alpha) channels of 8 or 16 bits.
struct Decoded {
    int width = 0, height = 0, channels = 0, depth = 8;
    bool bgr = false;                 // OpenCV's channel order
    std::vector<uint8_t> data8;
    std::vector<uint16_t> data16;
};

// Decode `bytes` (the whole file). `error` is the message's tail after "<path>: ".
bool decodeImage(const std::vector<uint8_t>& bytes, Decoded& out, std::string& error);
const char* decoderName();

}  // namespace refiner_edge
