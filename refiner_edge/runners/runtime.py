"""Which runtime runs an artifact: the one rule `infer`, `bench`, `preprocess`, `serve` and `validate` follow.

--engine runs on TensorRT, --onnx on ONNX Runtime, neither on the PyTorch model (--variant, --checkpoint,
--img-size). An option the chosen runtime does not use is an error, never dropped: --checkpoint belongs to the
PyTorch model, and --variant/--img-size describe only a graph without a manifest (an engine always has one).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from .base import Runner

# name -> "module:factory"; a factory takes keyword options and ignores those it does not use. Imported on use so
# that running a graph on ONNX Runtime never imports torch.
RUNNERS = {
    "torch": "refiner_edge.runners.pytorch:torch_runner",
    "onnxruntime": "refiner_edge.runners.ort:onnxruntime_runner",
    "tensorrt": "refiner_edge.runners.tensorrt:tensorrt_runner",
}
BACKENDS = tuple(RUNNERS)


def load_runner(name: str, **options) -> Runner:
    try:
        module, factory = RUNNERS[name].split(":")
    except KeyError:
        raise InputError(f"unknown backend '{name}'; choose one of: {', '.join(RUNNERS)}") from None
    return getattr(importlib.import_module(module), factory)(**options)



def choose_runtime(onnx: str | Path | None = None, engine: str | Path | None = None, backend: str | None = None,
                   checkpoint: str | Path | None = None, required: bool = False) -> str:
    """The runtime of --onnx/--engine (or of an explicit --backend that agrees with it); `required`: one artifact
    must be given (no PyTorch model)."""
    if onnx is not None and engine is not None or required and onnx is None and engine is None:
        raise InputError("give one of --engine and --onnx")
    if engine is not None:
        if backend not in (None, "tensorrt"):
            raise InputError(f"--engine runs on TensorRT: drop --backend {backend} (or --engine)")
        if checkpoint is not None:
            raise InputError(f"--checkpoint applies to the torch backend; the engine {Path(engine).name} holds its "
                             "own weights")
        return "tensorrt"
    if backend == "tensorrt":
        raise InputError("--backend tensorrt needs --engine MODEL.engine (make one with `refiner-edge build`)")
    chosen = backend or ("onnxruntime" if onnx is not None else "torch")
    if chosen == "onnxruntime":
        if onnx is None:
            raise InputError("--backend onnxruntime needs --onnx MODEL.onnx")
        if checkpoint is not None:
            raise InputError(f"--checkpoint applies to the torch backend; the ONNX graph {Path(onnx).name} holds "
                             "its own weights")
    elif onnx is not None:
        raise InputError("--onnx runs on ONNX Runtime: drop --backend torch (or --onnx)")
    return chosen


def check_described(manifest, variant: str | None, img_size: int | None) -> None:
    """--variant/--img-size describe a graph without a manifest; an artifact with one must not be told otherwise."""
    given = [name for name, value in (("--variant", variant), ("--img-size", img_size)) if value is not None]
    if manifest is not None and given:
        raise InputError(f"{' and '.join(given)} describe a graph without a manifest; this graph's manifest says "
                         f"{manifest.model.variant}@{manifest.model.img_size}")


def open_runner(onnx: str | Path | None = None, engine: str | Path | None = None, backend: str | None = None,
                variant: str | None = None, checkpoint: str | Path | None = None, img_size: int | None = None,
                required: bool = False, cuda_graph: bool = False, **options) -> Runner:
    """The runner for --onnx/--engine, or the PyTorch model, with every option checked against the runtime first."""
    chosen = choose_runtime(onnx, engine, backend, checkpoint, required)
    if cuda_graph and chosen != "tensorrt":
        raise InputError("--cuda-graph applies to TensorRT engines (--engine)")
    if chosen != "torch":
        check_described(artifact_manifest(onnx, engine), variant, img_size)
    return load_runner(chosen, onnx=onnx, engine=engine, variant=variant, checkpoint=checkpoint, img_size=img_size,
                       cuda_graph=cuda_graph, **options)


def artifact_manifest(onnx: str | Path | None, engine: str | Path | None):
    """The manifest of --onnx/--engine (None: a graph without one); an engine must have one."""
    from ..manifest import read_manifest

    artifact = Path(engine if engine is not None else onnx)
    if not artifact.is_file():
        raise InputError(f"{'engine' if engine is not None else 'ONNX model'} not found: {artifact}")
    return read_manifest(artifact, required=engine is not None)


def artifact_preprocess(onnx: str | Path | None = None, engine: str | Path | None = None, variant: str | None = None,
                        img_size: int | None = None):
    """The preprocessing of --onnx/--engine (from its manifest), else of --variant/--img-size, without loading it."""
    from ..images.preprocess import Preprocess
    from ..models.variants import DEFAULT_VARIANT, get_variant

    choose_runtime(onnx, engine)
    if onnx is not None or engine is not None:
        manifest = artifact_manifest(onnx, engine)
        check_described(manifest, variant, img_size)
        if manifest is not None:
            return Preprocess.from_record(manifest.preprocess)
    cfg = get_variant(variant or DEFAULT_VARIANT)
    return Preprocess.from_config(cfg.with_overrides(img_size=img_size) if img_size else cfg)
