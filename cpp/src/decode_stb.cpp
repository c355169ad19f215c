// stb_image decoder (Debian/Ubuntu: libstb-dev). JPEG (baseline, progressive, Adobe CMYK), PNG (all bit depths,
// palettes), BMP, GIF (first frame), PNM. Not TIFF or WebP: those are refused with a message naming the fix.
#include <cstdio>

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_HDR
#define STBI_NO_LINEAR
#define STBI_FAILURE_USERMSG
#include <stb_image.h>

#include "decode.h"

namespace refiner_edge {

const char* decoderName() { return "stb_image"; }

bool decodeImage(const std::vector<uint8_t>& bytes, Decoded& out, std::string& error) {
    if (bytes.size() > static_cast<size_t>(INT32_MAX)) {
        error = "file is too large to decode";
        return false;
    }
    const auto* data = bytes.data();
    const int size = static_cast<int>(bytes.size());
    int w = 0, h = 0, n = 0;
    if (!stbi_info_from_memory(data, size, &w, &h, &n)) {
        error = "not an image file (or a format stb_image cannot read: it reads JPEG, PNG, BMP, GIF and PNM; "
                "convert the image, or write its tensor with `refiner-edge preprocess`)";
        return false;
    }
    if (static_cast<long long>(w) * h > kMaxPixels) {
        char text[160];
        std::snprintf(text, sizeof text, "%dx%d pixels is over the 89,478,485 limit (possible decompression bomb)",
                      w, h);
        error = text;
        return false;
    }
    out = Decoded();
    if (stbi_is_16_bit_from_memory(data, size)) {
        stbi_us* pixels = stbi_load_16_from_memory(data, size, &w, &h, &n, 0);
        if (!pixels) {
            error = std::string("cannot decode image (") + stbi_failure_reason() + ")";
            return false;
        }
        out.data16.assign(pixels, pixels + static_cast<size_t>(w) * h * n);
        stbi_image_free(pixels);
        out.depth = 16;
    } else {
        stbi_uc* pixels = stbi_load_from_memory(data, size, &w, &h, &n, 0);
        if (!pixels) {
            error = std::string("cannot decode image (") + stbi_failure_reason() + ")";
            return false;
        }
        out.data8.assign(pixels, pixels + static_cast<size_t>(w) * h * n);
        stbi_image_free(pixels);
        out.depth = 8;
    }
    out.width = w;
    out.height = h;
    out.channels = n;
    return true;
}

}  // namespace refiner_edge
