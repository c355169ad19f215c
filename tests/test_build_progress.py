"""Progress during the compile: the builder's phases (TensorRT-RTX's IProgressMonitor, in the builder's child process)
reach the parent, a terminal shows the open phases and an elapsed clock, anything else gets nothing extra, and
Ctrl-C still ends the build at once (the monitor's cancel, then the kill).

The builds are real TensorRT-RTX builds of the tiny graph on the CPU; the terminal is a real pseudo-terminal (pty).
"""
import importlib.util
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from refiner_edge.engine import progress, worker
from refiner_edge.engine.build import build_engine
from refiner_edge.engine.plan import BuildOptions
from refiner_edge.engine.targets import get_target

from .helpers import default_sigint

ROOT = Path(__file__).resolve().parents[1]
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")
CLI = textwrap.dedent("""
    import sys
    from refiner_edge.cli import run
    sys.argv = ["refiner-edge", *sys.argv[1:]]
    run()
""")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm", "COLUMNS": "200", "LINES": "40"}
for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE"):   # the streams alone say whether they are terminals
    ENV.pop(name, None)
CLOCK = re.compile(r"\d:\d\d:\d\d ")


def build_args(onnx: Path, out: Path) -> list[str]:
    return ["build", "--onnx", str(onnx), "--target", "rtx-sm89", "--batch", "1:2:4", "-o", str(out)]


def phase_line(label: str) -> re.Pattern:
    """The live line once the builder reported a phase: clock, label, then the phases (a capital letter first)."""
    return re.compile(CLOCK.pattern + re.escape(label) + r" \.\.\.  [A-Z]")


class Terminal:
    """The CLI on a pseudo-terminal (stdout and stderr both a tty), its output read as it comes."""

    def __init__(self, *args: str):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:   # the child: the CLI, with Ctrl-C's default disposition whatever this process inherited
            default_sigint()
            os.execve(sys.executable, [sys.executable, "-c", CLI, *args], ENV)
        self.output = b""
        self.code: int | None = None

    def read_until(self, pattern: re.Pattern | None, timeout: float) -> bool:
        """Read until `pattern` shows in the output (True) or the CLI's end / the timeout (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pattern is not None and pattern.search(self.text()):
                return True
            ready, _, _ = select.select([self.fd], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:   # EIO: the CLI ended and closed the terminal
                break
            if not data:
                break
            self.output += data
        return bool(pattern is not None and pattern.search(self.text()))

    def wait(self, timeout: float = 120) -> int:
        self.read_until(None, timeout)
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def text(self) -> str:
        return self.output.decode("utf-8", "replace").replace("\r\n", "\n")


def children(pid: int) -> list[int]:
    """The builder processes (engine/worker.py) `pid` has started."""
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    def is_worker(kid: int) -> bool:
        try:
            return b"refiner_edge.engine.worker" in Path(f"/proc/{kid}/cmdline").read_bytes()
        except OSError:
            return False
    return [kid for kid in kids if is_worker(kid)]


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# --- what the monitor reports, and what a line shows -------------------------------------------------------------

def test_the_line_shows_the_innermost_open_phases_and_their_steps():
    phases = progress.Phases()
    lines = ["start\tBuilding engine\t\t6", "start\tCloning network graph\tBuilding engine\t555",
             "step\tCloning network graph\t554", "finish\tCloning network graph",
             "start\tComputing profile costs\tBuilding engine\t5", "step\tComputing profile costs\t2",
             "start\tDetermining refit engines\tComputing profile costs\t1", "not\ta line", "step\tx\tnot a number"]
    for line in lines:
        event = progress.parse(line)
        if event is not None:
            phases.update(event)
    assert phases.line() == "Computing profile costs 3/5 > Determining refit engines"
    assert phases.line(depth=3) == "Building engine 0/6 > Computing profile costs 3/5 > Determining refit engines"
    assert phases.seen == ["Building engine", "Cloning network graph", "Computing profile costs",
                           "Determining refit engines"]
    for name in ("Determining refit engines", "Computing profile costs", "Building engine"):
        phases.update(progress.Event("finish", name))
    assert phases.line() == ""


@pytest.mark.slow
@rtx
def test_the_builders_phases_reach_the_parent(tmp_path, tiny_plain):
    events: list[progress.Event] = []
    with progress.listening(events.append):
        build_engine(tiny_plain, tmp_path / "t.engine", BuildOptions(target=get_target("rtx-sm89")))
    assert (tmp_path / "t.engine").is_file()
    starts = [e for e in events if e.kind == "start"]
    assert starts and starts[0].parent is None and starts[0].steps > 0, events[:3]
    root = starts[0].phase
    assert events[-1] == progress.Event("finish", root), events[-3:]   # every line arrived before the build returned
    assert len({e.phase for e in starts}) >= 3, [e.phase for e in starts]
    assert all(e.parent in {s.phase for s in starts} for e in starts[1:]), starts
    phases = progress.Phases()
    for event in events:
        phases.update(event)
    assert phases.open == {}   # every phase started also finished
    # with no one listening, the build runs without a monitor and nothing is reported
    with progress.listening(events.append):
        pass
    count = len(events)
    build_engine(tiny_plain, tmp_path / "u.engine", BuildOptions(target=get_target("rtx-sm89")))
    assert len(events) == count


@pytest.fixture
def python_sigint():
    """Python's own KeyboardInterrupt handler for the test, also where this run was started with SIGINT ignored
    (`nohup`, `cmd &` in a script), which Python keeps."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@rtx
