"""The `refiner-edge` Typer app: one root callback, one thin command per pipeline stage (each in its own module),
and usage errors as one `error:` line."""
from __future__ import annotations

import logging
import signal
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from .. import __version__
from . import (bench, build, calibrate, deploy, export, fuse, infer, info, inspect, preprocess, refit, serve,
               validate)
from .common import click, handle_errors, state

VERBOSE_FLAGS = ("-v", "--verbose")


class OneLineErrors(TyperGroup):
    """Usage errors (bad option values, missing arguments) as one `error:` line instead of a boxed panel, and
    -v/--verbose accepted after the command too (`refiner-edge export -v ...`)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = hoist_verbose(sys.argv[1:] if args is None else list(args))
        state["reported"] = False
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
            typer.echo("error: interrupted", err=True)
            sys.exit(130)
        if rv == 130 and not state["reported"]:   # Typer's own exit for a Ctrl-C while it parses the options
            typer.echo("error: interrupted", err=True)
        sys.exit(rv if isinstance(rv, int) else 0)


def hoist_verbose(args: list[str]) -> list[str]:
    """Move -v/--verbose before the command, where the root callback reads it (up to a `--`)."""
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if a in VERBOSE_FLAGS]
    return flags + [a for a in args[:end] if a not in VERBOSE_FLAGS] + args[end:]


app = typer.Typer(
    cls=OneLineErrors,
    name="refiner-edge",
    help="Deploy Refiner-ViT: export to ONNX, fuse the attention refinement, calibrate, build and run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no `<bool>` placeholders on flags, defaults shown as [default: ...]
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"refiner-edge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details and show tracebacks (also "
                                          "accepted after the command).")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """refiner-edge: Refiner vision transformers on TensorRT, from PyTorch to Jetson and datacenter GPUs."""
    state["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(message)s")


# In pipeline order, which is the order `--help` lists them in.
for command in (export.export, calibrate.calibrate, fuse.fuse, build.build, refit.refit, infer.infer,
                validate.validate, bench.bench, inspect.inspect, serve.serve, preprocess.preprocess, info.info):
    app.command()(handle_errors(command))
app.add_typer(deploy.deploy_app, name="deploy")


def run() -> None:  # console-script entry point
    # SIGTERM (timeout, docker stop, systemd) is Ctrl-C: the run cleans up (scratch folder, locks) and exits 130;
    # Python's default would end the process at once and leave them behind
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # An ignored SIGINT is left ignored, as Python leaves it: whoever started the command that way (`nohup`, `cmd &`
    # in a script) asked that a Ctrl-C at the terminal spare it. Such a run still stops cleanly on SIGTERM, above.
    try:
        app(prog_name="refiner-edge")
    except KeyboardInterrupt:   # while Typer builds the command, before any command's own handling
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    finally:
        # the command is over, its result written: a Ctrl-C while the interpreter shuts down (which restores the
        # default SIGINT action, death by signal) would otherwise turn a finished run into exit -2
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
