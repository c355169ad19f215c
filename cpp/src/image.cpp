// Decoding to upright 8-bit RGB, and the official evaluation transform, as refiner_edge/images/transform.py
// computes them with Pillow: the resampling below follows Pillow's two-pass fixed-point convolution (22-bit
// coefficients, rounding and clipping to 8 bits after each pass), so on the same decoded pixels the tensor is
// bit-identical. JPEG goes to libjpeg-turbo with Pillow's settings where it was found (decode_jpeg.cpp), and is
// then bit-identical too; stb_image and OpenCV's own JPEG paths differ (cpp/README.md has the measured bounds).
#include <cmath>
#include <cstring>
#include <fstream>
#include <sys/stat.h>

#include "decode.h"
#include "refiner_edge/refiner_edge.h"

namespace refiner_edge {
namespace {

constexpr long long kMaxFileBytes = 1LL << 30;  // 1 GiB: no image we accept is larger

uint32_t rd32(const uint8_t* p, bool le) {
    return le ? (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24)
              : (uint32_t(p[3]) | uint32_t(p[2]) << 8 | uint32_t(p[1]) << 16 | uint32_t(p[0]) << 24);
}
uint16_t rd16(const uint8_t* p, bool le) { return le ? uint16_t(p[0] | p[1] << 8) : uint16_t(p[1] | p[0] << 8); }

// The Orientation tag (0x0112) of IFD0 in a TIFF structure (EXIF payload), or 1.
int tiffOrientation(const uint8_t* p, size_t n) {
    if (n < 8) return 1;
    bool le;
    if (p[0] == 'I' && p[1] == 'I') le = true;
    else if (p[0] == 'M' && p[1] == 'M') le = false;
    else return 1;
    if (rd16(p + 2, le) != 42) return 1;
    uint32_t ifd = rd32(p + 4, le);
    if (ifd > n || n - ifd < 2) return 1;
    uint16_t count = rd16(p + ifd, le);
    for (uint32_t i = 0; i < count; ++i) {
        size_t at = size_t(ifd) + 2 + size_t(i) * 12;
        if (at + 12 > n) return 1;
        if (rd16(p + at, le) == 0x0112) {
            uint16_t type = rd16(p + at + 2, le);
            if (type == 3) return rd16(p + at + 8, le);                 // SHORT
            if (type == 4) return static_cast<int>(rd32(p + at + 8, le));  // LONG, seen in the wild
            return 1;
        }
    }
    return 1;
}

// EXIF orientation from the places Pillow reads it: a JPEG's first APP1 "Exif" segment, a PNG's eXIf chunk,
// a WebP's EXIF chunk, a TIFF's own IFD0.
int exifOrientation(const std::vector<uint8_t>& b) {
    const size_t n = b.size();
    const uint8_t* p = b.data();
    if (n >= 4 && p[0] == 0xFF && p[1] == 0xD8) {
        size_t i = 2;
        while (i + 4 <= n) {
            if (p[i] != 0xFF) return 1;
            uint8_t marker = p[i + 1];
            if (marker == 0xFF) { ++i; continue; }
            if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) { i += 2; continue; }
            if (marker == 0xDA || marker == 0xD9) return 1;  // scan data: no EXIF before it
            size_t len = size_t(p[i + 2]) << 8 | p[i + 3];
            if (len < 2 || i + 2 + len > n) return 1;
            if (marker == 0xE1 && len >= 8 && std::memcmp(p + i + 4, "Exif\0\0", 6) == 0)
                return tiffOrientation(p + i + 10, len - 8);
            i += 2 + len;
        }
        return 1;
    }
    if (n >= 8 && std::memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) {
        size_t i = 8;
        while (i + 12 <= n) {
            size_t len = rd32(p + i, false);
            if (len > n - i - 12) return 1;
            if (std::memcmp(p + i + 4, "eXIf", 4) == 0) {
                const uint8_t* d = p + i + 8;
                if (len >= 6 && std::memcmp(d, "Exif\0\0", 6) == 0) return tiffOrientation(d + 6, len - 6);
                return tiffOrientation(d, len);
            }
            if (std::memcmp(p + i + 4, "IEND", 4) == 0) return 1;
            i += 12 + len;
        }
        return 1;
    }
    if (n >= 12 && std::memcmp(p, "RIFF", 4) == 0 && std::memcmp(p + 8, "WEBP", 4) == 0) {
        size_t i = 12;
        while (i + 8 <= n) {
            size_t len = rd32(p + i + 4, true);
            if (len > n - i - 8) return 1;
            if (std::memcmp(p + i, "EXIF", 4) == 0) {
                const uint8_t* d = p + i + 8;
                if (len >= 6 && std::memcmp(d, "Exif\0\0", 6) == 0) return tiffOrientation(d + 6, len - 6);
                return tiffOrientation(d, len);
            }
            i += 8 + len + (len & 1);
        }
        return 1;
    }
    if (n >= 8 && (std::memcmp(p, "II*\0", 4) == 0 || std::memcmp(p, "MM\0*", 4) == 0)) return tiffOrientation(p, n);
    return 1;
}

// Decoded samples -> 8-bit RGB with Pillow's conversions: alpha dropped (not composited), gray replicated,
// 16-bit gray (mode I;16) as rint(v / 257), 16-bit colour (Pillow's RGB;16B) as its high byte.
void toRgb(const Decoded& d, Image& out) {
    const size_t pixels = size_t(d.width) * d.height;
    out.width = d.width;
    out.height = d.height;
    out.rgb.resize(pixels * 3);
    const int n = d.channels;
    for (size_t i = 0; i < pixels; ++i) {
        uint8_t v[4];
        for (int c = 0; c < n && c < 4; ++c) {
            if (d.depth == 8) v[c] = d.data8[i * n + c];
            else if (n == 1) v[c] = static_cast<uint8_t>((d.data16[i] + 128u) / 257u);
            else v[c] = static_cast<uint8_t>(d.data16[i * n + c] >> 8);
        }
        uint8_t* o = &out.rgb[i * 3];
        if (n <= 2) {
            o[0] = o[1] = o[2] = v[0];
        } else if (d.bgr) {
            o[0] = v[2]; o[1] = v[1]; o[2] = v[0];
        } else {
            o[0] = v[0]; o[1] = v[1]; o[2] = v[2];
        }
    }
}

// Pillow's Image.transpose methods, selected as ImageOps.exif_transpose selects them.
void orient(Image& img, int orientation) {
    if (orientation < 2 || orientation > 8) return;
    const int w = img.width, h = img.height;
    const bool swap = orientation >= 5;
    Image out;
    out.width = swap ? h : w;
    out.height = swap ? w : h;
    out.rgb.resize(img.rgb.size());
    for (int y = 0; y < out.height; ++y) {
        for (int x = 0; x < out.width; ++x) {
            int sx = x, sy = y;
            switch (orientation) {
                case 2: sx = w - 1 - x; sy = y; break;              // FLIP_LEFT_RIGHT
                case 3: sx = w - 1 - x; sy = h - 1 - y; break;      // ROTATE_180
                case 4: sx = x; sy = h - 1 - y; break;              // FLIP_TOP_BOTTOM
                case 5: sx = y; sy = x; break;                      // TRANSPOSE
                case 6: sx = y; sy = h - 1 - x; break;              // ROTATE_270 (clockwise 90)
                case 7: sx = w - 1 - y; sy = h - 1 - x; break;      // TRANSVERSE
                case 8: sx = w - 1 - y; sy = x; break;              // ROTATE_90 (counter-clockwise)
            }
            std::memcpy(&out.rgb[(size_t(y) * out.width + x) * 3], &img.rgb[(size_t(sy) * w + sx) * 3], 3);
        }
    }
    img = std::move(out);
}

Status readFile(const std::string& path, std::vector<uint8_t>& bytes, const char* what) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return Status::Error(std::string(what) + " not found: " + path);
    if (st.st_size > kMaxFileBytes) return Status::Error(path + ": file is over the 1 GiB limit");
    std::ifstream in(path, std::ios::binary);
    if (!in) return Status::Error(path + ": cannot open it");
    bytes.resize(static_cast<size_t>(st.st_size));
    in.read(reinterpret_cast<char*>(bytes.data()), st.st_size);
    if (in.gcount() != st.st_size) return Status::Error(path + ": cannot read it");
    return Status::Ok();
}

