"""What every command shares: one-line errors and exit codes, consoles, notes, progress bars, common options."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

try:  # typer >= 0.22 vendors click; older releases depend on it
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click

from .. import defaults
from ..artifacts import NO_SPACE, hashing_once, no_space_error, space_left
from ..errors import RefinerEdgeError
from ..extras import missing_dependency
from ..models.variants import DEFAULT_VARIANT, VARIANTS

log = logging.getLogger("refiner_edge")
state = {"verbose": False, "reported": False}


def choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum for Typer over the library's own tuple of values, so the CLI states no list of its own."""
    return Enum(name, {v: v for v in values}, type=str)


def console(stderr: bool = False):
    """The one Rich console every command prints through. Markup is off: what it prints holds file names, and
    "holiday [draft].jpg" or "old [/archive]" are names, not styles (Rich would drop or refuse them)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False)


def note(message: str) -> None:
    """A remark about the run (not its result): always on stderr, so stdout stays the result (tables, JSON)."""
    typer.echo(f"note: {message}", err=True)


def fail(message: str, code: int = 1) -> None:
    """Print one line to stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    state["reported"] = True
    raise typer.Exit(code)


def handle_errors(func):
    """Turn domain errors (and, unless --verbose, unexpected ones) into one line on stderr and an exit code;
    Ctrl-C (and SIGTERM, app.run) into 'error: interrupted' and 130, after the artifacts' cleanup has run."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with hashing_once():   # each file a command reads or writes is hashed once (artifacts.py)
                return func(*args, **kwargs)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except (typer.Exit, typer.Abort, click.ClickException):
            raise
        except Exception as e:
            if interrupted(e):   # native code turned the KeyboardInterrupt into its own error: still an interrupt
                fail("interrupted", 130)
            report(e, func.__name__)

    return wrapper


def interrupted(e: BaseException | None) -> bool:
    """Whether `e` comes of a Ctrl-C/SIGTERM: a module whose C++ init is interrupted raises ImportError
    ('initialization failed', pybind11) with the KeyboardInterrupt as its context, which would otherwise read as a
    missing package (exit 3)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def report(e: Exception, command: str) -> None:
    """One line and the exit code for an exception out of `command` (called where it was caught)."""
    if isinstance(e, RefinerEdgeError):
        fail(str(e), e.exit_code)
    if isinstance(e, OSError):
        if e.errno in NO_SPACE and not state["verbose"]:
            # a full disk where the library did not name the output (shutil.copyfile names its source first)
            name = e.filename2 or e.filename
            fail(str(no_space_error(name, e)) if name else f"{e.strerror} ({space_left(Path.cwd(), e.errno)})", 2)
        if e.filename is None or state["verbose"]:
            unexpected(e)
        # a file the user named that the system refuses (a name too long, a folder that is a file, ...): the
        # paths a command reads and writes are the user's, and checks cannot foresee every errno
        name = str(e.filename)
        fail(f"{name if len(name) <= 80 else name[:60] + '...' + name[-16:]}: {e.strerror}", 2)
    if isinstance(e, ModuleNotFoundError):   # an optional package (torch, tensorrt ...): name the extra, exit 3
        missing = missing_dependency(e, f"'{command.replace('_', ' ')}'")
        if missing is None:
            unexpected(e)
        fail(str(missing), missing.exit_code)
    unexpected(e)


def unexpected(e: Exception) -> None:
    """A bug: its traceback with --verbose, else one line."""
    if state["verbose"]:
        raise e
    first = str(e).splitlines()[0] if str(e) else ""
    fail(f"unexpected {type(e).__name__}: {first} (run with -v for the traceback)", 1)


