"""Native work in a child process, so Ctrl-C stops it: the TensorRT build (engine/backend.py, `child_build`).

In-process, SIGINT cannot stop TensorRT's builder: Python runs its handler only between bytecodes, the builder's
C++ runs for seconds to minutes without returning, and the KeyboardInterrupt raised in its logger callback is caught
and printed by TensorRT ("[ERROR] Exception caught in log(): KeyboardInterrupt") while the build goes on and
succeeds. A thread does not help either: an abandoned builder thread keeps running native code through interpreter
shutdown. So the parent starts `python -m refiner_edge.engine.worker`, hands it the build (pickled on stdin), and
waits; on Ctrl-C it kills the child (SIGKILL: nothing of the child's needs cleaning, it writes only into the run's
scratch folder) and reaps it. Measured on the tiny variant (tests/test_atomic.py): Ctrl-C to exit 130 in under 0.5 s
at any instant of the compile; the child's start costs about 0.3 s per build. When the parent listens to the
build's progress (a terminal), the child's stdin stays open and its end is a cancel request the builder's progress
monitor honours at TensorRT's next step (engine/progress.py); the kill follows CANCEL_GRACE later.

The child is in its own session, so the terminal's Ctrl-C (sent to the foreground process group) reaches only the
parent, which decides; and it dies with the parent (PR_SET_PDEATHSIG), so a killed parent leaves no builder behind.
A child killed by the kernel (out of memory) or crashing is one error line in the parent, not a dead CLI.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib
import logging
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

from ..artifacts import NO_SPACE, deferred_interrupts
from ..errors import RefinerEdgeError
from ..extras import missing_dependency
from ..source import SOURCE_ROOT
from .progress import Event, read_events

PR_SET_PDEATHSIG = 1
NO_SPACE_EXIT = 75   # the child could not even write its result: the disk is full
# Ctrl-C: how long a child with a progress monitor has to stop by itself before it is killed. TensorRT looks at the
# monitor only between steps, and some phases run long without one (TensorRT-RTX's "Determining refit engines"), so
# the kill stays the bound. Measured on a terminal, tiny build (tests/test_build_progress.py): Ctrl-C to exit 130 in
# 0.3-0.4 s with no grace, 0.5-0.6 s with this one, 0.7-0.8 s with 0.3 s
CANCEL_GRACE = 0.15


def run_in_child(function: str, job: dict, result: Path, what: str,
                 progress: Callable[[Event], None] | None = None) -> dict:
    """Run `function(job)` ("module:name", a function of this package returning a dict) in a child process; returns
    its dict, re-raises its RefinerEdgeError, and kills the child on any exception here (KeyboardInterrupt included).
    `what` names the child in errors ("the tensorrt-rtx builder died ...").

    With `progress`, the child finds job["progress_fd"], a pipe whose lines (engine/progress.py) reach `progress` on
    a reader thread, and its stdin stays open until the child ends: closing it asks the child to cancel (the
    builder's progress monitor stops TensorRT), and the child is killed if it has not ended CANCEL_GRACE later."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SOURCE_ROOT),
                                                                     os.environ.get("PYTHONPATH")]))}
    job = {**job, "function": function, "what": what, "result": str(result), "parent": os.getpid(),
           "verbose": logging.getLogger("refiner_edge").isEnabledFor(logging.DEBUG), "progress_fd": None}
    # stdout: the child's logs must not reach the parent's stdout, which is the command's result (--json)
    proc, reader, pipe = None, None, None
    try:
        with deferred_interrupts():   # a Ctrl-C while the child starts would otherwise leave it running unseen
            if progress is not None:
                pipe = os.pipe()
                job["progress_fd"] = pipe[1]
            proc = subprocess.Popen([sys.executable, "-m", "refiner_edge.engine.worker"], stdin=subprocess.PIPE,
                                    stdout=sys.__stderr__.fileno() if sys.__stderr__ else subprocess.DEVNULL,
                                    env=env, start_new_session=True, pass_fds=pipe[1:] if pipe else ())
            if pipe is not None:
                os.close(pipe[1])
                reader = read_events(pipe[0], progress)
                pipe = None
            data = pickle.dumps(job)
            proc.stdin.write(len(data).to_bytes(8, "little") + data)
            proc.stdin.flush()
            if progress is None:
                proc.stdin.close()
        code = proc.wait()
    except BaseException:
        if pipe is not None:   # Popen failed: no reader owns the pipe
            for fd in pipe:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if proc is not None:
            stop(proc, cancel=progress is not None)
        raise
    finally:
        if proc is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()
    if reader is not None:
        reader.join(timeout=1.0)   # the child's last lines, before its result is read
    outcome = _read_result(result)
    if outcome is None:
        if code == NO_SPACE_EXIT:   # the caller (artifacts.staged_outputs) names the output and the space left
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if code < 0:
            name = signal.Signals(-code).name
            hint = ": out of memory? (the kernel kills with SIGKILL)" if -code == signal.SIGKILL else ""
            raise RefinerEdgeError(f"the {what} died ({name}){hint}")
        raise RefinerEdgeError(f"the {what} exited with code {code} and no result (see the log above)")
    if "oserror" in outcome:   # a full disk while it wrote: the caller names the output and the space left
        raise OSError(*outcome["oserror"])
    if "error" in outcome:
        module, name, message = outcome["error"]
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, RefinerEdgeError):
            raise cls(message)
        raise RuntimeError(message)
    return outcome


