"""Nothing the user made is replaced, nothing half-written is left: the chain's stage files, outputs that are an
input's own files (manifests included), stale manifests, SIGTERM and killed runs, and a full disk.

The full disk is real: a file size limit (`ulimit -f`, RLIMIT_FSIZE with SIGXFSZ ignored, so a write past it fails
with EFBIG as a full disk fails with ENOSPC) on the command's process, and, where this process may mount one, a
400 KB tmpfs (ENOSPC itself).
"""
import importlib.util
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from refiner_edge.artifacts import SCRATCH_PREFIX

from .helpers import assert_clean_failure, invoke

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")
TINY = ("--variant", "refiner-vit-tiny")
LIMIT = 400_000   # bytes a file may have (ulimit -f): the tiny graph is 1.2 MB (FP16 0.6 MB), its engine 5 MB


def cli(*args, limit: int | None = None, **kw) -> subprocess.Popen:
    """The command line in its own process; `limit`: the largest file it may write, in bytes (ulimit -f)."""
    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit then fails (EFBIG), as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *map(str, args)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=small_files if limit else None, **kw)


def run(*args, limit: int | None = None) -> tuple[int, str]:
    proc = cli(*args, limit=limit)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def one_error(err: str, *needles: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in folder.rglob("*")}


@pytest.fixture
def graph(tmp_path, tiny_plain) -> Path:
    """The tiny graph and its manifest, a.onnx + a.onnx.json, in the test's folder."""
    out = tmp_path / "a.onnx"
    shutil.copy(tiny_plain, out)
    shutil.copy(tiny_plain.with_name(tiny_plain.name + ".json"), tmp_path / "a.onnx.json")
    return out


# --- 1: the build chain replaces only the stage files it made ---------------------------------------------------

def test_the_chain_refuses_the_users_own_stage_files(tmp_path, graph):
    # the README's naming: the user's own export s.onnx (a manifest from `export`), then a calibration beside it
    shutil.move(graph, tmp_path / "s.onnx")
    shutil.move(tmp_path / "a.onnx.json", tmp_path / "s.onnx.json")
    before = contents(tmp_path)
    result = invoke("build", *TINY, "--target", "rtx-sm89", "-o", tmp_path / "s.engine")
    assert result.exit_code == 2, result.output
    assert_clean_failure(result, f"{tmp_path / 's.onnx'} was not made by this build chain",
                         "s.onnx.json records `refiner-edge export`", "--onnx")
    assert contents(tmp_path) == before
    # a calibrated graph of the user's, with no manifest, where the fp16 chain would write its own
    (tmp_path / "s.onnx").unlink()
    (tmp_path / "s.onnx.json").unlink()
    (tmp_path / "s.fp16.onnx").write_bytes(before["s.onnx"])
    result = invoke("build", *TINY, "--precision", "fp16", "--target", "rtx-sm89", "-o", tmp_path / "s.engine")
    assert result.exit_code == 2, result.output
    assert_clean_failure(result, "s.fp16.onnx was not made by this build chain", "no s.fp16.onnx.json records it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.fp16.onnx"]


@rtx
@pytest.mark.slow
def test_the_chain_replaces_its_own_stage_files_and_then_the_users_export_is_kept(tmp_path):
    out = tmp_path / "s.engine"
    code, err = run("build", *TINY, "--target", "rtx-sm89", "-o", out)
    assert code == 0, err
    code, err = run("build", *TINY, "--img-size", "96", "--target", "rtx-sm89", "-o", out)   # its own: replaced
    assert code == 0, err
    assert json.loads((tmp_path / "s.onnx.json").read_text())["model"]["img_size"] == 96
    code, err = run("export", *TINY, "-o", tmp_path / "s.onnx")   # the user's own export over the chain's
    assert code == 0, err
    before = contents(tmp_path)
    code, err = run("build", *TINY, "--target", "rtx-sm89", "-o", out)
    assert code == 2
    one_error(err, "s.onnx was not made by this build chain", "s.onnx.json records `refiner-edge export`")
    assert contents(tmp_path) == before


# --- 2: what a run reads is never what it writes ----------------------------------------------------------------