// ---- resampling: Pillow's filters and its two-pass fixed-point convolution (libImaging/Resample.c)

constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic(double x) {
    const double a = -0.5;
    x = std::fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}
double bilinear(double x) {
    x = std::fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

struct Coefficients {
    int ksize = 0;
    std::vector<int> bounds;     // per output sample: first input sample, count
    std::vector<int32_t> k;      // fixed point, ksize per output sample
};

Coefficients coefficients(int in_size, int out_size, bool cubic) {
    const double support_base = cubic ? 2.0 : 1.0;
    double scale = double(float(in_size) - 0.0f) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = support_base * filterscale;
    Coefficients c;
    c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
    c.bounds.resize(size_t(out_size) * 2);
    c.k.assign(size_t(out_size) * c.ksize, 0);
    std::vector<double> w(c.ksize);
    for (int xx = 0; xx < out_size; ++xx) {
        double center = (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = static_cast<int>(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = static_cast<int>(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; ++x) {
            double v = cubic ? bicubic((x + xmin - center + 0.5) * ss) : bilinear((x + xmin - center + 0.5) * ss);
            w[x] = v;
            ww += v;
        }
        for (int x = 0; x < xmax; ++x) {
            double v = ww != 0.0 ? w[x] / ww : w[x];
            c.k[size_t(xx) * c.ksize + x] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                                                  : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
        }
        c.bounds[xx * 2] = xmin;
        c.bounds[xx * 2 + 1] = xmax;
    }
    return c;
}

inline uint8_t clip8(int32_t v) {
    int32_t s = v >> kPrecisionBits;
    return static_cast<uint8_t>(s < 0 ? 0 : (s > 255 ? 255 : s));
}

Image resizeConvolution(const Image& in, int out_w, int out_h, bool cubic) {
    Image cur = in;
    Coefficients vert = coefficients(in.height, out_h, cubic);
    const bool need_h = out_w != in.width, need_v = out_h != in.height;
    if (need_h) {
        // Only the rows the vertical pass reads are resampled horizontally, as in Pillow.
        const int first = vert.bounds[0];
        const int last = vert.bounds[size_t(out_h) * 2 - 2] + vert.bounds[size_t(out_h) * 2 - 1];
        Coefficients hor = coefficients(in.width, out_w, cubic);
        Image tmp;
        tmp.width = out_w;
        tmp.height = last - first;
        tmp.rgb.resize(size_t(tmp.width) * tmp.height * 3);
        for (int yy = 0; yy < tmp.height; ++yy) {
            const uint8_t* row = &in.rgb[size_t(yy + first) * in.width * 3];
            for (int xx = 0; xx < out_w; ++xx) {
                const int xmin = hor.bounds[xx * 2], xmax = hor.bounds[xx * 2 + 1];
                const int32_t* k = &hor.k[size_t(xx) * hor.ksize];
                int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
                for (int x = 0; x < xmax; ++x) {
                    const uint8_t* p = row + size_t(x + xmin) * 3;
                    s0 += p[0] * k[x];
                    s1 += p[1] * k[x];
                    s2 += p[2] * k[x];
                }
                uint8_t* o = &tmp.rgb[(size_t(yy) * out_w + xx) * 3];
                o[0] = clip8(s0); o[1] = clip8(s1); o[2] = clip8(s2);
            }
        }
        for (int i = 0; i < out_h; ++i) vert.bounds[size_t(i) * 2] -= first;
        cur = std::move(tmp);
    }
    if (!need_v) return cur;
    Image out;
    out.width = cur.width;
    out.height = out_h;
    out.rgb.resize(size_t(out.width) * out_h * 3);
    for (int yy = 0; yy < out_h; ++yy) {
        const int ymin = vert.bounds[yy * 2], ymax = vert.bounds[yy * 2 + 1];
        const int32_t* k = &vert.k[size_t(yy) * vert.ksize];
        for (int xx = 0; xx < out.width; ++xx) {
            int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
            for (int y = 0; y < ymax; ++y) {
                const uint8_t* p = &cur.rgb[(size_t(y + ymin) * cur.width + xx) * 3];
                s0 += p[0] * k[y];
                s1 += p[1] * k[y];
                s2 += p[2] * k[y];
            }
            uint8_t* o = &out.rgb[(size_t(yy) * out.width + xx) * 3];
            o[0] = clip8(s0); o[1] = clip8(s1); o[2] = clip8(s2);
        }
    }
    return out;
}

// Pillow's NEAREST resize: an affine scale that steps the source coordinate by accumulation (ImagingScaleAffine).
Image resizeNearest(const Image& in, int out_w, int out_h) {
    const double ax = double(float(in.width)) / out_w, ay = double(float(in.height)) / out_h;
    std::vector<int> xs(out_w, -1);
    double xo = ax * 0.5;
    for (int x = 0; x < out_w; ++x, xo += ax) {
        int xi = xo < 0.0 ? -1 : static_cast<int>(xo);
        xs[x] = xi < in.width ? xi : -1;
    }
    Image out;
    out.width = out_w;
    out.height = out_h;
    out.rgb.assign(size_t(out_w) * out_h * 3, 0);
    double yo = ay * 0.5;
    for (int y = 0; y < out_h; ++y, yo += ay) {
        int yi = yo < 0.0 ? -1 : static_cast<int>(yo);
        if (yi < 0 || yi >= in.height) continue;
        for (int x = 0; x < out_w; ++x)
            if (xs[x] >= 0)
                std::memcpy(&out.rgb[(size_t(y) * out_w + x) * 3], &in.rgb[(size_t(yi) * in.width + xs[x]) * 3], 3);
    }
    return out;
}

const char kTensorMagic[8] = {'R', 'F', 'E', 'T', 'N', 'S', 'R', '1'};

}  // namespace

const char* imageDecoder() {
#ifdef REFINER_EDGE_HAVE_LIBJPEG_TURBO
    static const std::string name = std::string(jpegDecoderName()) + " + " + decoderName();
    return name.c_str();
#else
    return decoderName();
#endif
}

Status loadImage(const std::string& path, Image& out) {
    try {
        std::vector<uint8_t> bytes;
        Status s = readFile(path, bytes, "image");
        if (!s) return s;
        Decoded d;
        std::string error;
        GifFrame gif;
        bool decoded;
#ifdef REFINER_EDGE_HAVE_LIBJPEG_TURBO
        if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
            decoded = decodeJpeg(bytes, d, error);
        else
#endif
        if (parseGif(bytes, gif) && gif.transparent) {
            std::vector<uint8_t> opaque = bytes;
            for (size_t at : gif.transparency_flags) opaque[at] &= 0xFE;
            decoded = decodeImage(opaque, d, error);
        } else {
            decoded = decodeImage(bytes, d, error);
        }
        if (!decoded) return Status::Error(path + ": " + error);
        if (d.width < 1 || d.height < 1 || d.channels < 1 || d.channels > 4)
            return Status::Error(path + ": cannot decode image (no pixels)");
        Image img;
        toRgb(d, img);
        paintOutsideFrame(gif, img);
        orient(img, exifOrientation(bytes));
        out = std::move(img);
        return Status::Ok();
    } catch (const std::bad_alloc&) {
        return Status::Error(path + ": cannot decode image (out of memory)");
    } catch (const std::exception& e) {
        return Status::Error(path + ": cannot decode image (" + e.what() + ")");
    }
}

Status preprocess(const Image& image, const Preprocessing& p, float* out) {
    try {
        if (p.interpolation != "bicubic" && p.interpolation != "bilinear" && p.interpolation != "nearest")
            return Status::Error("unknown interpolation '" + p.interpolation + "'; use one of bicubic, bilinear, nearest");
        if (image.width < 1 || image.height < 1 || image.rgb.size() != size_t(image.width) * image.height * 3)
            return Status::Error("the image has no pixels");
        if (p.img_size < 1 || p.resize_size < 1) return Status::Error("preprocessing sizes must be positive");
        const int w = image.width, h = image.height, size = p.resize_size;
        // Python: int(size * h / w), a float division truncated; both products are exact in a double.
        long long nw, nh;
        if (w <= h) { nw = size; nh = static_cast<long long>(double(size) * h / w); }
        else { nw = static_cast<long long>(double(size) * w / h); nh = size; }
        if (nw < 1 || nh < 1 || nw * nh > 4 * kMaxPixels)
            return Status::Error("the image's aspect ratio (" + std::to_string(w) + "x" + std::to_string(h) +
                                 ") cannot be resized to a short side of " + std::to_string(size));
        Image resized;
        if (nw == w && nh == h) resized = image;
        else if (p.interpolation == "nearest") resized = resizeNearest(image, int(nw), int(nh));
        else resized = resizeConvolution(image, int(nw), int(nh), p.interpolation == "bicubic");
        const int s = p.img_size;
        // round() in Python 3 rounds half to even, as nearbyint does in the default rounding mode.
        const long long top = static_cast<long long>(std::nearbyint((nh - s) / 2.0));
        const long long left = static_cast<long long>(std::nearbyint((nw - s) / 2.0));
        for (int c = 0; c < 3; ++c) {
            const float mean = p.mean[c], stdv = p.std[c];
            float* plane = out + size_t(c) * s * s;
            for (int y = 0; y < s; ++y) {
                const long long sy = top + y;
                for (int x = 0; x < s; ++x) {
                    const long long sx = left + x;
                    // Pillow's crop fills outside the image with black (crop_pct > 1 makes the resize smaller
                    // than the crop).
                    uint8_t v = 0;
                    if (sy >= 0 && sy < nh && sx >= 0 && sx < nw) v = resized.rgb[(size_t(sy) * nw + size_t(sx)) * 3 + c];
                    const float scaled = static_cast<float>(v) / 255.0f;
                    plane[size_t(y) * s + x] = (scaled - mean) / stdv;
                }
            }
        }
        return Status::Ok();
    } catch (const std::bad_alloc&) {
        return Status::Error("preprocessing ran out of memory");
    } catch (const std::exception& e) {
        return Status::Error(std::string("preprocessing failed: ") + e.what());
    }
}

Status readTensorFile(const std::string& path, std::vector<uint32_t>& dims, std::vector<float>& values) {
    try {
        std::vector<uint8_t> b;
        Status s = readFile(path, b, "tensor file");
        if (!s) return s;
        if (b.size() < 16 || std::memcmp(b.data(), kTensorMagic, 8) != 0)
            return Status::Error(path + ": not a refiner-edge tensor file (no RFETNSR1 header)");
        const uint32_t dtype = rd32(&b[8], true), ndim = rd32(&b[12], true);
        if (dtype != 0) return Status::Error(path + ": tensor dtype " + std::to_string(dtype) + " is not float32 (0)");
        if (ndim < 1 || ndim > 4) return Status::Error(path + ": tensor has " + std::to_string(ndim) + " dimensions");
        if (b.size() < 16 + size_t(ndim) * 4) return Status::Error(path + ": truncated tensor header");
        dims.clear();
        uint64_t count = 1;
        for (uint32_t i = 0; i < ndim; ++i) {
            dims.push_back(rd32(&b[16 + i * 4], true));
            count *= dims.back();
            if (count > (1ULL << 32)) return Status::Error(path + ": tensor is too large");
        }
        const size_t offset = 16 + size_t(ndim) * 4;
        if (b.size() - offset != count * 4)
            return Status::Error(path + ": tensor data is " + std::to_string(b.size() - offset) + " bytes, expected " +
                                 std::to_string(count * 4) + " (truncated or corrupt)");
        values.resize(count);
        for (size_t i = 0; i < count; ++i) {
            uint32_t bits = rd32(&b[offset + i * 4], true);
            std::memcpy(&values[i], &bits, 4);
        }
        return Status::Ok();
    } catch (const std::bad_alloc&) {
        return Status::Error(path + ": tensor file is too large for memory");
    }
}

Status writeTensorFile(const std::string& path, const std::vector<uint32_t>& dims, const float* values) try {
    std::vector<uint8_t> b(kTensorMagic, kTensorMagic + 8);
    auto put = [&](uint32_t v) { for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (8 * i))); };
    put(0);
    put(static_cast<uint32_t>(dims.size()));
    size_t count = 1;
    for (uint32_t d : dims) { put(d); count *= d; }
    for (size_t i = 0; i < count; ++i) {
        uint32_t bits;
        std::memcpy(&bits, &values[i], 4);
        put(bits);
    }
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    if (!out) return Status::Error("cannot write " + path);
    return Status::Ok();
} catch (const std::exception& e) {
    return Status::Error("cannot write " + path + " (" + e.what() + ")");
}

