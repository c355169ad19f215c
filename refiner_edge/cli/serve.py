"""`refiner-edge serve`: a real Triton Inference Server (PyTriton's tritonserver) in front of the ONNX Runtime or
TensorRT runner, HTTP and gRPC, dynamic batching on."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import defaults
from .common import note, state


def serve(
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="ONNX graph, run on ONNX Runtime behind the "
                                                 "server [default: none].", dir_okay=False)] = None,
    engine: Annotated[Optional[Path], typer.Option("--engine", help="TensorRT engine from `refiner-edge build`, "
                                                   "run on TensorRT behind the server [default: none].",
                                                   dir_okay=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name; the encoded-image model is "
                                                f"NAME_image [default: {defaults.SERVE_NAME}].")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Address HTTP and gRPC listen on (0.0.0.0: every "
                                                f"interface) [default: {defaults.SERVE_HOST}].")] = None,
    http_port: Annotated[Optional[int], typer.Option("--http-port", help="HTTP/REST port (KServe v2 protocol) "
                                                     f"[default: {defaults.SERVE_HTTP_PORT}].")] = None,
    grpc_port: Annotated[Optional[int], typer.Option("--grpc-port", help="gRPC port [default: "
                                                     f"{defaults.SERVE_GRPC_PORT}].")] = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", min=1, help="Largest batch Triton forms from "
                                                     "concurrent requests (at most an engine's profile maximum) "
                                                     f"[default: {defaults.SERVE_MAX_BATCH}].")] = None,
    preferred_batch: Annotated[Optional[list[int]], typer.Option(
        "--preferred-batch", help="Batch sizes the batcher aims for (repeat the option) [default: none: as large "
        "as the queue allows].")] = None,
    queue_delay_us: Annotated[Optional[int], typer.Option("--queue-delay-us", min=0, help="How long a request "
                                                          "may wait for others to batch with, microseconds "
                                                          f"[default: {defaults.SERVE_QUEUE_DELAY_US}].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the endpoints as one JSON line on stdout once "
                                          "ready.")] = False,
    setup: Annotated[bool, typer.Option("--setup", help="Make serve's own environment (PyTriton with numpy<2; "
                                        "once, a few minutes) and print its interpreter; serving makes it on first "
                                        "use too. Where: $REFINER_EDGE_SERVE_ENV, else ~/.cache/refiner-edge.")]
    = False,
) -> None:
    """Serve a model through Triton Inference Server until Ctrl-C: model NAME takes preprocessed tensors,
    NAME_image encoded image files (JPEG, PNG, ...). PyTriton runs in an environment of its own with numpy<2
    (made by --setup or on first use), so this one can be on NumPy 2."""
    from ..deploy import serve_env
    from ..deploy.serve import ServeOptions, check_options, check_serving, reserve_stdout
    from ..deploy.serve import serve as run_server
    from ..onnx.graph import check_onnx_graph
    from ..runners.runtime import artifact_manifest, choose_runtime, open_runner

    here = serve_env.serves_here()
    if setup:
        typer.echo(sys.executable if here else serve_env.ensure(progress=note))
        return
    choose_runtime(onnx, engine, required=True)
    manifest = artifact_manifest(onnx, engine)
    options = ServeOptions(name=name, host=host, http_port=http_port, grpc_port=grpc_port, max_batch=max_batch,
                           queue_delay_us=queue_delay_us, preferred_batch=tuple(preferred_batch or ()))
    if not here:
        # refused here, before minutes of making the environment and before this process is replaced by serve's
        # (a file that is no graph must end here in one line, not after the exec); then the same command runs there
        check_options(manifest, options)
        if onnx is not None:
            check_onnx_graph(onnx)
        serve_env.relaunch(serve_env.serve_args(onnx, engine, options, as_json, state["verbose"]), progress=note)
    check_serving()   # before loading the model: a missing dependency is the first thing to hear about
    runner = open_runner(onnx, engine, required=True)
    if runner.random_weights:
        note("random weights: the predictions are meaningless")

    print_line = reserve_stdout()   # before the server starts: its output never reaches stdout

    def ready(info: dict) -> None:
        print_line(json.dumps(info) if as_json else
                             f"serving {runner.description} ({runner.name}) as '{options.name}' (tensors) and "
                             f"'{options.image_name}' (encoded images): http {info['http']}, grpc {info['grpc']}; "
                             "Ctrl-C stops")

    run_server(runner, options, on_ready=ready)