def test_an_inputs_manifest_is_never_an_output(tmp_path, graph, sample_photos):
    photo = tmp_path / "photo.jpg"   # a copy: a regression would write over it
    shutil.copy(sample_photos[0], photo)
    before = contents(tmp_path)
    manifest = tmp_path / "a.onnx.json"
    for command, needle in (
            (["calibrate", "--onnx", graph, "--images", sample_photos[0], "--precision", "fp16", "-o", manifest],
             f"-o {manifest} is also an input of this run (the manifest of {graph})"),
            (["fuse", graph, "-o", manifest], f"-o {manifest} is also an input of this run (the manifest of {graph})"),
            (["build", "--onnx", graph, "--target", "rtx-sm89", "-o", tmp_path / "a.engine", "--timing-cache",
              manifest], f"--timing-cache {manifest} is also an input of this run (the manifest of {graph})"),
            (["preprocess", sample_photos[0], "--onnx", graph, "-o", graph], f"-o {graph} is also an input"),
            (["preprocess", sample_photos[0], "--onnx", graph, "-o", manifest], "(the manifest of"),
            (["fuse", graph, "--images", photo, "-o", photo], f"-o {photo} is also an input")):
        result = invoke(*command)
        assert result.exit_code == 2, (command, result.output)
        assert_clean_failure(result, needle)
        assert contents(tmp_path) == before, command


@rtx
def test_preprocess_never_writes_over_the_engine_it_reads(tmp_path, graph, sample_photos):
    engine = tmp_path / "a.engine"
    code, err = run("build", "--onnx", graph, "--target", "rtx-sm89", "--batch", "1", "-o", engine)
    assert code == 0, err
    before = contents(tmp_path)
    for out in (engine, tmp_path / "a.engine.json"):
        result = invoke("preprocess", sample_photos[0], "--engine", engine, "-o", out)
        assert result.exit_code == 2, result.output
        assert_clean_failure(result, "is also an input of this run")
    assert contents(tmp_path) == before


# --- 3: an artifact republished without a manifest loses the old one --------------------------------------------

def test_fuse_and_calibrate_from_a_bare_graph_leave_no_stale_manifest(tmp_path, graph, sample_photos):
    bare = tmp_path / "bare" / "b.onnx"   # a graph from elsewhere: no manifest
    bare.parent.mkdir()
    shutil.copy(graph, bare)
    for command, out in ((["fuse", bare, "--no-verify", "-o"], tmp_path / "f.onnx"),
                         (["calibrate", "--onnx", bare, "--images", sample_photos[0], "--precision", "fp16", "--num",
                           "1", "--eval-num", "1", "-o"], tmp_path / "c.onnx")):
        shutil.copy(graph, out)   # an earlier artifact and its manifest at -o
        shutil.copy(tmp_path / "a.onnx.json", out.with_name(out.name + ".json"))
        result = invoke(*command, out)
        assert result.exit_code == 0, result.output
        assert out.read_bytes() != graph.read_bytes()
        assert not out.with_name(out.name + ".json").exists(), command   # it described the earlier file
        assert ".json" not in result.stdout, result.stdout   # "wrote" names only what it wrote
    assert not [p for p in tmp_path.rglob(".*")]


def test_an_fp16_graph_over_an_int8_one_leaves_no_calibration_cache(tmp_path, graph, sample_photos):
    out = tmp_path / "c.onnx"
    common = ["calibrate", "--onnx", graph, "--images", sample_photos[0], "--num", "1", "--eval-num", "1", "-o", out]
    result = invoke(*common, "--precision", "int8")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.calib").is_file()
    result = invoke(*common, "--precision", "fp16")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "a.onnx.json", "c.onnx", "c.onnx.json"]
    (tmp_path / "c.calib").write_text("mine")   # one the manifest does not name is not ours to remove
    assert invoke(*common, "--precision", "fp16").exit_code == 0
    assert (tmp_path / "c.calib").read_text() == "mine"


# --- 4: SIGTERM is Ctrl-C; what killed runs left is swept; failed runs remove the folders they made ------------

