"""The input-tensor file C++ reads (cpp/include/refiner_edge/refiner_edge.h; `refiner-edge preprocess` writes it):
"RFETNSR1", all little-endian:
  8 bytes  magic b"RFETNSR1"
  uint32   dtype (0 = float32)
  uint32   ndim (3 for an image: [3, S, S])
  ndim x uint32  dims
  the float32 values, C order (CHW, RGB, normalised as the manifest's `preprocess` says)
"""
from __future__ import annotations

import struct
from pathlib import Path

from ..errors import InputError

TENSOR_MAGIC = b"RFETNSR1"
TENSOR_SUFFIX = ".rfet"
FLOAT32 = 0


def write_tensor(path: str | Path, array) -> Path:
    """Write a float32 array as a tensor file (atomically)."""
    import numpy as np

    from ..artifacts import atomic_output

    arr = np.ascontiguousarray(array, dtype="<f4")
    header = TENSOR_MAGIC + struct.pack(f"<II{arr.ndim}I", FLOAT32, arr.ndim, *arr.shape)
    with atomic_output(path) as tmp:
        tmp.write_bytes(header + arr.tobytes())
    return Path(path)


def read_tensor(path: str | Path):
    """A tensor file -> float32 array; InputError for anything else."""
    import numpy as np

    data = Path(path).read_bytes()
    if len(data) < 16 or data[:8] != TENSOR_MAGIC:
        raise InputError(f"{path}: not a refiner-edge tensor file (no RFETNSR1 header)")
    dtype, ndim = struct.unpack_from("<II", data, 8)
    if dtype != FLOAT32 or not 1 <= ndim <= 4 or len(data) < 16 + 4 * ndim:
        raise InputError(f"{path}: unsupported or truncated tensor header")
    shape = struct.unpack_from(f"<{ndim}I", data, 16)
    body = data[16 + 4 * ndim:]
    if len(body) != 4 * int(np.prod(shape)):
        raise InputError(f"{path}: tensor data is {len(body)} bytes, expected {4 * int(np.prod(shape))}")
    return np.frombuffer(body, dtype="<f4").reshape(shape).astype(np.float32)
