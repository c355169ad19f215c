// Image decoders behind one interface (OpenCV or stb_image), and JPEG through libjpeg-turbo where it was found
// (REFINER_EDGE_HAVE_LIBJPEG_TURBO). Internal to the library.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "refiner_edge/refiner_edge.h"

namespace refiner_edge {

// Pillow's decompression-bomb limit (refiner_edge/images/transform.py: MAX_PIXELS); larger images are refused.
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

#ifdef REFINER_EDGE_HAVE_LIBJPEG_TURBO
// A JPEG decoded as Pillow decodes it: 1 (gray) or 3 (RGB, CMYK converted as Pillow converts it) 8-bit channels.
bool decodeJpeg(const std::vector<uint8_t>& bytes, Decoded& out, std::string& error);
const char* jpegDecoderName();   // "libjpeg-turbo 2.1.5": the version of the headers it was compiled against
#endif

// The first frame of a GIF as Pillow composes it (image_gif.cpp).
struct GifFrame {
    bool found = false;                   // an image descriptor was read
    int canvas_width = 0, canvas_height = 0, x = 0, y = 0, width = 0, height = 0;
    bool transparent = false;
    int transparent_index = 0;
    std::vector<size_t> transparency_flags;   // offsets of the flag bytes to clear before decoding
    uint8_t palette[256 * 3] = {};        // the frame's palette as Pillow holds it
};
// False when `bytes` is not a GIF.
bool parseGif(const std::vector<uint8_t>& bytes, GifFrame& frame);
// Paint the canvas outside the first frame as Pillow does (its transparent index, else index 0).
void paintOutsideFrame(const GifFrame& frame, Image& img);

}  // namespace refiner_edge
