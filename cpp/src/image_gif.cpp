// A GIF's first frame as Pillow composes it (GifImagePlugin.py), whatever decoder reads the pixels. Pillow keeps
// the frame as palette indices: a transparent pixel keeps its palette colour when refiner_edge's to_rgb goes
// P -> RGBA -> RGB, and the canvas outside the frame is the transparent index (else index 0). Decoders that
// compose to RGBA (stb_image) turn transparent pixels into (0, 0, 0, 0) and paint the outside with the
// background colour instead. So the decoder reads a copy whose Graphic Control Extension has its transparency
// flag cleared (every pixel then comes out in its palette colour), and the outside is painted here.
#include <cstring>

#include "decode.h"

namespace refiner_edge {
namespace {

int le16(const uint8_t* p) { return p[0] | p[1] << 8; }

}  // namespace

bool parseGif(const std::vector<uint8_t>& b, GifFrame& f) {
    const size_t n = b.size();
    if (n < 13 || (std::memcmp(b.data(), "GIF87a", 6) != 0 && std::memcmp(b.data(), "GIF89a", 6) != 0)) return false;
    f = GifFrame();
    f.canvas_width = le16(&b[6]);
    f.canvas_height = le16(&b[8]);
    size_t i = 13;
    const uint8_t* global = nullptr;
    size_t global_entries = 0;
    if (b[10] & 0x80) {
        global_entries = size_t(2) << (b[10] & 7);
        if (i + 3 * global_entries > n) return true;   // truncated: the decoder reports it
        global = &b[i];
        i += 3 * global_entries;
    }
    while (i < n) {
        if (b[i] == 0x21 && i + 2 < n) {                 // extension: label, then sub-blocks
            const uint8_t label = b[i + 1];
            i += 2;
            bool first = true;
            while (i < n && b[i] != 0) {
                const size_t len = b[i];
                if (i + 1 + len > n) return true;
                if (label == 0xF9 && first && len >= 4 && (b[i + 1] & 1)) {   // Graphic Control Extension
                    f.transparent = true;               // as in Pillow, a later one without the flag keeps it
                    f.transparent_index = b[i + 4];
                    f.transparency_flags.push_back(i + 1);
                }
                first = false;
                i += 1 + len;
            }
            ++i;
        } else if (b[i] == 0x2C && i + 10 <= n) {        // the first image descriptor
            f.x = le16(&b[i + 1]);
            f.y = le16(&b[i + 3]);
            f.width = le16(&b[i + 5]);
            f.height = le16(&b[i + 7]);
            const uint8_t* table = global;
            size_t entries = global_entries;
            if (b[i + 9] & 0x80) {
                entries = size_t(2) << (b[i + 9] & 7);
                table = i + 10 + 3 * entries <= n ? &b[i + 10] : nullptr;
            }
            // Pillow's palette starts as a grey ramp and the file's table overwrites its first entries
            for (int k = 0; k < 256; ++k)
                for (int c = 0; c < 3; ++c)
                    f.palette[k * 3 + c] = table && size_t(k) < entries ? table[k * 3 + c] : uint8_t(k);
            f.found = true;
            return true;
        } else {
            return true;                                  // trailer or garbage: the decoder decides
        }
    }
    return true;
}

void paintOutsideFrame(const GifFrame& f, Image& img) {
    if (!f.found || img.width != f.canvas_width || img.height != f.canvas_height) return;
    const uint8_t* colour = &f.palette[(f.transparent ? f.transparent_index : 0) * 3];
    for (int y = 0; y < img.height; ++y) {
        const bool row_inside = y >= f.y && y < f.y + f.height;
        for (int x = 0; x < img.width; ++x) {
            if (row_inside && x >= f.x && x < f.x + f.width) continue;
            std::memcpy(&img.rgb[(size_t(y) * img.width + x) * 3], colour, 3);
        }
    }
}

}  // namespace refiner_edge
