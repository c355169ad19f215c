"""The `refiner-edge` command line: thin commands over the library; domain errors become one line and an exit code."""
from __future__ import annotations

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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = _console(stderr=True)
    if not (show and console.is_terminal):
        return work(lambda n: None)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(label, total=total)
        return work(lambda n: progress.advance(task, n))


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
