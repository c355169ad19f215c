// JPEG through libjpeg-turbo with the settings Pillow's decoder uses (src/libImaging/JpegDecode.c and
// JpegImagePlugin.py in Pillow): the library's defaults for the IDCT (JDCT_ISLOW), fancy upsampling and block
// smoothing, its own colour-space guess, out_color_space GRAYSCALE / RGB / CMYK by the number of components, and
// 4-component images read as inverted ("CMYK;I", Adobe's convention) and turned into RGB by Pillow's formula. The
// decoders inside Pillow and Debian/Ubuntu (libjpeg62-turbo) are the same code; tests/test_cpp.py compares them.
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>

#include <jpeglib.h>
#include <jerror.h>

#include "decode.h"

#define REFINER_EDGE_STR2(x) #x
#define REFINER_EDGE_STR(x) REFINER_EDGE_STR2(x)

namespace refiner_edge {
namespace {

struct ErrorManager {
    jpeg_error_mgr pub;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX] = {};
    bool ran_out = false;   // the data ended before the image did (libjpeg's JWRN_JPEG_EOF)
};

void onError(j_common_ptr cinfo) {
    auto* e = reinterpret_cast<ErrorManager*>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, e->message);
    std::longjmp(e->jump, 1);
}

// Warnings (corrupt entropy data, extraneous bytes) are ignored, as Pillow ignores them; running out of data is
// remembered: Pillow refuses a file that ends before its last scanline ("image file is truncated").
void onMessage(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) reinterpret_cast<ErrorManager*>(cinfo->err)->ran_out = true;
}

// Pillow's cmyk2rgb (libImaging/Convert.c) on CMYK that was inverted when read: 255 - k - c * (255 - k) / 255,
// with its MULDIV255 rounding.
inline uint8_t cmykChannel(int c, int nk) {
    const int t = c * nk + 128;
    const int v = nk - (((t >> 8) + t) >> 8);
    return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Everything that calls setjmp lives in this function, with no C++ object whose destructor a longjmp would skip.
bool decode(const std::vector<uint8_t>& bytes, jpeg_decompress_struct& cinfo, ErrorManager& err, Decoded& out,
            std::string& error) {
    if (setjmp(err.jump)) {
        error = std::string("cannot decode image (") + err.message + ")";
        return false;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
    jpeg_read_header(&cinfo, TRUE);
    const int layers = cinfo.num_components;
    if (cinfo.data_precision != 8) {
        error = "cannot decode image (cannot handle " + std::to_string(cinfo.data_precision) + "-bit layers)";
        return false;
    }
    if (layers != 1 && layers != 3 && layers != 4) {
        error = "cannot decode image (cannot handle " + std::to_string(layers) + "-layer images)";
        return false;
    }
    if (static_cast<long long>(cinfo.image_width) * cinfo.image_height > kMaxPixels) {
        char text[160];
        std::snprintf(text, sizeof text, "%ux%u pixels is over the 89,478,485 limit (possible decompression bomb)",
                      cinfo.image_width, cinfo.image_height);
        error = text;
        return false;
    }
    cinfo.out_color_space = layers == 1 ? JCS_GRAYSCALE : (layers == 3 ? JCS_RGB : JCS_CMYK);
    cinfo.dct_method = JDCT_ISLOW;        // libjpeg's default, which Pillow keeps (it changes it only in draft mode)
    cinfo.do_fancy_upsampling = TRUE;     // likewise
    jpeg_start_decompress(&cinfo);
    const size_t w = cinfo.output_width, h = cinfo.output_height, n = cinfo.output_components;
    out = Decoded();
    out.width = static_cast<int>(w);
    out.height = static_cast<int>(h);
    out.channels = layers == 1 ? 1 : 3;
    out.data8.resize(w * h * out.channels);
    // libjpeg's own pool holds the row: a longjmp out of jpeg_read_scanlines skips no C++ destructor
    JSAMPARRAY rows = (*cinfo.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&cinfo), JPOOL_IMAGE,
                                                 static_cast<JDIMENSION>(w * n), 1);
    const uint8_t* row = rows[0];
    for (size_t y = 0; y < h; ++y) {
        jpeg_read_scanlines(&cinfo, rows, 1);
        if (err.ran_out) {
            error = "cannot decode image (image file is truncated)";
            return false;
        }
        uint8_t* o = &out.data8[y * w * out.channels];
        if (n != 4) {
            std::memcpy(o, row, w * n);
            continue;
        }
        for (size_t x = 0; x < w; ++x) {
            const uint8_t* p = &row[x * 4];
            const int nk = p[3];   // 255 - (255 - K): the inversion and cmyk2rgb's 255 - K cancel
            for (int c = 0; c < 3; ++c) o[x * 3 + c] = cmykChannel(255 - p[c], nk);
        }
    }
    // A file cut anywhere, even just before its end marker, has run out of data while the rows above were read
    // (every cut file tried: 4:4:4, 4:2:2, 4:2:0) and was refused there, as Pillow refuses it (tests/test_cpp.py:
    // no_end.jpg).
    jpeg_finish_decompress(&cinfo);
    return true;
}

}  // namespace

const char* jpegDecoderName() { return "libjpeg-turbo " REFINER_EDGE_STR(LIBJPEG_TURBO_VERSION); }

bool decodeJpeg(const std::vector<uint8_t>& bytes, Decoded& out, std::string& error) {
    jpeg_decompress_struct cinfo{};
    ErrorManager err{};
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = onError;
    err.pub.emit_message = onMessage;
    const bool ok = decode(bytes, cinfo, err, out, error);
    jpeg_destroy_decompress(&cinfo);
    return ok;
}

}  // namespace refiner_edge