@contextlib.contextmanager
def phases(show: bool = True):
    """Yield phase(label, total) -> tick(n): one progress bar per phase of a long job, on stderr terminals only."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    err = console(stderr=True)
    if not (show and terminal()):
        yield lambda label, total: (lambda n: None)
        return
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        def phase(label: str, total: int):
            task = progress.add_task(label, total=total or None)
            return lambda n: progress.advance(task, n)

        yield phase


@contextlib.contextmanager
def status(message: str):
    """A spinner on stderr terminals for one step of unknown length."""
    err = console(stderr=True)
    if not err.is_terminal:
        yield
        return
    from rich.text import Text

    with err.status(Text(message)):   # a Text, not a str: the spinner would read a str as markup
        yield


def terminal() -> bool:
    """Whether both stdout and stderr are terminals, as Rich sees them (FORCE_COLOR counts): only then is a live
    line drawn (a pipe, a file, or a result taken from stdout gets nothing beyond what the command prints)."""
    return console().is_terminal and console(stderr=True).is_terminal


@contextlib.contextmanager
def activity(label: str, show: bool = True):
    """One step of unknown length, on terminals (both stdout and stderr) only: the time it has run, `label`, and
    what the stage inside says it does: the phase a stage entered with its items done (refiner_edge/progress.py:
    export, calibration, fuse's check), or a builder's open phases and their steps (engine/progress.py, TensorRT's
    progress monitor). Never a percentage: no stage knows how much of it is left. Elsewhere, and with show=False
    (--json), nothing at all, and the builder runs without a progress monitor."""
    if not (show and terminal()):
        yield
        return
    from rich.progress import Progress, ProgressColumn
    from rich.table import Column
    from rich.text import Text

    from .. import progress as stage_progress
    from ..engine import progress as build_progress

    class Line(ProgressColumn):
        """The clock, the label and the phases as one text cut at the terminal's edge (as separate columns, Rich
        drops the clock to fit a long phase name on a narrow terminal); the ticking clock says the step is alive."""

        def __init__(self):
            super().__init__(table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1))

        def render(self, task):
            seconds = int(task.finished_time if task.finished else task.elapsed or 0)
            clock = f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
            phase = task.fields.get("phase")
            return Text(f"{clock} {task.description}" + (f"  {phase}" if phase else ""), no_wrap=True,
                        overflow="ellipsis")

    phases = build_progress.Phases()
    with Progress(Line(), console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None, phase="")

        def show_phase(event) -> None:   # on the reader thread; Rich's Progress takes its own lock
            phases.update(event)
            bar.update(task, phase=phases.line())

        def stage_phase(name: str, total: int):
            done = [0]

            def tick(n: int) -> None:
                done[0] += n
                bar.update(task, phase=f"{name} {done[0]}/{total}")

            bar.update(task, phase=f"{name} 0/{total}" if total else name)
            return tick if total else (lambda n: None)

        with build_progress.listening(show_phase), stage_progress.reporting(stage_phase):
            yield


def print_json(data) -> None:
    from .. import strict_json

    typer.echo(strict_json.dumps(data, indent=2, default=str))


def output_file(value: str) -> Path:
    """-o FILE as typed: Path() would drop a trailing slash, which names a folder, and the run would write a file
    with the folder's name. The rest (not a device, not an input, a writable folder) is artifacts.check_outputs."""
    if value.endswith(("/", os.sep)):
        raise typer.BadParameter(f"'{value}' ends in '/', which names a folder: give a file name inside it")
    if not value:
        raise typer.BadParameter("an empty name: give a file name")
    return Path(value)


VariantOpt = Annotated[Optional[str], typer.Option(
    "--variant", help="refiner-vit-s, refiner-vit-m, refiner-vit-l or refiner-vit-tiny (test-sized) "
    f"[default: {DEFAULT_VARIANT}].", show_default=False)]
CheckpointOpt = Annotated[Optional[Path], typer.Option(
    "--checkpoint", help="Official checkpoint (.pth/.pth.tar timm dict, bare state dict or .safetensors) "
    "[default: none: random weights].", dir_okay=False)]
ImgSizeOpt = Annotated[Optional[int], typer.Option(
    "--img-size", help=f"Input resolution, a positive multiple of {VARIANTS[DEFAULT_VARIANT].patch_size} [default: the "
    f"variant's, {VARIANTS[DEFAULT_VARIANT].img_size} for S/M/L].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per forward pass (fewer "
                                                     "for an ONNX graph whose activations would pass 1 GB) "
                                                     f"[default: {defaults.RUN_BATCH_SIZE}].")]
