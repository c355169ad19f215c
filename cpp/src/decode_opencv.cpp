// OpenCV decoder: every format the OpenCV build reads. IMREAD_UNCHANGED keeps 16-bit samples and alpha and skips
// OpenCV's own EXIF rotation: the library converts and orients the pixels itself, exactly as Pillow does.
#include <opencv2/imgcodecs.hpp>

#include "decode.h"

namespace refiner_edge {

const char* decoderName() { return "opencv"; }

bool decodeImage(const std::vector<uint8_t>& bytes, Decoded& out, std::string& error) {
    cv::Mat img;
    try {
        cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<uint8_t*>(bytes.data()));
        img = cv::imdecode(buffer, cv::IMREAD_UNCHANGED);
    } catch (const cv::Exception& e) {
        error = std::string("cannot decode image (") + e.what() + ")";
        return false;
    }
    if (img.empty()) {
        error = "not an image file (or a format this OpenCV build cannot read)";
        return false;
    }
    if (static_cast<long long>(img.cols) * img.rows > kMaxPixels) {
        error = std::to_string(img.cols) + "x" + std::to_string(img.rows) +
                " pixels is over the 89,478,485 limit (possible decompression bomb)";
        return false;
    }
    if (img.depth() != CV_8U && img.depth() != CV_16U) {
        error = "cannot decode image (samples that are neither 8- nor 16-bit integers)";
        return false;
    }
    out = Decoded();
    out.width = img.cols;
    out.height = img.rows;
    out.channels = img.channels();
    out.bgr = out.channels >= 3;
    out.depth = img.depth() == CV_8U ? 8 : 16;
    if (out.channels < 1 || out.channels > 4) {
        error = "cannot decode image (" + std::to_string(out.channels) + " channels)";
        return false;
    }
    cv::Mat packed = img.isContinuous() ? img : img.clone();
    const size_t count = static_cast<size_t>(img.cols) * img.rows * out.channels;
    if (out.depth == 8) out.data8.assign(packed.ptr<uint8_t>(), packed.ptr<uint8_t>() + count);
    else out.data16.assign(packed.ptr<uint16_t>(), packed.ptr<uint16_t>() + count);
    return true;
}

}  // namespace refiner_edge
