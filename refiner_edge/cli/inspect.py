"""`refiner-edge inspect`: an engine's I/O, profiles, precision, plugin form, sizes and device memory from its
manifest, and TensorRT's layer list where it can deserialize the engine (engine/inspect.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..defaults import INSPECT_LAYERS
from .common import JsonOpt, print_json


def inspect(
    engine: Annotated[Path, typer.Argument(help="Engine made by `refiner-edge build` (its manifest beside it).",
                                           dir_okay=False)],
    layers: Annotated[Optional[bool], typer.Option("--layers/--no-layers", help="Ask TensorRT's engine inspector "
                                                   "for the layer list (needs the engine's TensorRT and a GPU it "
                                                   "runs on; skipped with the reason otherwise) [default: "
                                                   f"{'' if INSPECT_LAYERS else 'no-'}layers].",
                                                   show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show an engine's facts (trtexec --dumpLayerInfo, polygraphy inspect model): from its manifest, without
    TensorRT, plus the layer list where TensorRT can load it."""
    from ..engine.inspect import inspect_engine, print_facts

    facts = inspect_engine(engine, layers=layers)
    if as_json:
        print_json(facts)
        return
    print_facts(facts, typer.echo)
