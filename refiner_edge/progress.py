"""What a long stage is doing now, said by the library and shown by whoever listens (the CLI on a terminal).

A stage names its phases as it enters them: `phase(label, total)` returns the phase's `tick(n)`, called as n more of
its `total` items are done (total 0: a phase with no count, e.g. one opaque call). Nothing is shown unless a caller
listens (`reporting`), so a library call, a pipe or --json costs nothing. The builder's own phases come from
TensorRT's progress monitor instead (engine/progress.py).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

Tick = Callable[[int], None]
Phase = Callable[[str, int], Tick]   # (label, total) -> tick(n)


def no_phase(label: str, total: int) -> Tick:
    return lambda n: None


_current: contextvars.ContextVar[Phase] = contextvars.ContextVar("refiner_edge_stage_progress", default=no_phase)


@contextlib.contextmanager
def reporting(phase: Phase) -> Iterator[None]:
    """Stages run inside the block report their phases to `phase`."""
    token = _current.set(phase)
    try:
        yield
    finally:
        _current.reset(token)


def phase(label: str, total: int = 0) -> Tick:
    """Enter a phase of the stage running now; returns its tick(n)."""
    return _current.get()(label, total)