def test_the_monitor_cancels_the_build_by_itself(tmp_path, tiny_plain, monkeypatch, python_sigint):
    """Ctrl-C with a monitor: the child, asked to cancel, stops TensorRT at its next step and ends by itself. The
    grace before the kill is made long here, so an end within it is the monitor's doing."""
    monkeypatch.setattr(worker, "CANCEL_GRACE", 60.0)
    sent: list[float] = []

    def interrupt_once(event: progress.Event) -> None:   # a real SIGINT to the main thread, at the compile's start
        if not sent and event.kind == "start":
            sent.append(time.monotonic())
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    out = tmp_path / "o" / "t.engine"
    with pytest.raises(KeyboardInterrupt), progress.listening(interrupt_once):
        build_engine(tiny_plain, out, BuildOptions(target=get_target("rtx-sm89")))
    took = time.monotonic() - sent[0]
    assert took < 30, f"the child did not end by itself after the cancel ({took:.1f} s: killed after the grace)"
    assert not out.parent.exists() or not any(out.parent.iterdir())


# --- the terminal, and everything else ---------------------------------------------------------------------------

@rtx
def test_a_terminal_shows_the_phases_and_the_clock(tmp_path, tiny_plain):
    out = tmp_path / "t.engine"
    term = Terminal(*build_args(tiny_plain, out))
    shown = term.read_until(phase_line(f"building {tiny_plain.name} for rtx-sm89"), timeout=120)
    code = term.wait()
    assert code == 0, term.text()
    assert shown, term.text()
    assert f"wrote {out}" in term.text()


