"""The builder's progress, from TensorRT's IProgressMonitor in the child process (engine/worker.py) to the parent.

TensorRT (10 and later) and TensorRT-RTX call an IProgressMonitor when a phase of the build starts, at each of its
steps, and when it finishes. Those callbacks cover only part of a build: TensorRT-RTX spends most of it in the one
step of "Determining refit engines" (S@224 on the CPU: 2.5 of 2.9 s), and no callback tells how long what is left
takes. So this says only what is real: the phases open now, the step each is at, and how long the build has run;
never a percentage.

The child's monitor writes one short text line per event to a pipe the parent reads (`Listener`): a phase's start
(with its parent phase and its number of steps) and finish always, a step at most every STEP_INTERVAL seconds,
which keeps the pipe's traffic to a few hundred lines even for a build of thousands of steps. The same monitor is the
builder's cancel: step_complete returns False once the parent closes the child's stdin (Ctrl-C), and TensorRT stops.

The monitor is installed only when someone listens (the CLI on a terminal, a caller that passes `listening`), so
--json, a pipe or a log file build exactly as without it. benchmarks/build_progress.py measures what it costs.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

STEP_INTERVAL = 0.1     # seconds between two step lines: a terminal redraws at 10 Hz
CANCEL_INTERVAL = 0.02  # seconds between two looks at the cancel pipe (a select call) from step_complete

_listener: contextvars.ContextVar[Callable[["Event"], None] | None] = contextvars.ContextVar(
    "refiner_edge_build_progress", default=None)


@dataclass(frozen=True)
class Event:
    """One thing the monitor reported: kind is 'start' (a phase opens: parent phase, steps), 'step' (the phase's
    step just completed, from 0) or 'finish'."""

    kind: str
    phase: str
    parent: str | None = None
    steps: int = 0
    step: int = 0


@contextlib.contextmanager
def listening(callback: Callable[[Event], None]) -> Iterator[None]:
    """Builds started inside the block report their progress to `callback` (called on a reader thread)."""
    token = _listener.set(callback)
    try:
        yield
    finally:
        _listener.reset(token)


def listener() -> Callable[[Event], None] | None:
    return _listener.get()


# --- the parent: read the child's lines ----------------------------------------------------------------------------

def parse(line: str) -> Event | None:
    """A line of the child's (tab-separated: kind, phase, then start's parent and steps or step's index)."""
    parts = line.rstrip("\n").split("\t")
    try:
        if parts[0] == "start" and len(parts) == 4:
            return Event("start", parts[1], parts[2] or None, steps=int(parts[3]))
        if parts[0] == "step" and len(parts) == 3:
            return Event("step", parts[1], step=int(parts[2]))
        if parts[0] == "finish" and len(parts) == 2:
            return Event("finish", parts[1])
    except ValueError:
        pass
    return None


def read_events(fd: int, callback: Callable[[Event], None]) -> threading.Thread:
    """Read the child's lines from `fd` on a daemon thread, calling `callback` for each event, until the child closes
    its end (it exits). A callback's exception ends the reading, not the build: progress is only shown."""
    def run() -> None:
        with open(fd, "r", encoding="utf-8", errors="replace") as lines:
            try:
                for line in lines:
                    event = parse(line)
                    if event is not None:
                        callback(event)
            except Exception:
                for _ in lines:   # keep draining so the child never blocks on a full pipe
                    pass

    thread = threading.Thread(target=run, name="build-progress", daemon=True)
    thread.start()
    return thread


@dataclass
class Phases:
    """The phases open now, from the events in order: what a line on the terminal shows."""

    open: dict[str, list[int]] = field(default_factory=dict)   # phase -> [step completed + 1, steps]
    seen: list[str] = field(default_factory=list)               # every phase started, in order (once each)

    def update(self, event: Event) -> None:
        if event.kind == "start":
            self.open.pop(event.phase, None)
            self.open[event.phase] = [0, event.steps]
            if event.phase not in self.seen:
                self.seen.append(event.phase)
        elif event.kind == "step" and event.phase in self.open:
            self.open[event.phase][0] = event.step + 1
        elif event.kind == "finish":
            self.open.pop(event.phase, None)

    def line(self, depth: int = 2) -> str:
        """The innermost `depth` open phases, outer first, each with its steps done where it has several:
        'Computing profile costs 3/5 > Determining refit engines'."""
        shown = list(self.open.items())[-depth:]
        return " > ".join(f"{name} {done}/{steps}" if steps > 1 else name for name, (done, steps) in shown)


# --- the child: the monitor ------------------------------------------------------------------------------------------

def monitor(trt, fd: int, cancel_fd: int | None):
    """An IProgressMonitor of `trt` (tensorrt or tensorrt_rtx) writing events to `fd`; its step_complete returns False
    (TensorRT then stops the build) once `cancel_fd` is readable: data, or end of file when the parent closed it."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.lock = threading.Lock()   # TensorRT may call from several of its threads
            self.last_step = 0.0
            self.last_look = 0.0
            self.cancelled = False
            self.broken = False
            self.calls = 0          # callbacks, and the seconds spent in them: what the monitor costs the build
            self.seconds = 0.0

        def send(self, text: str) -> None:
            if self.broken:
                return
            try:
                os.write(fd, text.encode("utf-8", "replace"))
            except OSError:   # the parent stopped reading: build on, silently
                self.broken = True

        def phase_start(self, phase_name, parent_phase, num_steps):
            started = time.perf_counter()
            with self.lock:
                self.send(f"start\t{clean(phase_name)}\t{clean(parent_phase or '')}\t{int(num_steps)}\n")
                self.count(started)

        def count(self, started: float) -> None:
            self.calls += 1
            self.seconds += time.perf_counter() - started

        def step_complete(self, phase_name, step):
            now = time.monotonic()
            started = time.perf_counter()
            with self.lock:
                if now - self.last_step >= STEP_INTERVAL:
                    self.last_step = now
                    self.send(f"step\t{clean(phase_name)}\t{int(step)}\n")
                if cancel_fd is not None and not self.cancelled and now - self.last_look >= CANCEL_INTERVAL:
                    self.last_look = now
                    try:
                        self.cancelled = bool(select.select([cancel_fd], [], [], 0)[0])
                    except (OSError, ValueError):
                        self.cancelled = True
                    if self.cancelled:
                        silence()
                self.count(started)
                return not self.cancelled

        def phase_finish(self, phase_name):
            started = time.perf_counter()
            with self.lock:
                self.send(f"finish\t{clean(phase_name)}\n")
                self.count(started)

    return Monitor()


def silence() -> None:
    """After a cancel, the child's stdout and stderr (the parent's stderr) go nowhere: TensorRT's 'BuildCanceled'
    error and Polygraphy's 'Invalid Engine' would otherwise print after the parent's 'error: interrupted'."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
    except OSError:
        pass


def clean(name: str) -> str:
    return " ".join(str(name).split())   # one line, no tabs: the line format's separators
