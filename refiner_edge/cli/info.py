"""`refiner-edge info`: what refiner-edge can use on this machine."""
from __future__ import annotations

import typer

from .common import JsonOpt, print_json


def info(as_json: JsonOpt = False) -> None:
    """Show versions of the packages refiner-edge uses, CUDA devices and nvcc."""
    from ..info import environment

    env = environment()
    if as_json:
        print_json(env)
        return
    for key, value in env.items():
        if isinstance(value, list):
            value = "; ".join(value)
        typer.echo(f"{key:24s} {value}")
