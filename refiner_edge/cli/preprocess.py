"""`refiner-edge preprocess`: images -> the model's input tensors as raw files (images/tensor_file.py), for C++
hosts without an image decoder (cpp/README.md) and for checking a C++ preprocessing against this one."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError
from ..images.tensor_file import TENSOR_SUFFIX, write_tensor
from .common import ImgSizeOpt, VariantOpt


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
    from ..runners.runtime import artifact_preprocess

    pre = artifact_preprocess(onnx, engine, variant, img_size)
    paths = find_images(images)
    dests = output_paths(paths, output)
    # before any image is decoded or file written; the graph or engine (and its manifest) is read too
    check_outputs(*dests, inputs=[*paths, onnx, engine])
    failed = []
    for path, dest in zip(paths, dests):
        try:
            x = pre.load(path)
        except InputError as e:
            failed.append(str(e))
            continue
        write_tensor(dest, x)
        typer.echo(str(dest))
    if failed:   # after the others are written: one line naming every image that could not be read, exit 2
        raise InputError("; ".join(failed))
