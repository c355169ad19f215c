# Finds TensorRT's headers and libnvinfer for the plugin library (plugins/refiner_dla) and the C++ library (cpp/),
# one search for both. Reads TensorRT_ROOT (CMake or environment); sets TensorRT_INCLUDE_DIR, TensorRT_LIBRARY (may
# be absent: compiling needs the headers only) and TensorRT_FOUND. Callers say what to do when it is not found.
# x86-64: a TensorRT tar or deb (/usr/include/x86_64-linux-gnu); JetPack: /usr/include/aarch64-linux-gnu.
set(TensorRT_ROOT "$ENV{TensorRT_ROOT}" CACHE PATH "TensorRT installation (include/ and lib/)")
find_path(TensorRT_INCLUDE_DIR NvInferRuntime.h
  HINTS ${TensorRT_ROOT}
  PATHS /usr /usr/local/tensorrt /usr/local/TensorRT /opt/tensorrt
  PATH_SUFFIXES include include/aarch64-linux-gnu include/x86_64-linux-gnu)
find_library(TensorRT_LIBRARY nvinfer
  HINTS ${TensorRT_ROOT}
  PATHS /usr /usr/local/tensorrt /usr/local/TensorRT /opt/tensorrt
  PATH_SUFFIXES lib lib64 lib/aarch64-linux-gnu lib/x86_64-linux-gnu targets/x86_64-linux/lib)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TensorRT REQUIRED_VARS TensorRT_INCLUDE_DIR)