Status loadInput(const std::string& path, const Preprocessing& params, std::vector<float>& out) {
    try {
        char head[8] = {};
        {
            std::ifstream in(path, std::ios::binary);
            if (in) in.read(head, 8);
        }
        const size_t n = size_t(params.img_size) * params.img_size * 3;
        if (std::memcmp(head, kTensorMagic, 8) == 0) {
            std::vector<uint32_t> dims;
            std::vector<float> values;
            Status s = readTensorFile(path, dims, values);
            if (!s) return s;
            const uint32_t S = static_cast<uint32_t>(params.img_size);
            const bool ok = (dims.size() == 3 && dims[0] == 3 && dims[1] == S && dims[2] == S) ||
                            (dims.size() == 4 && dims[0] == 1 && dims[1] == 3 && dims[2] == S && dims[3] == S);
            if (!ok)
                return Status::Error(path + ": tensor shape does not match the model's input [3, " +
                                     std::to_string(S) + ", " + std::to_string(S) + "]");
            out = std::move(values);
            return Status::Ok();
        }
        Image img;
        Status s = loadImage(path, img);
        if (!s) return s;
        out.resize(n);
        return preprocess(img, params, out.data());
    } catch (const std::bad_alloc&) {
        return Status::Error(path + ": out of memory");
    }
}

}  // namespace refiner_edge