def stop(proc: subprocess.Popen, cancel: bool) -> None:
    """End the child: ask it to cancel (its stdin closes: the progress monitor's step_complete then returns False and
    TensorRT stops between two steps), and kill it if it has not ended within CANCEL_GRACE, or at once when it has no
    monitor. Another Ctrl-C meanwhile only ends the wait: the child is killed and reaped whatever happens."""
    try:
        if cancel and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
                proc.wait(timeout=CANCEL_GRACE)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _read_result(path: Path) -> dict | None:
    try:
        return pickle.loads(path.read_bytes())
    except (OSError, EOFError, pickle.UnpicklingError):
        return None


def _die_with_parent(parent: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):   # not Linux: the parent's kill on Ctrl-C still applies
        pass
    if os.getppid() != parent:   # the parent died before prctl took effect
        os._exit(1)


def main() -> None:
    try:
        size = int.from_bytes(sys.stdin.buffer.read(8), "little")
        job = pickle.loads(sys.stdin.buffer.read(size))   # stdin stays open: its end is the parent's cancel
    except (EOFError, pickle.UnpicklingError, ValueError):   # the parent stopped before it handed over the job
        sys.exit(1)
    _die_with_parent(job["parent"])
    logging.basicConfig(level=logging.DEBUG if job["verbose"] else logging.WARNING, format="%(levelname)s %(message)s")
    module, name = job["function"].split(":")
    try:
        outcome = getattr(importlib.import_module(module), name)(job)
    except RefinerEdgeError as e:
        outcome = {"error": (type(e).__module__, type(e).__name__, str(e))}
    except ModuleNotFoundError as e:   # an extra not installed: the parent's one line, exit 3
        missing = missing_dependency(e, f"the {job['what']}")
        outcome = ({"error": (type(missing).__module__, type(missing).__name__, str(missing))} if missing is not None
                   else _unexpected(module, e, job["verbose"]))
    except OSError as e:
        if e.errno not in NO_SPACE:
            outcome = _unexpected(module, e, job["verbose"])
        else:
            outcome = {"oserror": (e.errno, e.strerror, e.filename)}
    except Exception as e:
        outcome = _unexpected(module, e, job["verbose"])
    try:
        Path(job["result"]).write_bytes(pickle.dumps(outcome))
    except OSError as e:   # no room for even the result: the exit status says it, not a traceback
        sys.exit(NO_SPACE_EXIT if e.errno in NO_SPACE else 1)


def _unexpected(module: str, e: Exception, verbose: bool) -> dict:
    if verbose:
        import traceback

        traceback.print_exc()
    first = str(e).splitlines()[0] if str(e) else ""
    return {"error": ("refiner_edge.errors", "RefinerEdgeError",
                      f"{module} failed: {type(e).__name__}: {first} (run with -v for the traceback)")}


if __name__ == "__main__":
    main()
