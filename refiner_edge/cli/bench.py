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
TOP_LAYERS = 15           # --layers on a terminal: the slowest layers shown, the others summed in one row


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
    layers: Annotated[bool, typer.Option("--layers", help="--engine: also time each layer with TensorRT's "
                                         "profiler, in a run of its own after the latency run (trtexec "
                                         "--dumpProfile --separateProfileRun), with the RefinerDLA plugin's share "
                                         "of the total; --warmup and --iterations calls, at most "
                                         f"{defaults.BENCH_MAX_PROFILED_CALLS:,} each.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Time a model: p50/p90/p99 latency, throughput and peak memory. The artifact picks the runtime: --engine
    TensorRT, --onnx ONNX Runtime, neither PyTorch (--variant/--checkpoint); --triton a server's model."""
    if layers and (triton is not None or engine is None):
        raise InputError("--layers times a TensorRT engine's layers with TensorRT's profiler: give --engine "
                         "MODEL.engine" + (" (not --triton)" if triton is not None else ""))
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
        if layers:
            from ..runners.layer_profile import profile_layers

            report["layers"] = profile_layers(runner, batch=batch, iterations=iterations, warmup=warmup,
                                              on_iteration=phase(f"profiling layers of {runner.description}",
                                                                 default(iterations, defaults.BENCH_ITERATIONS)))
            report["layers"]["cuda_graph"] = False   # profiled calls enqueue plainly (runners/layer_profile.py)
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
    if layers:
        if cuda_graph:
            note("--layers: the latency above replays a CUDA graph; the layer times come from plain enqueues "
                 "(a graph's replay reports none)")
        print_layers(report["layers"])


def print_layers(profile: dict, top: int = TOP_LAYERS) -> None:
    """The `top` slowest layers as a table, the others summed in one row, then the refinement op's share."""
    from rich.table import Table

    layers = sorted(profile["layers"], key=lambda layer: -layer["mean_ms"])
    total = profile["total_ms"]
    table = Table(title=f"layer times: {profile['layer_count']} layers, {profile['calls']} profiled calls after "
                  f"{profile['warmup']} warm-up", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("layer", overflow="ellipsis", no_wrap=True, max_width=72)
    for column in ("mean ms", "median ms", "%"):
        table.add_column(column, justify="right")
    for i, layer in enumerate(layers[:top], 1):
        mark = " [plugin]" if layer["kind"] == "refinement" else ""
        table.add_row(str(i), layer["name"] + mark, f"{layer['mean_ms']:.4f}", f"{layer['median_ms']:.4f}",
                      f"{layer['percent']:.1f}")
    rest = layers[top:]
    if rest:
        table.add_row("", f"{len(rest)} other layers", f"{sum(x['mean_ms'] for x in rest):.4f}", "",
                      f"{sum(x['percent'] for x in rest):.1f}")
    table.add_row("", "all layers", f"{total['mean']:.4f}", f"{total['median']:.4f}", "100.0")
    console().print(table)
    ref = profile["refinement"]
    if ref["layers"]:
        console().print(f"refinement (RefinerDLA plugin): {ref['layers']} layers, {ref['mean_ms']:.4f} ms, "
                        f"{ref['percent']:.1f}% of all layers; format copies around it {ref['reformat']['mean_ms']:.4f}"
                        f" ms ({ref['reformat']['percent']:.1f}%)")
    else:
        console().print("refinement: no RefinerDLA plugin layer (an engine of an unfused graph)")
    coverage = profile.get("coverage")
    console().print(f"a profiled call: {profile['call_ms']['mean']:.4f} ms on the host, of which the layers "
                    f"{total['mean']:.4f} ms" + (f" ({100 * coverage:.0f}%)" if coverage is not None else ""))
    if "warning" in ref:
        note(ref["warning"])


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
