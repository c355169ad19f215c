"""The chain at the cost of its work: each file hashed once per command, the plugin prepared once per chain, and
what killed runs leave (scratch folders, a deploy's temporary folder) removed by the next run, never a live run's."""
import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from refiner_edge import artifacts

from .helpers import invoke

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")
TINY_CHAIN = ("build", "--variant", "refiner-vit-tiny", "--target", "rtx-sm89", "--json")


def count_hashing(monkeypatch) -> Counter:
    """Each real read of a file for its SHA-256, by the file's identity (a staged file keeps its inode when it is
    published, so it stays one file)."""
    counts: Counter = Counter()
    real = artifacts._sha256

    def spy(f):
        st = os.fstat(f.fileno())
        counts[(st.st_dev, st.st_ino, Path(f.name).name)] += 1
        return real(f)

    monkeypatch.setattr(artifacts, "_sha256", spy)
    return counts


def hashed_more_than_once(counts: Counter) -> dict:
    return {name: n for (_, _, name), n in counts.items() if n > 1}


@rtx
@pytest.mark.torch
def test_the_chain_hashes_each_file_once(tmp_path, monkeypatch, sample_photos):
    """export -> calibrate (int8, with its cache) -> build: every stage file, its manifest checks and the stage keys
    ask for the same SHA-256s several times; each file is read once per command, made or reused."""
    images = tmp_path / "images"
    images.mkdir()
    for photo in sample_photos:
        (images / photo.name).symlink_to(photo)
    out = tmp_path / "out" / "t.engine"
    args = (*TINY_CHAIN, "--precision", "int8", "--calib-images", images, "-o", out)
    counts = count_hashing(monkeypatch)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    names = {name for _, _, name in counts}
    # the stage files and the calibration images were all hashed, each once (t.onnx in the export's child, which
    # wrote its manifest: the parent takes that digest)
    assert {"t.int8.onnx", "t.engine", *(p.name for p in sample_photos)} <= names, names
    assert hashed_more_than_once(counts) == {}
    counts.clear()
    again = invoke(*args)   # every stage reused: each published file is checked, once
    assert again.exit_code == 0, again.output
    assert {"t.onnx", "t.int8.onnx", "t.engine"} <= {name for _, _, name in counts}
    assert hashed_more_than_once(counts) == {}


def test_a_file_changed_between_commands_is_hashed_again(tmp_path):
    """The digests last one command: a file rewritten in place with the same size, even within the file system's
    timestamp granularity, has its new SHA-256 in the next command."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    with artifacts.hashing_once():
        first = artifacts.file_sha256(path)
        assert artifacts.file_sha256(path) == first
        replaced = tmp_path / "g.bin"
        replaced.write_bytes(b"b" * 100)
        os.replace(replaced, path)   # a new file at the same path: a new inode, read again
        assert artifacts.file_sha256(path) != first
    with open(path, "r+b") as f:   # in place, same size, same inode
        f.write(b"c")
    assert artifacts.file_sha256(path) == hashlib.sha256(b"c" + b"b" * 99).hexdigest()


SPY_PREPARE = '''
import os
import signal
import subprocess
import sys
import time
from refiner_edge.engine import plugins

_real = plugins.prepare


def prepare(*args, **kwargs):
    with open(os.environ["REFINER_EDGE_TEST_PREPARED"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    return _real(*args, **kwargs)


plugins.prepare = prepare
'''


@rtx
@pytest.mark.torch
def test_the_chain_prepares_the_plugin_once(tmp_path, monkeypatch):
    """The plugin is prepared by the builder's child and nowhere else: counted in every process of the chain (the
    parent, the export's child, the builder's child) by a sitecustomize on their path that wraps the real one."""
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(SPY_PREPARE)
    log = tmp_path / "prepared.log"
    monkeypatch.setenv("REFINER_EDGE_TEST_PREPARED", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(spy), os.environ.get("PYTHONPATH")])))
    from refiner_edge.engine import plugins

    in_parent: list = []
    real = plugins.prepare
    monkeypatch.setattr(plugins, "prepare", lambda *a, **k: in_parent.append(a) or real(*a, **k))
    result = invoke(*TINY_CHAIN, "--precision", "fp16", "-o", tmp_path / "t.engine")
    assert result.exit_code == 0, result.output
    children = log.read_text().split()
    assert in_parent == [] and len(children) == 1 and int(children[0]) != os.getpid()


# --- what killed runs leave is removed by the next run, never what a live run holds ------------------------------

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
HOLD = """
import sys
from refiner_edge.artifacts import scratch_folder
with scratch_folder(sys.argv[1]) as scratch:
    print(scratch, flush=True)
    sys.stdin.read()   # held until the test closes stdin
"""


def scratch_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(artifacts.SCRATCH_PREFIX))


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILL the run (and its process group: what the kernel's out-of-memory killer or `kill -9` does to it) once
    `ready()` holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def live_scratch(folder: Path) -> tuple[subprocess.Popen, Path]:
    """Another run's scratch folder in `folder`, held while the test runs."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=ENV)
    return proc, Path(proc.stdout.readline().strip())