def wait_for_scratch(folder: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = [p for p in folder.iterdir() if p.name.startswith(SCRATCH_PREFIX)]
        if found and (found[0] / ".owner").exists():
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no scratch folder appeared: {proc.communicate()}")


def test_sigterm_cleans_up_as_ctrl_c_does(tmp_path):
    proc = cli("export", *TINY, "-o", tmp_path / "x.onnx")
    wait_for_scratch(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted", err
    assert list(tmp_path.iterdir()) == []   # no scratch folder, no .x.onnx.lock


def builder_of(pid: int) -> list[int]:
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [k for k in kids if b"refiner_edge.engine.worker" in Path(f"/proc/{k}/cmdline").read_bytes()]


@rtx
def test_sigterm_stops_the_builder_and_leaves_nothing(tmp_path, graph):
    out = tmp_path / "e" / "t.engine"
    proc = cli("build", "--onnx", graph, "--target", "rtx-sm89", "--batch", "1:2:4", "-o", out)
    deadline = time.monotonic() + 120
    while not builder_of(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    builder = builder_of(proc.pid)
    assert builder, "the build ran no child process"
    proc.send_signal(signal.SIGTERM)   # as `timeout` or `docker stop` sends it: to the command, not its builder
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:   # the tiny compile can end first
        pytest.skip("the build finished before SIGTERM arrived")
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted", err
    assert not Path(f"/proc/{builder[0]}").exists() or "zombie" in Path(f"/proc/{builder[0]}/status").read_text()
    assert not out.parent.exists()   # nor the folder it made


SIGTERM_IN_NATIVE_IMPORT = textwrap.dedent("""
    import importlib, os, signal, sys
    real = importlib.import_module

    def import_module(name, *args, **kwargs):   # failure injection: SIGTERM while a pybind11 module initialises,
        if name.startswith("tensorrt"):           # which turns the KeyboardInterrupt into ImportError, as it does
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except KeyboardInterrupt:
                raise ImportError("initialization failed")
        return real(name, *args, **kwargs)

    importlib.import_module = import_module
    from refiner_edge.cli import run
    sys.argv = ["refiner-edge", *sys.argv[1:]]
    run()
""")


def test_an_interrupt_inside_a_native_modules_import_is_not_a_missing_package(tmp_path, graph):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", SIGTERM_IN_NATIVE_IMPORT, "build", "--onnx", graph, "--target",
                           "rtx-sm89", "-o", out / "e.engine"], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 130, proc.stderr[-2000:]   # not 3, "tensorrt-rtx is not installed"
    assert proc.stderr.strip() == "error: interrupted", proc.stderr[-2000:]
    assert not out.exists()


SIGTERM_IN_OP = textwrap.dedent("""
    import os, signal, sys
    import refiner_edge.refine.ort_op as op

    real = op.refiner_dla_numpy

    def terminated(*args, **kwargs):  # failure injection: SIGTERM arrives while ONNX Runtime runs the Python op
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    op.refiner_dla_numpy = terminated
    from refiner_edge.cli import run
    sys.argv = ["refiner-edge", *sys.argv[1:]]
    run()
""")


def test_sigterm_inside_onnx_runtime_waits_for_the_op(tmp_path, graph):
    """Held until ONNX Runtime returns, as Ctrl-C is: raised inside the op, it would abort the process (exit 134)."""
    pytest.importorskip("onnxruntime_extensions", reason="the fuse check runs the reference op")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", SIGTERM_IN_OP, "fuse", graph, "-o", out / "f.onnx"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip() == "error: interrupted", proc.stderr[-2000:]
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_what_a_killed_run_left_is_swept_and_a_live_runs_is_not(tmp_path):
    from refiner_edge.artifacts import LOCK_MARK, sweep

    killed = cli("export", *TINY, "-o", tmp_path / "x.onnx")
    wait_for_scratch(tmp_path, killed)
    killed.kill()
    killed.communicate(timeout=60)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left[0].startswith(SCRATCH_PREFIX) and left[1:] == [".x.onnx.lock"], left
    assert (tmp_path / ".x.onnx.lock").read_bytes() == LOCK_MARK
    user = tmp_path / ".mine.lock"   # a lock file of someone else's is no business of ours
    user.write_text("")
    live = cli("export", *TINY, "-o", tmp_path / "y.onnx")   # a concurrent run: its scratch must survive a sweep
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        held = [p for p in tmp_path.iterdir() if p.name.startswith(SCRATCH_PREFIX) and p.name != left[0]]
        if held and (held[0] / ".owner").exists():
            break
        time.sleep(0.02)
    sweep(tmp_path)
    assert held[0].is_dir() and (tmp_path / ".y.onnx.lock").exists()
    _, err = live.communicate(timeout=300)
    assert live.returncode == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mine.lock", "y.onnx", "y.onnx.json"]


def test_a_failed_export_fuse_removes_the_folders_it_made(tmp_path):
    pytest.importorskip("onnxruntime_extensions", reason="export --fuse checks with the reference op")
    code, err = run("export", *TINY, "--fuse", "-o", tmp_path / "new" / "sub" / "x.onnx", limit=LIMIT)
    assert code == 2
    one_error(err, f"cannot write {tmp_path / 'new' / 'sub' / 'x.onnx'}")
    assert list(tmp_path.iterdir()) == []


# --- 16: a full disk is one line naming the output and the space left, and nothing half-written ----------------

def full_disk_commands(folder: Path, graph: Path, photo: Path) -> list[tuple[list, Path]]:
    return [(["export", *TINY, "-o", folder / "x.onnx"], folder / "x.onnx"),
            (["fuse", graph, "--no-verify", "-o", folder / "f.onnx"], folder / "f.onnx"),
            (["calibrate", "--onnx", graph, "--images", photo, "--precision", "fp16", "--num", "1", "--eval-num",
              "1", "-o", folder / "c.onnx"], folder / "c.onnx"),
            (["preprocess", photo, "--variant", "refiner-vit-l", "--img-size", "448", "-o", folder / "p" / "t.rfet"],
             folder / "p" / "t.rfet")]


@pytest.mark.slow
def test_a_file_size_limit_is_one_line_and_leaves_nothing(tmp_path, graph, sample_photos):
    out = tmp_path / "out"
    out.mkdir()
    for command, target in full_disk_commands(out, graph, sample_photos[0]):
        code, err = run(*command, limit=LIMIT)
        assert code == 2, (command, err)
        one_error(err, f"cannot write {target}: File too large", f"free in {out}",
                  "files of at most 400.0 KB (ulimit -f)")
        assert list(out.iterdir()) == [], command


@rtx
@pytest.mark.slow
def test_the_builds_full_disk_is_one_line_not_the_workers_traceback(tmp_path, graph):
    out = tmp_path / "out"
    code, err = run("build", "--onnx", graph, "--target", "rtx-sm89", "--batch", "1", "-o", out / "e.engine",
                    limit=LIMIT)
    assert code == 2, err
    one_error(err, f"cannot write {out / 'e.engine'}: File too large")
    assert not out.exists()
    code, err = run("build", *TINY, "--target", "rtx-sm89", "-o", out / "s.engine", limit=2_000_000)
    assert code == 2, err
    one_error(err, f"cannot write {out / 's.engine'}: File too large")   # the chain's own engine, not a scratch path
    assert not out.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KB tmpfs, where this process may mount one (root); else skipped."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_nothing(small_disk, graph, sample_photos):
    for command, target in full_disk_commands(small_disk, graph, sample_photos[0]):
        code, err = run(*command)
        assert code == 2, (command, err)
        one_error(err, f"cannot write {target}: No space left on device", f"KB free in {small_disk}")
        assert list(small_disk.iterdir()) == [], command
    if HAS_RTX:   # the builder's child cannot even write its result there
        code, err = run("build", "--onnx", graph, "--target", "rtx-sm89", "--batch", "1", "-o", small_disk / "e.engine")
        assert code == 2, err
        one_error(err, f"cannot write {small_disk / 'e.engine'}: No space left on device")
        assert list(small_disk.iterdir()) == []
    # deploy names what it writes, not its input
    code, err = run("deploy", "triton", "--onnx", graph, "--kind", "cpu", "-o", small_disk / "repo")
    assert code == 2, err
    line = one_error(err, f"cannot write {small_disk / 'repo'}", "No space left on device", "free in")
    assert str(graph) not in line
    assert list(small_disk.iterdir()) == []


@rtx
def test_a_failed_deploy_removes_the_folders_it_made(tmp_path, tiny_engine):
    """deploy triton / deepstream into new folders, stopped by a full disk while copying the engine: one line, and
    neither the repository nor the parents it created are left."""
    for kind, out in (("triton", tmp_path / "nrepo" / "a" / "b"), ("deepstream", tmp_path / "nds" / "a")):
        code, err = run("deploy", kind, "--engine", tiny_engine, "-o", out, limit=4096)
        assert code == 2, (kind, err)
        one_error(err, "File too large")
        assert list(tmp_path.iterdir()) == [], (kind, list(tmp_path.rglob("*")))
