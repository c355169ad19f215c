"""`refiner-edge bench`: latency percentiles, throughput and peak memory of an engine, a graph or the PyTorch
model, on the runtime the artifact needs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import defaults
from ..defaults import default
from ..errors import InputError
from .common import CheckpointOpt, ImgSizeOpt, JsonOpt, VariantOpt, console, note, phases, print_json

# Checked before any model loads: each timed call's duration is kept (8 bytes), and a million calls is hours of
# timing on the fastest engine; --iterations 10**12 would ask for 7 TiB before the first call.
MAX_ITERATIONS = 1_000_000
MAX_CONCURRENCY = 1024    # client threads, each with its own connection


def bench(
    engine: Annotated[Optional[Path], typer.Option("--engine", help="TensorRT engine from `refiner-edge build` "
                                                   "[default: none].", dir_okay=False)] = None,
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="ONNX graph, run on ONNX Runtime [default: none]."
                                                 , dir_okay=False)] = None,
    variant: VariantOpt = None,
    checkpoint: CheckpointOpt = None,
    img_size: ImgSizeOpt = None,
    batch: Annotated[Optional[int], typer.Option("--batch", min=1, help="Images per call [default: "
                                                 f"{defaults.BENCH_BATCH}].")] = None,
    iterations: Annotated[Optional[int], typer.Option("--iterations", min=1, max=MAX_ITERATIONS,
                                                      help=f"Timed calls, at most {MAX_ITERATIONS:,} [default: "
                                                      f"{defaults.BENCH_ITERATIONS}].")] = None,
    warmup: Annotated[Optional[int], typer.Option("--warmup", min=0, max=MAX_ITERATIONS,
                                                  help=f"Untimed calls first, at most {MAX_ITERATIONS:,} [default: "
                                                  f"{defaults.BENCH_WARMUP}].")] = None,
    cuda_graph: Annotated[bool, typer.Option("--cuda-graph", help="TensorRT: replay the enqueue as a CUDA "
                                             "graph.")] = False,
    triton: Annotated[Optional[str], typer.Option("--triton", help="Time a model behind a Triton Inference "
                                                  "Server instead: [http://|grpc://]HOST:PORT[/MODEL] (MODEL "
                                                  "defaults to refiner) [default: none].")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", min=1, max=MAX_CONCURRENCY,
                                                       help="--triton: requests in flight at once (one client "
                                                       f"each, as perf_analyzer), at most {MAX_CONCURRENCY} "
                                                       f"[default: {defaults.BENCH_CONCURRENCY}].")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Time a model: p50/p90/p99 latency, throughput and peak memory. The artifact picks the runtime: --engine
    TensorRT, --onnx ONNX Runtime, neither PyTorch (--variant/--checkpoint); --triton a server's model."""
    if triton is not None:
        return _bench_triton(triton, concurrency, batch, iterations, warmup, as_json,
                             engine or onnx or variant or checkpoint or img_size or cuda_graph)
    if concurrency is not None:
        raise InputError("--concurrency applies to --triton")
    from ..runners.runtime import open_runner
    from ..runners.bench import bench as run_bench

    runner = open_runner(onnx, engine, variant=variant, checkpoint=checkpoint, img_size=img_size,
                         cuda_graph=cuda_graph)
    _check_input_fits(default(batch, defaults.BENCH_BATCH), runner.preprocess.img_size)
    if runner.random_weights and not as_json:
        note("random weights: timing is the same as with trained ones")
    with phases() as phase:
        report = run_bench(runner, batch=batch, iterations=iterations, warmup=warmup,
                           on_iteration=phase(f"timing {runner.description}",
                                              default(iterations, defaults.BENCH_ITERATIONS)))
    if as_json:
        print_json(report)
        return
    lat, mem = report["latency_ms"], report["memory_mb"]
    console().print(f"{report['model']} ({report['backend']}), batch {report['batch']}, {report['iterations']} "
                    f"iterations after {report['warmup']} warmup")
    console().print(f"latency ms: p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  "
                    f"mean {lat['mean']:.2f}")
    console().print(f"throughput: {report['throughput_ips']:.1f} images/s")
    console().print("memory MB: " + "  ".join(f"{k} {v:.0f}" for k, v in mem.items()))


def _check_input_fits(batch: int, img_size: int) -> None:
    """bench times the batch it names, never chunks of it: an input batch larger than this machine's memory is
    refused before it is allocated (--batch 10**9 would otherwise end in MemoryError)."""
    import os

    need = batch * 3 * img_size * img_size * 4
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise InputError(f"--batch {batch}: its input alone is {need / 2 ** 30:.1f} GiB, more than this machine's "
                         f"{have / 2 ** 30:.1f} GiB of memory")


def _bench_triton(url: str, concurrency: int | None, batch: int | None, iterations: int | None,
                  warmup: int | None, as_json: bool, local) -> None:
    from ..runners.triton_client import bench_triton

    if local:
        raise InputError("--triton times the server's model: drop --engine/--onnx/--variant/--checkpoint/"
                         "--img-size/--cuda-graph")
    with phases() as phase:
        report = bench_triton(url, concurrency=concurrency, batch=batch, iterations=iterations, warmup=warmup,
                              on_iteration=phase(f"timing {url}", default(iterations, defaults.BENCH_ITERATIONS)))
    if as_json:
        print_json(report)
        return
    lat = report["latency_ms"]
    console().print(f"{report['model']} at {report['url']}, batch {report['batch']}, concurrency "
                    f"{report['concurrency']}, {report['iterations']} requests after {report['warmup']} warmup")
    console().print(f"latency ms: p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p95 {lat['p95']:.2f}  "
                    f"p99 {lat['p99']:.2f}  mean {lat['mean']:.2f}")
    console().print(f"throughput: {report['throughput_ips']:.1f} images/s")
    console().print("server batches (size: executions): " + ", ".join(
        f"{k}: {v}" for k, v in report["server_batches"].items()))
