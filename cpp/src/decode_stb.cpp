// stb_image decoder (Debian/Ubuntu: libstb-dev). JPEG (baseline, progressive, Adobe CMYK), PNG (all bit depths,
// palettes), BMP, GIF (first frame), PNM. Not TIFF or WebP: those are refused with a message naming the fix.
#include <algorithm>
#include <cstdio>

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_PNM
#define STBI_NO_LINEAR
#define STBI_FAILURE_USERMSG
#include <stb_image.h>

#include "decode.h"

namespace refiner_edge {
namespace {

// stb_image up to 2.27 (Debian 12's libstb-dev) writes past its Huffman tables when a JPEG's DHT segment declares
// more than 256 codes (fixed upstream in 2.28; found here by the fuzz loop under AddressSanitizer). Such a file is
// corrupt: walk every marker segment, between scans too (progressive JPEGs define tables there), and refuse it
// before stb_image sees it.
bool jpegTablesSane(const std::vector<uint8_t>& b) {
    const size_t n = b.size();
    if (n < 2 || b[0] != 0xFF || b[1] != 0xD8) return true;  // not a JPEG
    size_t i = 2;
    while (i + 1 < n) {
        if (b[i] != 0xFF) { ++i; continue; }                // entropy-coded data
        const uint8_t marker = b[i + 1];
        if (marker == 0x00 || marker == 0xFF || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01 ||
            marker == 0xD8) {
            i += marker == 0xFF ? 1 : 2;
            continue;
        }
        if (marker == 0xD9) return true;                      // end of image
        if (i + 4 > n) return true;                           // truncated: stb_image reports it
        const size_t len = size_t(b[i + 2]) << 8 | b[i + 3];
        if (len < 2) return false;
        const size_t end = std::min(n, i + 2 + len);
        if (marker == 0xC4) {
            size_t t = i + 4;
            while (t + 17 <= end) {
                size_t codes = 0;
                for (int k = 1; k <= 16; ++k) codes += b[t + k];
                if (codes > 256) return false;
                t += 17 + codes;
            }
        }
        i += 2 + len;
    }
    return true;
}

}  // namespace

const char* decoderName() { return "stb_image"; }

bool decodeImage(const std::vector<uint8_t>& bytes, Decoded& out, std::string& error) {
    if (bytes.size() > static_cast<size_t>(INT32_MAX)) {
        error = "file is too large to decode";
        return false;
    }
    if (!jpegTablesSane(bytes)) {
        error = "cannot decode image (corrupt JPEG: a Huffman table declares more than 256 codes)";
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
