"""`refiner-edge deploy`: hand a model to Triton Inference Server (a model repository) or DeepStream (an nvinfer
configuration), from the artifact's manifest."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import defaults
from ..artifacts import check_folder_output
from ..errors import InputError
from .common import JsonOpt, handle_errors, note, print_json

deploy_app = typer.Typer(help="Hand a model to Triton Inference Server or DeepStream.", no_args_is_help=True,
                         rich_markup_mode=None)


class Kind(str, Enum):
    gpu = "gpu"
    cpu = "cpu"


def triton(
    out: Annotated[Path, typer.Option("--output", "-o", help="Model repository folder: this model's folders "
                                      "are written (each replaced once complete), other models stay.",
                                      file_okay=False)],
    engine: Annotated[Optional[Path], typer.Option("--engine", help="TensorRT engine from `refiner-edge build` "
                                                   "(platform tensorrt_plan) [default: none].",
                                                   dir_okay=False)] = None,
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="ONNX graph with its manifest (platform "
                                                 "onnxruntime_onnx) [default: none].", dir_okay=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name; also NAME_preprocess and "
                                                f"NAME_ensemble [default: {defaults.TRITON_NAME}].")] = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", help="max_batch_size [default: "
                                                     f"{defaults.TRITON_MAX_BATCH}, at most an engine's profile "
                                                     "maximum; 0 for a fixed-batch graph].")] = None,
    preferred_batch: Annotated[Optional[list[int]], typer.Option(
        "--preferred-batch", help="Dynamic batching's preferred sizes (repeat the option) [default: none].")] = None,
    queue_delay_us: Annotated[Optional[int], typer.Option("--queue-delay-us", min=0, help="Dynamic batching's "
                                                          "max_queue_delay_microseconds [default: "
                                                          f"{defaults.TRITON_QUEUE_DELAY_US}].")] = None,
    instances: Annotated[Optional[int], typer.Option("--instances", min=1, help="Model instances (instance_group "
                                                     f"count) per device [default: {defaults.TRITON_INSTANCES}].")]
    = None,
    kind: Annotated[Optional[Kind], typer.Option("--kind", help="Where the instances run: gpu or cpu (ONNX only) "
                                                 "[default: gpu].", show_default=False)] = None,
    ensemble: Annotated[Optional[bool], typer.Option("--ensemble/--no-ensemble", help="Add the Python-backend "
                                                     "preprocessing model and the ensemble that takes encoded images "
                                                     f"[default: {'' if defaults.TRITON_ENSEMBLE else 'no-'}ensemble].",
                                                     show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a Triton Inference Server model repository: config.pbtxt with dynamic batching and instance groups,
    the model file, labels, the plugin library a library-form engine needs, and an ensemble for encoded images."""
    from ..deploy.triton import RepositoryOptions, write_repository

    if (engine is None) == (onnx is None):
        raise InputError("give one of --engine and --onnx")
    check_folder_output(out)
    options = RepositoryOptions(name=name, max_batch=max_batch, preferred_batch=tuple(preferred_batch or ()),
                                queue_delay_us=queue_delay_us, instances=instances,
                                kind=kind.value if kind else None, ensemble=ensemble)
    repo = write_repository(engine or onnx, out, options)
    if as_json:
        print_json(repo.to_dict())
        return
    typer.echo(f"wrote {out}: {', '.join(repo.files)}")
    for line in repo.notes:
        note(line)
    typer.echo(f"serve it: {repo.server_command()}")


def deepstream(
    engine: Annotated[Path, typer.Option("--engine", help="TensorRT engine from `refiner-edge build` (built on "
                                         "the Jetson or for its TensorRT and GPU/DLA).", dir_okay=False)],
    out: Annotated[Path, typer.Option("--output", "-o", help="Folder to write: nvinfer config, engine, labels, "
                                      "plugin library, README with a sample pipeline (each replaced once complete; "
                                      "other files stay).", file_okay=False)],
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="nvinfer batch-size [default: the "
                                                      "engine profile's maximum].")] = None,
    threshold: Annotated[Optional[float], typer.Option("--classifier-threshold", help="classifier-threshold, in "
                                                       "logits (the graph has no softmax) [default: "
                                                       f"{defaults.DEEPSTREAM_THRESHOLD:g}].")] = None,
    gpu_id: Annotated[Optional[int], typer.Option("--gpu-id", min=0, help="gpu-id [default: "
                                                  f"{defaults.DEEPSTREAM_GPU_ID}].")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a DeepStream nvinfer configuration (classifier) for an engine, from its manifest, and a sample
    pipeline. Checked here: the keys and values; only a Jetson runs it."""
    from ..deploy.deepstream import write_deepstream

    check_folder_output(out)

    result = write_deepstream(engine, out, batch=batch_size, threshold=threshold, gpu_id=gpu_id)
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(f"wrote {out}: {', '.join(result.files)}")
    for line in result.notes:
        note(line)


deploy_app.command()(handle_errors(triton))
deploy_app.command()(handle_errors(deepstream))