def chain(out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *TINY_CHAIN[:-1], *extra, "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)


def staged(folder: Path, *names: str) -> bool:
    """A run's scratch folder holds each of `names`, somewhere inside it (a stage's own scratch nests in it)."""
    return any(all(any(s.rglob(n)) for n in names) for s in scratch_in(folder))


@rtx
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("when", ["calibrate", "build"])
def test_a_chain_killed_mid_stage_is_cleaned_by_the_next_run(tmp_path, when):
    """SIGKILL while the chain calibrates (in the process) or builds (in the builder's child): its scratch folder
    and locks stay; the next chain into the folder removes them, and leaves another live run's scratch alone."""
    out = tmp_path / "t.engine"
    precision = ["--precision", "int8"] if when == "calibrate" else ["--precision", "fp32"]
    killed = chain(out, *precision)
    # calibrate: its own scratch folder open inside the chain's, the export published there; build: the export
    # published and the builder's child started (its result file is the last thing it writes)
    ready = (lambda: staged(tmp_path, "t.onnx.json") and any(len(scratch_in(s)) for s in scratch_in(tmp_path))) \
        if when == "calibrate" else (lambda: staged(tmp_path, "t.onnx.json", ".owner") and
                                     any(any(s.glob("*.engine")) or len(scratch_in(s)) for s in scratch_in(tmp_path)))
    kill_when(killed, ready)
    left = scratch_in(tmp_path)
    assert left and any(p.name.endswith(".lock") for p in tmp_path.iterdir())
    holder, held = live_scratch(tmp_path)
    try:
        again = chain(out, *precision)
        _, err = again.communicate(timeout=300)
        assert again.returncode == 0, err
        assert not any(p.exists() for p in left), left
        assert held.is_dir() and (held / artifacts.SCRATCH_OWNER).exists()
        assert scratch_in(tmp_path) == [held]
        assert not any(p.name.endswith(".lock") for p in tmp_path.iterdir())
    finally:
        holder.communicate("")
    assert scratch_in(tmp_path) == []


def test_a_deploy_folder_killed_while_published_is_cleaned_by_the_next_publish(tmp_path):
    """publish_files builds the folder in a held scratch folder beside it: a run killed there leaves it to the next
    run, which sweeps it; the entry an earlier publish moved aside lies in that scratch folder too."""
    out = tmp_path / "repo"
    artifacts.publish_files(out, {"m/config.pbtxt": "old"})
    script = f"""
import os, signal
from pathlib import Path
from refiner_edge import artifacts
def killed_midway(tmp, out, aside):   # failure injection: the run dies once the old entry is moved aside
    os.replace(out / "m", aside / ".m.old")
    os.kill(os.getpid(), signal.SIGKILL)
artifacts._publish_entries = killed_midway
artifacts.publish_files(Path({str(out)!r}), {{"m/config.pbtxt": "new"}})
"""
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = scratch_in(tmp_path)
    assert len(left) == 1 and (left[0] / "repo" / "m" / "config.pbtxt").read_text() == "new"
    assert (left[0] / ".m.old" / "config.pbtxt").read_text() == "old"
    holder, held = live_scratch(tmp_path)
    try:
        artifacts.publish_files(out, {"m/config.pbtxt": "newer"})
        assert scratch_in(tmp_path) == [held]
    finally:
        holder.communicate("")
    assert (out / "m" / "config.pbtxt").read_text() == "newer" and sorted(os.listdir(out)) == ["m"]
    assert scratch_in(tmp_path) == []


def test_a_write_probe_left_by_a_killed_run_is_swept_once_stale(tmp_path):
    """check_outputs' probe file lives for microseconds: one a minute old is a killed run's; a fresh one may be a
    live run's and stays."""
    old, fresh = tmp_path / (artifacts.SCRATCH_PREFIX + "old"), tmp_path / (artifacts.SCRATCH_PREFIX + "new")
    old.write_bytes(b"")
    fresh.write_bytes(b"")
    stale = time.time() - artifacts.PROBE_STALE_S - 1
    os.utime(old, (stale, stale))
    artifacts.sweep(tmp_path)
    assert not old.exists() and fresh.exists()


@rtx
@pytest.mark.torch
def test_a_terminal_shows_the_chains_export_phases_from_its_child(tmp_path):
    """The export runs in a child; its phases still reach the live line, as the builder's do."""
    import re

    from .test_build_progress import CLOCK, Terminal

    out = tmp_path / "t.engine"
    term = Terminal(*TINY_CHAIN[:-1], "--precision", "fp32", "-o", str(out))
    shown = term.read_until(re.compile(CLOCK.pattern + re.escape("export refiner-vit-tiny -> t.onnx ...") +
                                       r"  (torch\.onnx\.export|checking the graph against PyTorch)"), timeout=120)
    assert term.wait() == 0, term.text()
    assert shown, term.text()
