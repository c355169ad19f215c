"""`refiner-edge infer`: top-k classes per image, on the runtime the given artifact needs."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError
from .common import CheckpointOpt, ImgSizeOpt, JsonOpt, VariantOpt, console, note, phases, print_json


class BackendName(str, Enum):
    torch = "torch"
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"


def choose_backend(backend: BackendName | None, onnx: Path | None, checkpoint: Path | None,
                   engine: Path | None = None) -> str:
    """The artifact picks the runtime (--engine: TensorRT; --onnx: ONNX Runtime; none: PyTorch); an option the
    chosen runtime does not use is an error, never dropped."""
    if engine is not None:
        if onnx is not None:
            raise InputError("give one of --engine and --onnx")
        if backend not in (None, BackendName.tensorrt):
            raise InputError(f"--engine runs on TensorRT: drop --backend {backend.value} (or --engine)")
        if checkpoint is not None:
            raise InputError(f"--checkpoint applies to the torch backend; the engine {engine.name} holds its own "
                             "weights")
        return "tensorrt"
    if backend == BackendName.tensorrt:
        raise InputError("--backend tensorrt needs --engine MODEL.engine (make one with `refiner-edge build`)")
    chosen = backend.value if backend else ("onnxruntime" if onnx is not None else "torch")
    if chosen == "onnxruntime":
        if onnx is None:
            raise InputError("--backend onnxruntime needs --onnx MODEL.onnx")
        if checkpoint is not None:
            raise InputError(f"--checkpoint applies to the torch backend; the ONNX graph {onnx.name} holds its "
                             "own weights")
    elif onnx is not None:
        raise InputError("--onnx runs on ONNX Runtime: drop --backend torch (or --onnx)")
    return chosen


def check_described(runner, variant: str | None, img_size: int | None) -> None:
    """--variant/--img-size describe a graph without a manifest; a graph with one must not be told otherwise."""
    given = [name for name, value in (("--variant", variant), ("--img-size", img_size)) if value is not None]
    if runner.name in ("onnxruntime", "tensorrt") and runner.manifest is not None and given:
        raise InputError(f"{' and '.join(given)} describe a graph without a manifest; this graph's manifest says "
                         f"{runner.manifest.model.variant}@{runner.manifest.model.img_size}")


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
    topk: Annotated[int, typer.Option("--topk", min=1, help="Predictions per image (at most the model's "
                                      "classes).")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 8,
    as_json: JsonOpt = False,
) -> None:
    """Classify images: top-k classes per image."""
    from ..images.preprocess import find_images
    from ..runners.base import load_runner
    from ..runners.classify import classify

    chosen = choose_backend(backend, onnx, checkpoint, engine)
    paths = find_images(images)
    runner = load_runner(chosen, variant=variant, checkpoint=checkpoint, onnx=onnx, img_size=img_size, engine=engine)
    check_described(runner, variant, img_size)
    if runner.random_weights:
        note("no checkpoint: the weights are random, so the predictions are meaningless")
    with phases(len(paths) > batch_size) as phase:
        results = classify(paths, runner, k=topk, batch_size=batch_size,
                           on_batch=phase("classifying", len(paths)))
    if as_json:
        print_json([r.to_dict() for r in results])
    else:
        print_predictions(results, runner.description)
    failed = [r for r in results if r.error]
    for r in failed:
        typer.echo(f"error: {r.error}", err=True)
    if failed:
        raise typer.Exit(2)


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
