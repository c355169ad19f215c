// The harness's stand-in for libnvinfer (fake_nvinfer.cpp).
#pragma once

#include "NvInfer.h"
#include "NvInferRuntime.h"

//! The logger finder loadLibrary passes to setLoggerFinder, and the logger getLogger returns.
extern "C" void fakeNvinferSetLoggers(nvinfer1::ILoggerFinder* finder, nvinfer1::ILogger* global);
