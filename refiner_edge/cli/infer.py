"""`refiner-edge infer`: top-k classes per image, on the runtime the given artifact needs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import defaults
from ..defaults import default
from ..errors import InputError
from ..runners.runtime import BACKENDS
from .common import (BatchSizeOpt, CheckpointOpt, ImgSizeOpt, JsonOpt, VariantOpt, choices, console, note, phases,
                     print_json)

BackendName = choices("BackendName", BACKENDS)


def infer(
    images: Annotated[list[Path], typer.Argument(help="Image files and/or directories (searched recursively).")],
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="ONNX graph to run on ONNX Runtime "
                                                 "[default: none: the PyTorch model].", dir_okay=False)] = None,
    engine: Annotated[Optional[Path], typer.Option("--engine", help="TensorRT engine from `refiner-edge build`, "
                                                   "run on TensorRT [default: none].", dir_okay=False)] = None,
    backend: Annotated[Optional[BackendName], typer.Option(
        "--backend", help="Runtime [default: the one the artifact needs: tensorrt for --engine, onnxruntime for "
        "--onnx, else torch].",
        show_default=False)] = None,
    variant: VariantOpt = None,
    checkpoint: CheckpointOpt = None,
    img_size: ImgSizeOpt = None,
    topk: Annotated[Optional[int], typer.Option("--topk", min=1, help="Predictions per image (at most the model's "
                                                f"classes) [default: {defaults.INFER_TOPK}].")] = None,
    batch_size: BatchSizeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Classify images: top-k classes per image."""
    from ..images.preprocess import find_images
    from ..runners.runtime import choose_runtime, open_runner
    from ..runners.classify import classify

    choose_runtime(onnx, engine, backend.value if backend else None, checkpoint)   # before the images are listed
    paths = find_images(images)
    runner = open_runner(onnx, engine, backend.value if backend else None, variant=variant, checkpoint=checkpoint,
                         img_size=img_size)
    if runner.random_weights:
        note("no checkpoint: the weights are random, so the predictions are meaningless")
    with phases(len(paths) > default(batch_size, defaults.RUN_BATCH_SIZE)) as phase:
        results = classify(paths, runner, k=topk, batch_size=batch_size,
                           on_batch=phase("classifying", len(paths)))
    if as_json:
        print_json([r.to_dict() for r in results])
    else:
        print_predictions(results, runner.description)
    failed = [r.error for r in results if r.error]
    if failed:   # after the others' predictions: one line naming every image that could not be read, exit 2
        raise InputError("; ".join(failed))


def print_predictions(results, description: str) -> None:
    from rich.table import Table

    out = console()
    for r in results:
        if r.error:
            continue
        table = Table(title=f"{r.image}", caption=description, title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("class", justify="right")
        table.add_column("label")
        table.add_column("prob", justify="right")
        for rank, p in enumerate(r.predictions, 1):
            table.add_row(str(rank), str(p["index"]), p["label"], f"{p['prob']:.4f}")
        out.print(table)
