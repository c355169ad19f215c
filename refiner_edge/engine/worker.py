"""The TensorRT build in a child process, so Ctrl-C stops it.

In-process, SIGINT cannot stop TensorRT's builder: Python runs its handler only between bytecodes, the builder's
C++ runs for seconds to minutes without returning, and the KeyboardInterrupt raised in its logger callback is caught
and printed by TensorRT ("[ERROR] Exception caught in log(): KeyboardInterrupt") while the build goes on and
succeeds. A thread does not help either: an abandoned builder thread keeps running native code through interpreter
shutdown. So the parent starts `python -m refiner_edge.engine.worker`, hands it the build (pickled on stdin), and
waits; on Ctrl-C it kills the child (SIGKILL: nothing of the child's needs cleaning, it writes only into the run's
scratch folder) and reaps it. Measured on the tiny variant (tests/test_atomic.py): Ctrl-C to exit 130 in under 0.5 s
at any instant of the compile; the child's start costs about 0.3 s per build.

The child is in its own session, so the terminal's Ctrl-C (sent to the foreground process group) reaches only the
parent, which decides; and it dies with the parent (PR_SET_PDEATHSIG), so a killed parent leaves no builder behind.
A child killed by the kernel (out of memory) or crashing is one error line in the parent, not a dead CLI.
"""
from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..artifacts import deferred_interrupts
from ..errors import RefinerEdgeError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1


def build_in_child(job: dict, result: Path) -> dict:
    """Run `run_job(job)` in a child process; returns its result dict, re-raises its RefinerEdgeError, and kills it
    on any exception here (KeyboardInterrupt included)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT),
                                                                     os.environ.get("PYTHONPATH")]))}
    job = {**job, "result": str(result), "parent": os.getpid(),
           "verbose": logging.getLogger("refiner_edge").isEnabledFor(logging.DEBUG)}
    # stdout: the child's logs must not reach the parent's stdout, which is the command's result (--json)
    proc = None
    try:
        with deferred_interrupts():   # a Ctrl-C while the child starts would otherwise leave it running unseen
            proc = subprocess.Popen([sys.executable, "-m", "refiner_edge.engine.worker"], stdin=subprocess.PIPE,
                                    stdout=sys.__stderr__.fileno() if sys.__stderr__ else subprocess.DEVNULL,
                                    env=env, start_new_session=True)
            proc.stdin.write(pickle.dumps(job))
            proc.stdin.close()
        code = proc.wait()
    except BaseException:
        if proc is not None:
            proc.kill()
            proc.wait()
        raise
    outcome = _read_result(result)
    if outcome is None:
        what = f"{job['options'].target.flavour} builder"
        if code < 0:
            name = signal.Signals(-code).name
            hint = ": out of memory? (the kernel kills with SIGKILL)" if -code == signal.SIGKILL else ""
            raise RefinerEdgeError(f"the {what} died ({name}){hint}")
        raise RefinerEdgeError(f"the {what} exited with code {code} and no result (see the log above)")
    if "error" in outcome:
        module, name, message = outcome["error"]
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, RefinerEdgeError):
            raise cls(message)
        raise RuntimeError(message)
    return outcome


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


def run_job(job: dict) -> dict:
    """In the child: build the engine into job['engine'] (and save the timing cache into job['timing_cache'])."""
    from . import plugins
    from .build import engine_bytes

    started = time.perf_counter()
    options, notes = job["options"], []
    cache = options.timing_cache
    if cache is not None and Path(cache).is_file():
        reason = unreadable_timing_cache(options.target.flavour, Path(cache))
        if reason:
            # built on without it and replaced by this build's cache: a cache only saves time, and one that cannot
            # be read would otherwise print TensorRT's errors at every build and never be renewed
            Path(cache).unlink()
            notes.append(f"--timing-cache {job['timing_cache_name']}: {reason}; building without it, and this "
                         "build's cache replaces it")
    plugin = plugins.prepare(**job["plugin"])   # the parent's arguments: the AOT form registers per process
    data = engine_bytes(job["network"], options, plugin)
    Path(job["engine"]).write_bytes(data)
    return {"seconds": time.perf_counter() - started, "bytes": len(data), "notes": notes}


def unreadable_timing_cache(flavour: str, path: Path) -> str | None:
    """Why TensorRT cannot use the timing cache at `path` (None: it can), asked with TensorRT's log captured, so
    that its error lines for a foreign or garbage cache are not printed."""
    import warnings

    from .build import import_tensorrt

    trt = import_tensorrt(flavour)

    class Capture(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[tuple] = []

        def log(self, severity, message):
            self.messages.append((severity, message))

    logger = Capture()
    config = trt.Builder(logger).create_builder_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # TensorRT-RTX marks timing caches deprecated
        config.create_timing_cache(path.read_bytes())
    if any("deserialize" in m or severity == trt.ILogger.Severity.ERROR for severity, m in logger.messages):
        return (f"{flavour} {trt.__version__} cannot read it (not a timing cache, or one made for another GPU, "
                "CUDA or TensorRT version)")
    return None


def main() -> None:
    try:
        job = pickle.loads(sys.stdin.buffer.read())
    except (EOFError, pickle.UnpicklingError):   # the parent stopped before it handed over the job
        sys.exit(1)
    _die_with_parent(job["parent"])
    logging.basicConfig(level=logging.DEBUG if job["verbose"] else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        outcome = run_job(job)
    except RefinerEdgeError as e:
        outcome = {"error": (type(e).__module__, type(e).__name__, str(e))}
    except Exception as e:
        if job["verbose"]:
            import traceback

            traceback.print_exc()
        first = str(e).splitlines()[0] if str(e) else ""
        outcome = {"error": ("refiner_edge.errors", "RefinerEdgeError",
                             f"the builder failed: {type(e).__name__}: {first} (run with -v for the traceback)")}
    Path(job["result"]).write_bytes(pickle.dumps(outcome))


if __name__ == "__main__":
    main()
