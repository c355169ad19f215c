"""`refiner-edge preprocess`: images -> the model's input tensors as raw files, for C++ hosts without an image
decoder (cpp/README.md) and for checking a C++ preprocessing against this one.

The file format ("RFETNSR1", cpp/include/refiner_edge/refiner_edge.h), all little-endian:
  8 bytes  magic b"RFETNSR1"
  uint32   dtype (0 = float32)
  uint32   ndim (3 here: [3, S, S])
  ndim x uint32  dims
  the float32 values, C order (CHW, RGB, normalised as the manifest's `preprocess` says)
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError
from .common import ImgSizeOpt, VariantOpt

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


def artifact_preprocess(onnx: Path | None, engine: Path | None, variant: str | None, img_size: int | None):
    """The preprocessing of --onnx/--engine (from its manifest), else of --variant/--img-size."""
    from ..images.preprocess import Preprocess
    from ..manifest import read_manifest
    from ..models.variants import DEFAULT_VARIANT, get_variant

    if onnx is not None and engine is not None:
        raise InputError("give one of --engine and --onnx")
    artifact = engine or onnx
    if artifact is not None:
        if not artifact.is_file():
            raise InputError(f"{'engine' if engine else 'ONNX graph'} not found: {artifact}")
        manifest = read_manifest(artifact, required=engine is not None)
        if manifest is not None:
            given = [name for name, value in (("--variant", variant), ("--img-size", img_size)) if value is not None]
            if given:
                raise InputError(f"{' and '.join(given)} describe a graph without a manifest; this graph's "
                                 f"manifest says {manifest.model.variant}@{manifest.model.img_size}")
            return Preprocess.from_record(manifest.preprocess)
    cfg = get_variant(variant or DEFAULT_VARIANT)
    return Preprocess.from_config(cfg.with_overrides(img_size=img_size) if img_size else cfg)


def output_paths(images: list[Path], output: str | Path) -> list[Path]:
    """One image and a file name: that file. Otherwise a directory of `<stem>.rfet` files (a repeated stem gets
    its position in the list); `-o NAME/` (as typed, so a str) names a directory even for one image."""
    folder = isinstance(output, str) and output.endswith(("/", os.sep))
    output = Path(output)
    if len(images) == 1 and not output.is_dir() and not folder:
        return [output]
    if output.exists() and not output.is_dir():
        raise InputError(f"-o {output} is a file: give a directory for {len(images)} images")
    stems = [p.stem for p in images]
    return [output / (f"{s}{TENSOR_SUFFIX}" if stems.count(s) == 1 else f"{s}.{i}{TENSOR_SUFFIX}")
            for i, s in enumerate(stems)]


def preprocess(
    images: Annotated[list[Path], typer.Argument(help="Image files and/or directories (searched recursively).")],
    output: Annotated[str, typer.Option("--output", "-o", help="Tensor file (one image) or directory "
                                        "(<stem>.rfet per image; a name ending in / is a directory).",
                                        metavar="PATH")],
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="Take the preprocessing from this graph's "
                                                 "manifest [default: none: --variant/--img-size].",
                                                 dir_okay=False)] = None,
    engine: Annotated[Optional[Path], typer.Option("--engine", help="Take the preprocessing from this engine's "
                                                   "manifest [default: none: --variant/--img-size].",
                                                   dir_okay=False)] = None,
    variant: VariantOpt = None,
    img_size: ImgSizeOpt = None,
) -> None:
    """Write each image's input tensor as a raw float32 file (RFETNSR1 header) for C++ hosts."""
    from ..artifacts import check_outputs
    from ..images.preprocess import find_images

    pre = artifact_preprocess(onnx, engine, variant, img_size)
    paths = find_images(images)
    dests = output_paths(paths, output)
    check_outputs(*dests, inputs=paths)   # before any image is decoded or file written
    failed = []
    for path, dest in zip(paths, dests):
        try:
            x = pre.load(path)
        except InputError as e:
            failed.append(str(e))
            continue
        write_tensor(dest, x)
        typer.echo(str(dest))
    for message in failed:
        typer.echo(f"error: {message}", err=True)
    if failed:
        raise typer.Exit(2)
