"""The `refiner-edge` command line: thin commands over the library; domain errors become one line and an exit code."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

try:  # typer >= 0.22 vendors click; older releases depend on it
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click
from typer.core import TyperGroup

from . import __version__
from .errors import RefinerEdgeError


class OneLineErrors(TyperGroup):
    """Usage errors (bad option values, missing arguments) as one `error:` line instead of a boxed panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            typer.echo(e.ctx.get_help())
            sys.exit(0)
        except click.ClickException as e:
            hint = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) else ""
            typer.echo(f"error: {e.format_message()}{hint}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    name="refiner-edge",
    help="Deploy Refiner-ViT: export to ONNX, fuse the attention refinement, calibrate, build and run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
log = logging.getLogger("refiner_edge")
_state = {"verbose": False}


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> None:
    """Print one line to stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(func):
    """Turn domain errors (and, unless --verbose, unexpected ones) into one line on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RefinerEdgeError as e:
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except (typer.Exit, typer.Abort, click.ClickException):
            raise
        except Exception as e:
            if _state["verbose"]:
                raise
            first = str(e).splitlines()[0] if str(e) else ""
            fail(f"unexpected {type(e).__name__}: {first} (run with -v for the traceback)", 1)

    return wrapper


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"refiner-edge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details and show tracebacks.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """refiner-edge: Refiner vision transformers on TensorRT, from PyTorch to Jetson and datacenter GPUs."""
    _state["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(message)s")


VariantOpt = Annotated[str, typer.Option("--variant", help="refiner-vit-s, refiner-vit-m, refiner-vit-l or "
                                         "refiner-vit-tiny (test-sized).")]
CheckpointOpt = Annotated[Optional[Path], typer.Option(
    "--checkpoint", help="Official checkpoint (.pth/.pth.tar timm dict, bare state dict or .safetensors). "
    "Without one the weights are random.", dir_okay=False)]
ImgSizeOpt = Annotated[Optional[int], typer.Option("--img-size", help="Input resolution, a multiple of 16 "
                                                   "(default: the variant's, 224 for S/M/L).")]


def _parse_batch(value: str) -> int | str:
    if value == "dynamic":
        return value
    try:
        n = int(value)
    except ValueError:
        raise typer.BadParameter("use a positive integer or 'dynamic'") from None
    if n < 1:
        raise typer.BadParameter("use a positive integer or 'dynamic'")
    return n


@app.command()
@handle_errors
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the ONNX file; a JSON manifest "
                                         "is written beside it.", dir_okay=False)],
    variant: VariantOpt = "refiner-vit-s",
    checkpoint: CheckpointOpt = None,
    img_size: ImgSizeOpt = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (>= 17).")] = 17,
    batch: Annotated[str, typer.Option("--batch", help="Fixed batch size, or 'dynamic'.")] = "dynamic",
    fuse: Annotated[bool, typer.Option("--fuse/--no-fuse", help="Replace each attention refinement with one "
                                       "RefinerDLA plugin node (for TensorRT).")] = False,
) -> None:
    """Export a Refiner-ViT to ONNX, checked against PyTorch on ONNX Runtime before it is kept."""
    from .api import create_model
    from .export import export_onnx

    batch_value = _parse_batch(batch)
    model = create_model(variant, img_size=img_size, checkpoint=checkpoint)
    out = _console()
    if checkpoint is None:
        out.print("note: no --checkpoint given: the weights are random")
    if not fuse:
        with out.status(f"exporting {model.cfg.name}@{model.cfg.img_size} to {output} ..."):
            result = export_onnx(model, output, opset=opset, batch=batch_value)
        out.print(f"verified on ONNX Runtime: {result['comparison']}")
    else:  # the plain graph goes to a scratch folder, so a failed fusion leaves an earlier `output` as it was
        import tempfile

        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=".refiner-edge-") as scratch:
            plain = Path(scratch) / output.name
            with out.status(f"exporting {model.cfg.name}@{model.cfg.img_size} ..."):
                result = export_onnx(model, plain, opset=opset, batch=batch_value)
            out.print(f"verified on ONNX Runtime: {result['comparison']}")
            _fuse(plain, output, verify=True)
    out.print(f"wrote {output} and {output.name}.json")


def _fuse(source: Path, output: Path, verify: bool) -> None:
    from .refine.surgery import fuse_onnx

    out = _console()
    with out.status(f"fusing the attention refinements of {source.name} ..."):
        report = fuse_onnx(source, output, verify=verify)
    out.print(f"fused {report['fused_nodes']} refinement subgraphs into RefinerDLA nodes")
    if report["comparison"] is not None:
        out.print(f"fused vs plain graph on ONNX Runtime: {report['comparison']}")
    elif verify:
        out.print("note: not verified: the reference RefinerDLA op needs onnxruntime-extensions")


@app.command()
@handle_errors
def fuse(
    source: Annotated[Path, typer.Argument(help="Plain ONNX graph from `refiner-edge export` (FP32, FP16 or Q/DQ).",
                                           dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the fused graph (may be SOURCE).",
                                         dir_okay=False)],
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Run fused and plain graphs on ONNX "
                                         "Runtime (reference op) and require the same output.")] = True,
) -> None:
    """Replace each attention-refinement subgraph with one RefinerDLA TensorRT plugin node."""
    _fuse(source, output, verify)


class BackendName(str, Enum):
    torch = "torch"
    onnxruntime = "onnxruntime"


@app.command()
@handle_errors
def infer(
    images: Annotated[list[Path], typer.Argument(help="Image files and/or directories (searched recursively).")],
    backend: Annotated[BackendName, typer.Option("--backend", help="Runtime to classify with.")] = BackendName.torch,
    variant: VariantOpt = "refiner-vit-s",
    checkpoint: CheckpointOpt = None,
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="ONNX model for --backend onnxruntime.",
                                                 dir_okay=False)] = None,
    img_size: ImgSizeOpt = None,
    topk: Annotated[int, typer.Option("--topk", min=1, help="Predictions per image.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of tables.")] = False,
) -> None:
    """Classify images: top-k ImageNet classes per image."""
    from .backends import load_backend
    from .infer import classify
    from .preprocess import find_images

    paths = find_images(images)
    if backend is BackendName.onnxruntime and onnx is None:
        raise typer.BadParameter("--backend onnxruntime needs --onnx MODEL.onnx", param_hint="--onnx")
    engine = load_backend(backend.value, variant=variant, checkpoint=checkpoint, onnx=onnx, img_size=img_size)
    err = _console(stderr=True)
    if engine.random_weights:
        err.print("note: no checkpoint: the weights are random, so the predictions are meaningless")
    results = _with_progress(lambda tick: classify(paths, engine, k=topk, batch_size=batch_size, on_batch=tick),
                             total=len(paths), label="classifying", show=len(paths) > batch_size)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        _print_predictions(results, engine.description)
    failed = [r for r in results if r.error]
    for r in failed:
        typer.echo(f"error: {r.error}", err=True)
    if failed:
        raise typer.Exit(2)


def _with_progress(work, total: int, label: str, show: bool):
    """Run work(tick) under a progress bar on stderr (only on a terminal and when the work is long)."""
    with _phases(show) as phase:
        return work(phase(label, total))


@contextlib.contextmanager
def _phases(show: bool = True):
    """Yield phase(label, total) -> tick(n): one progress bar per phase of a long job, on stderr terminals only."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = _console(stderr=True)
    if not (show and console.is_terminal):
        yield lambda label, total: (lambda n: None)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        def phase(label: str, total: int):
            task = progress.add_task(label, total=total or None)
            return lambda n: progress.advance(task, n)

        yield phase


def _print_predictions(results, description: str) -> None:
    from rich.table import Table

    out = _console()
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


class PrecisionName(str, Enum):
    int8 = "int8"
    fp16 = "fp16"


class MethodName(str, Enum):
    entropy = "entropy"
    percentile = "percentile"
    max = "max"
    mse = "mse"


@app.command()
@handle_errors
def calibrate(
    onnx: Annotated[Path, typer.Option("--onnx", help="Plain FP32 graph from `refiner-edge export` (not fused).",
                                       dir_okay=False)],
    images: Annotated[Path, typer.Option("--images", help="Calibration images: a folder (searched recursively; "
                                         "jpg/png/webp/bmp/...) or one file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the calibrated graph; the report "
                                         "goes to <output>.json, the TensorRT 10 cache to <stem>.calib.",
                                         dir_okay=False)],
    precision: Annotated[PrecisionName, typer.Option("--precision", help="int8: Q/DQ on Conv/MatMul/Gemm inputs "
                                                     "over an FP16 graph; fp16: FP16 graph.")] = PrecisionName.int8,
    num: Annotated[int, typer.Option("--num", min=1, help="Calibration images to use (a seeded random sample "
                                     "when the folder holds more).")] = 512,
    method: Annotated[Optional[MethodName], typer.Option("--method", help="How INT8 activation ranges are chosen "
                                                         "from the measured values [default: percentile].")] = None,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", help="Accuracy budget: top-1 agreement with "
                                                      "FP32 may fall at most this many points; the most sensitive "
                                                      "layers stay FP16 until it holds.")] = None,
    min_sqnr: Annotated[Optional[float], typer.Option("--min-sqnr", help="Accuracy budget: logit SQNR against "
                                                      "FP32 in dB (with or instead of --max-drop).")] = None,
    sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Report per-layer sensitivity (one layer "
                                              "quantized at a time) even without a budget. One graph per layer: "
                                              "minutes for Refiner-ViT-S on a CPU (lower --eval-num).")] = False,
    eval_num: Annotated[int, typer.Option("--eval-num", min=1, help="Calibration images the budget and the "
                                          "report evaluate on.")] = 64,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per ONNX Runtime run.")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the image sample.")] = 0,
    tensorrt_version: Annotated[str, typer.Option("--tensorrt-version", help="TensorRT version written into the "
                                                  "calibration cache header (the reader rewrites it).")] = "10.3.0",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Calibrate a plain graph on real images into a strongly typed FP16 or INT8 (Q/DQ) graph for TensorRT 10/11."""
    from .precision.calibrate import calibrate_onnx

    if method is not None and precision is PrecisionName.fp16:
        _console(stderr=True).print("note: --method sets INT8 ranges; an FP16 graph is decided from the observed "
                                    "ranges")
    with _phases() as phase:
        report = calibrate_onnx(onnx, images, output, precision=precision.value, num=num,
                                method=(method or MethodName.percentile).value,
                                max_drop=max_drop, min_sqnr=min_sqnr, sensitivity=sensitivity, eval_num=eval_num,
                                batch_size=batch_size, seed=seed, tensorrt_version=tensorrt_version, progress=phase)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    _print_calibration(report, output)


def _print_calibration(report: dict, output: Path) -> None:
    from rich.table import Table

    out = _console()
    cal, ev = report["calibration"], report["evaluation"]
    out.print(f"calibrated on {cal['used']} images from {cal['images']} ({cal['skipped']} unreadable skipped), "
              f"method {cal['method']}, {cal['seconds']:.1f} s (total {cal['total_seconds']:.1f} s)")
    for f in cal["skipped_files"]:
        out.print(f"  skipped {f['image']}: {f['reason']}")
    kept = report["fp16"]["fp32_nodes"]
    out.print(f"FP32 kept for {len(kept)} ops" + (":" if kept else " (no measured range needs it)"))
    for k in kept:
        out.print(f"  {k['node']} ({k['op']}): {k['reason']}")
    int8 = report.get("int8")
    if int8:
        out.print(f"INT8: {int8['quantized_layers']} of {int8['candidates']} Conv/MatMul/Gemm layers quantized; "
                  f"{int8['refinement_subgraphs_in_float']} refinement subgraphs left in float for fusion")
        if int8.get("sensitivity"):
            table = Table(title="most sensitive layers (quantized alone)", title_justify="left")
            for col in ("layer", "op", "SQNR dB", "top-1 agr. %"):
                table.add_column(col, justify="left" if col in ("layer", "op") else "right")
            for r in int8["sensitivity"][:10]:
                table.add_row(r["node"], r["op"], f"{r['sqnr_db']:.1f}", f"{r['agreement']:.1f}")
            out.print(table)
        if int8.get("budget"):
            out.print(f"budget {int8['budget']['rule']}: {len(int8['fp16_layers'])} layers left in FP16")
            for k in int8["fp16_layers"]:
                out.print(f"  {k['node']}: {k['reason']}")
    out.print(f"vs FP32 on {ev['images']} images: top-1 agreement {ev['agreement']:.2f}%, cosine "
              f"{ev['cosine']:.6f}, SQNR {ev['sqnr_db']:.2f} dB, max abs error {ev['max_abs']:.4g}")
    cache = report.get("tensorrt_calibration_cache")
    extra = f", {cache['file']}" if cache else ""
    out.print(f"wrote {output}, {output.name}.json{extra}")


@app.command()
@handle_errors
def validate(
    onnx: Annotated[Path, typer.Option("--onnx", help="Graph to check (plain, calibrated or fused).",
                                       dir_okay=False)],
    images: Annotated[Path, typer.Option("--images", help="Images: a folder (searched recursively) or one file.")],
    labels: Annotated[Optional[str], typer.Option("--labels", help="'imagenet-folder' (class = sorted class "
                                                  "folder index) or a file of 'relative/path index' lines; adds "
                                                  "accuracy.")] = None,
    reference: Annotated[str, typer.Option("--reference", help="'torch' (PyTorch FP32 from the checkpoint) or an "
                                           "ONNX file run on ONNX Runtime.")] = "torch",
    checkpoint: CheckpointOpt = None,
    variant: Annotated[Optional[str], typer.Option("--variant", help="Variant, when the graph has no manifest.")]
    = None,
    num: Annotated[Optional[int], typer.Option("--num", min=1, help="Use a seeded sample of this many images "
                                               "(default: all).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 8,
    min_agreement: Annotated[Optional[float], typer.Option("--min-agreement", help="Top-1 agreement threshold, % "
                                                           "(default per precision).")] = None,
    min_cosine: Annotated[Optional[float], typer.Option("--min-cosine", help="Mean cosine threshold.")] = None,
    min_sqnr: Annotated[Optional[float], typer.Option("--min-sqnr", help="Logit SQNR threshold, dB.")] = None,
    max_accuracy_drop: Annotated[Optional[float], typer.Option("--max-accuracy-drop", help="Accuracy drop "
                                                               "threshold, points (with --labels).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a graph's logits against PyTorch FP32 on real images; exit 4 when a threshold fails (a CI gate)."""
    from .validate import validate_onnx

    overrides = {"min_agreement": min_agreement, "min_cosine": min_cosine, "min_sqnr_db": min_sqnr,
                 "max_accuracy_drop": max_accuracy_drop}
    with _phases() as phase:
        report = validate_onnx(onnx, images, labels=labels, reference=reference, checkpoint=checkpoint,
                               variant=variant, num=num, batch_size=batch_size, overrides=overrides, progress=phase)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_validation(report)
    if not report["passed"]:
        typer.echo(f"error: validation failed: {'; '.join(report['failures'])}", err=True)
        raise typer.Exit(4)


