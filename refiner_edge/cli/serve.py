"""`refiner-edge serve`: a real Triton Inference Server (PyTriton's tritonserver) in front of the ONNX Runtime or
TensorRT runner, HTTP and gRPC, dynamic batching on."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError
from .common import note


def serve(
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="ONNX graph, run on ONNX Runtime behind the "
                                                 "server [default: none].", dir_okay=False)] = None,
    engine: Annotated[Optional[Path], typer.Option("--engine", help="TensorRT engine from `refiner-edge build`, "
                                                   "run on TensorRT behind the server [default: none].",
                                                   dir_okay=False)] = None,
    name: Annotated[str, typer.Option("--name", help="Model name; the encoded-image model is NAME_image.")]
    = "refiner",
    host: Annotated[str, typer.Option("--host", help="Address HTTP and gRPC listen on (0.0.0.0: every "
                                      "interface).")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option("--http-port", help="HTTP/REST port (KServe v2 protocol).")] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="gRPC port.")] = 8001,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Largest batch Triton forms from "
                                           "concurrent requests (at most an engine's profile maximum).")] = 8,
    preferred_batch: Annotated[Optional[list[int]], typer.Option(
        "--preferred-batch", help="Batch sizes the batcher aims for (repeat the option) [default: none: as large "
        "as the queue allows].")] = None,
    queue_delay_us: Annotated[int, typer.Option("--queue-delay-us", min=0, help="How long a request may wait "
                                                "for others to batch with, microseconds.")] = 2000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the endpoints as one JSON line on stdout once "
                                          "ready.")] = False,
) -> None:
    """Serve a model through Triton Inference Server until Ctrl-C: model NAME takes preprocessed tensors,
    NAME_image encoded image files (JPEG, PNG, ...). Needs the serve extra (pip install 'refiner-edge[serve]')."""
    from ..deploy.serve import ServeOptions, check_serving
    from ..deploy.serve import serve as run_server
    from ..runners.base import load_runner

    if (engine is None) == (onnx is None):
        raise InputError("give one of --onnx and --engine")
    check_serving()   # before loading the model: a missing dependency is the first thing to hear about
    runner = load_runner("tensorrt" if engine is not None else "onnxruntime", onnx=onnx, engine=engine)
    if runner.random_weights:
        note("random weights: the predictions are meaningless")
    options = ServeOptions(name=name, host=host, http_port=http_port, grpc_port=grpc_port, max_batch=max_batch,
                           queue_delay_us=queue_delay_us, preferred_batch=tuple(preferred_batch or ()))

    def ready(info: dict) -> None:
        if as_json:
            typer.echo(json.dumps(info))
        else:
            typer.echo(f"serving {runner.description} ({runner.name}) as '{name}' (tensors) and "
                       f"'{options.image_name}' (encoded images): http {info['http']}, grpc {info['grpc']}; "
                       "Ctrl-C stops")

    run_server(runner, options, on_ready=ready)
