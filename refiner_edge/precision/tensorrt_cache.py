"""TensorRT 10 weak typing (JetPack 6, DLA): a calibration cache written from the ranges `calibrate` measured,
and the IInt8Calibrator that hands it to the builder, so no calibration runs on the device.

The cache is TensorRT's text format: a header `TRT-<version>-EntropyCalibration2`, then one `tensor: scale` line
per tensor, the scale (amax / 127) as the big-endian bits of a float32 in hex. The tensor names are those of the
plain FP32 ONNX graph, which is the graph a weakly typed INT8 build parses. TensorRT ignores a cache whose header
names another TensorRT version, so the calibrator below rewrites the header for the TensorRT that reads it.
"""
from __future__ import annotations

import struct
from pathlib import Path

from ..defaults import TENSORRT_CACHE_VERSION

from ..artifacts import atomic_output
from ..errors import InputError

ALGORITHM = "EntropyCalibration2"   # the calibrator interface that reads the cache, not how the ranges were found
DEFAULT_VERSION = TENSORRT_CACHE_VERSION


def check_version(version: str) -> str:
    """A TensorRT version as MAJOR.MINOR[.PATCH[.BUILD]] with MAJOR 8 or later, or InputError: checked before
    calibration runs, not when the cache is written at its end."""
    parts = version.split(".") if isinstance(version, str) else []
    if not 2 <= len(parts) <= 4 or not all(p.isascii() and p.isdigit() for p in parts) or int(parts[0]) < 8:
        raise InputError(f"--tensorrt-version must be a TensorRT version such as {DEFAULT_VERSION} "
                         f"(MAJOR.MINOR[.PATCH], 8 or later), got '{version}'")
    return version


def version_tag(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION: major * 10000 + minor * 100 + patch for TensorRT 10 and later."""
    parts = [int(p) for p in version.split(".")[:3] if p.isdigit()] + [0, 0]
    major, minor, patch = parts[:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def cache_text(amax: dict[str, float], version: str = DEFAULT_VERSION) -> str:
    lines = [f"TRT-{version_tag(version)}-{ALGORITHM}"]
    for name, a in amax.items():
        scale = max(float(a), 1e-12) / 127.0
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"


def write_cache(path: str | Path, amax: dict[str, float], version: str = DEFAULT_VERSION) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(cache_text(amax, version), encoding="ascii")
    return Path(path)


def read_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """(header, {tensor: scale}) of a TensorRT calibration cache."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable TensorRT calibration cache ({e})") from None
    if not lines or not lines[0].startswith("TRT-"):
        raise InputError(f"{path}: not a TensorRT calibration cache (no TRT-<version>-<algorithm> header)")
    scales = {}
    for n, line in enumerate(lines[1:], 2):
        name, sep, value = line.rpartition(": ")
        try:
            if not sep:
                raise ValueError
            scales[name] = struct.unpack(">f", bytes.fromhex(value))[0]
        except (ValueError, struct.error):
            raise InputError(f"{path}:{n}: expected 'tensor: 8 hex digits', got {line[:80]!r}") from None
    return lines[0], scales


def for_tensorrt(path: str | Path, version: str) -> bytes:
    """The cache at `path` with its header rewritten for TensorRT `version`."""
    read_cache(path)  # refuse anything that is not a cache
    body = Path(path).read_text(encoding="ascii").split("\n", 1)[1]
    return f"TRT-{version_tag(version)}-{ALGORITHM}\n{body}".encode("ascii")


def cache_calibrator(trt, path: str | Path):
    """An IInt8EntropyCalibrator2 for `trt` (the tensorrt module) that only reads the cache at `path`.

    Use it on a weakly typed network: config.set_flag(trt.BuilderFlag.INT8); config.int8_calibrator = it.
    """
    data = for_tensorrt(path, trt.__version__)

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):  # never asked while the cache covers the network; no data to give
            return None

        def read_calibration_cache(self) -> bytes:
            return data

        def write_calibration_cache(self, cache) -> None:
            pass

    return CacheCalibrator()