@rtx
def test_nothing_extra_without_a_terminal(tmp_path, tiny_plain):
    out = tmp_path / "t.engine"
    done = subprocess.run([sys.executable, "-c", CLI, *build_args(tiny_plain, out)], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines() == [f"    build: {out}", done.stdout.splitlines()[-1]]
    assert done.stdout.splitlines()[-1].startswith(f"wrote {out} (")


@rtx
def test_json_on_a_terminal_prints_only_the_json(tmp_path, tiny_plain):
    out = tmp_path / "t.engine"
    term = Terminal(*build_args(tiny_plain, out), "--json")
    assert term.wait() == 0, term.text()
    assert "\x1b" not in term.text() and not CLOCK.search(term.text()), term.text()
    assert json.loads(term.text())["engine"] == str(out)


@rtx
def test_ctrl_c_on_a_terminal_during_the_compile_exits_130_at_once(tmp_path, tiny_plain):
    """The monitor is on (a terminal): Ctrl-C once the builder reports its phases ends the CLI within a second,
    with the builder gone, one line, and nothing written."""
    out = tmp_path / "o" / "t.engine"
    term = Terminal(*build_args(tiny_plain, out))
    compiling = term.read_until(phase_line(f"building {tiny_plain.name} for rtx-sm89"), timeout=120)
    builders = children(term.pid)
    sent = time.monotonic()
    os.kill(term.pid, signal.SIGINT)
    code = term.wait()
    took = time.monotonic() - sent
    assert compiling and builders, term.text()
    assert code == 130, term.text()
    print(f"Ctrl-C -> exit 130 in {took:.2f} s")
    assert took < 1.0, f"{took:.2f} s"
    assert not any(running(b) for b in builders), "the builder outlived Ctrl-C"
    text = term.text()
    assert text.rstrip().splitlines()[-1].endswith("error: interrupted"), text
    assert "Traceback" not in text and "BuildCanceled" not in text and "Invalid Engine" not in text, text
    assert not out.parent.exists() or not any(out.parent.iterdir())


# --- the other long stages: export, calibration, fuse's check ----------------------------------------------------

def test_calibration_and_fuse_name_their_phases_to_a_listener(tmp_path, tiny_plain, sample_photos):
    """The library's stages say what they do to whoever listens (refiner_edge/progress.py), and only then."""
    from refiner_edge import progress as stage_progress
    from refiner_edge.precision.calibrate import CalibrateOptions, calibrate_onnx

    said: list[tuple[str, int]] = []
    ticks: list[int] = []

    def phase(label: str, total: int):
        said.append((label, total))
        return ticks.append

    with stage_progress.reporting(phase):
        calibrate_onnx(tiny_plain, sample_photos[0].parent, tmp_path / "t.fp16.onnx",
                       CalibrateOptions(precision="fp16"))
    labels = [label for label, _ in said]
    assert labels[0] == "decoding images" and any(label.startswith("calibrating") for label in labels), said
    assert sum(ticks) >= 2 * len(sample_photos), ticks   # each photograph decoded and run once at least
    said.clear()
    calibrate_onnx(tiny_plain, sample_photos[0].parent, tmp_path / "u.fp16.onnx", CalibrateOptions(precision="fp16"))
    assert said == []   # no one listens: nothing said
    pytest.importorskip("onnxruntime_extensions", reason="fuse's check needs the reference RefinerDLA op")
    from refiner_edge.refine.fuse import fuse_onnx

    with stage_progress.reporting(phase):
        fuse_onnx(tiny_plain, tmp_path / "t.fused.onnx", verify=True)
    assert said == [("checking the fused graph against the plain one on ONNX Runtime", 0)]


@pytest.mark.slow
@pytest.mark.torch
def test_a_terminal_shows_the_exports_phases_and_clock(tmp_path):
    out = tmp_path / "t.onnx"
    term = Terminal("export", "--variant", "refiner-vit-tiny", "-o", str(out))
    shown = term.read_until(re.compile(CLOCK.pattern + re.escape(f"exporting refiner-vit-tiny@64 to {out} ...") +
                                       r"  checking the graph against PyTorch on ONNX Runtime"), timeout=120)
    assert term.wait() == 0, term.text()
    assert shown, term.text()
    term = Terminal("export", "--variant", "refiner-vit-tiny", "-o", str(tmp_path / "u.onnx"), "--json")
    assert term.wait() == 0, term.text()
    assert "\x1b" not in term.text() and not CLOCK.search(term.text()), term.text()


def test_the_live_line_takes_file_names_as_text(monkeypatch, capsys):
    """On a terminal (FORCE_COLOR makes Rich treat both streams as one) the label and the phase hold names, not
    markup, and the stage's phase reaches the line."""
    from refiner_edge import progress as stage_progress
    from refiner_edge.cli.common import activity

    monkeypatch.setenv("FORCE_COLOR", "1")
    with activity("exporting to x [/y]/c.onnx ..."):
        stage_progress.phase("reading old [/archive]", 2)(1)
        time.sleep(0.3)   # Rich redraws at 10 Hz
    err = capsys.readouterr().err
    assert "exporting to x [/y]/c.onnx ...  reading old [/archive] 1/2" in err, err
    with activity("exporting to x [/y]/c.onnx ...", show=False):   # --json
        stage_progress.phase("reading", 2)(1)
    assert capsys.readouterr().err == ""
