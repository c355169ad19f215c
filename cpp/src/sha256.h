// SHA-256 (FIPS 180-4), for the engine and plugin hashes the manifest records. Internal to the library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace refiner_edge {

class Sha256 {
public:
    Sha256();
    void update(const uint8_t* data, size_t size);
    std::string hexdigest();  // finishes the hash

private:
    void block(const uint8_t* p);
    uint32_t h_[8];
    uint8_t buf_[64];
    size_t used_ = 0;
    uint64_t bytes_ = 0;
};

}  // namespace refiner_edge