def _print_validation(report: dict) -> None:
    from rich.table import Table

    m, t = report["metrics"], report["thresholds"]
    table = Table(title=f"{report['candidate']} ({report['precision']}) vs {report['reference']}",
                  caption=f"{report['images']['used']} images, {report['images']['skipped']} unreadable skipped",
                  title_justify="left")
    for col in ("metric", "value", "threshold"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    table.add_row("top-1 agreement %", f"{m['agreement']:.2f}", f">= {t['min_agreement']}")
    table.add_row("cosine", f"{m['cosine']:.6f}", f">= {t['min_cosine']}")
    table.add_row("SQNR dB", f"{m['sqnr_db']:.2f}", f">= {t['min_sqnr_db']}")
    table.add_row("max abs error", f"{m['max_abs']:.4g}", "")
    if m["accuracy"] is not None:
        table.add_row("accuracy %", f"{m['accuracy']:.2f}", "")
        table.add_row("reference accuracy %", f"{m['reference_accuracy']:.2f}", "")
        table.add_row("accuracy drop (points)", f"{m['accuracy_drop']:.2f}", f"<= {t['max_accuracy_drop']}")
    out = _console()
    out.print(table)
    out.print("PASS" if report["passed"] else "FAIL")


@app.command()
@handle_errors
def info() -> None:
    """Show versions of the packages refiner-edge uses, CUDA devices and nvcc."""
    from .info import environment

    for key, value in environment().items():
        if isinstance(value, list):
            value = "; ".join(value)
        typer.echo(f"{key:24s} {value}")


def run() -> None:  # console-script entry point
    app(prog_name="refiner-edge")


if __name__ == "__main__":
    sys.exit(run())
