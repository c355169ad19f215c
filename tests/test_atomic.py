"""An engine and its manifest as one unit: outputs checked before any work, one lock per output, Ctrl-C that
reaches TensorRT's compile, chains that publish every stage or none.

The interrupts are real SIGINTs sent to a real `refiner-edge build` of the tiny variant (TensorRT-RTX builds it on
the CPU in about a second); the only injection is *when*, where an instant cannot be hit by timing (just after the
engine's rename). Afterwards the engine and its manifest always match, and no temporary, lock or scratch file is
left.
"""
import ctypes
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from refiner_edge.artifacts import file_sha256

from .helpers import assert_clean_failure, default_sigint, invoke

ROOT = Path(__file__).resolve().parents[1]
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# runs the CLI after installing the failure injection given as argv[1] (Python source; may be empty)
WITH_INJECTION = textwrap.dedent("""
    import os, signal, sys
    exec(sys.argv[1])
    from refiner_edge.cli import run
    sys.argv = ["refiner-edge", *sys.argv[2:]]
    run()
""")
# Ctrl-C just after the engine is renamed into place (before its manifest is)
SIGINT_AFTER_ENGINE_RENAME = textwrap.dedent("""
    real_replace = os.replace
    def replace(src, dest, *a, **k):
        real_replace(src, dest, *a, **k)
        if str(dest).endswith(".engine"):
            os.kill(os.getpid(), signal.SIGINT)
    os.replace = replace
""")


def cli(*args, injection: str = "", **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WITH_INJECTION, injection, *map(str, args)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **{"preexec_fn": default_sigint, **kw})


def build_args(onnx: Path, out: Path, batch: str) -> list:
    return ["build", "--onnx", onnx, "--target", "rtx-sm89", "--batch", batch, "-o", out]


def pair_matches(engine: Path) -> bool:
    manifest = json.loads(engine.with_name(engine.name + ".json").read_text())
    return manifest["sha256"] == file_sha256(engine)


@pytest.fixture
def earlier_pair(tmp_path, tiny_plain):
    """A folder with an engine + manifest from an earlier build (batch 1), to be kept or replaced whole."""
    out = tmp_path / "e" / "t.engine"
    started = time.monotonic()
    proc = cli(*build_args(tiny_plain, out, "1"))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out, out.read_bytes(), time.monotonic() - started


# --- outputs checked before any work -------------------------------------------------------------------------

def test_an_output_that_is_an_input_or_a_device_is_refused_up_front(tmp_path, tiny_plain):
    graph = tmp_path / "t.onnx"
    graph.write_bytes(tiny_plain.read_bytes())
    (tmp_path / "t.onnx.json").write_text(tiny_plain.with_name("tiny.onnx.json").read_text())
    before = graph.read_bytes()
    result = invoke("build", "--onnx", graph, "--target", "rtx-sm89", "-o", graph)
    assert result.exit_code == 2
    assert_clean_failure(result, "also an input of this run")
    assert graph.read_bytes() == before
    for command in (["build", "--onnx", graph, "--target", "rtx-sm89", "-o"], ["fuse", graph, "-o"],
                    ["export", "--variant", "refiner-vit-tiny", "-o"],
                    ["calibrate", "--onnx", graph, "--images", tmp_path, "-o"]):
        result = invoke(*command, "/dev/null")
        assert result.exit_code == 2, (command, result.output)
        assert_clean_failure(result, "/dev/null is a character device")
    fifo = tmp_path / "pipe.engine"
    os.mkfifo(fifo)
    assert_clean_failure(invoke("build", "--onnx", graph, "--target", "rtx-sm89", "-o", fifo), "is a FIFO")
    assert_clean_failure(invoke("build", "--onnx", graph, "--target", "rtx-sm89", "-o", tmp_path),
                         "is a folder, not a regular file")
    result = invoke("build", "--onnx", graph, "--target", "rtx-sm89", "-o", f"{tmp_path}/sub/")
    assert result.exit_code == 2
    assert_clean_failure(result, "ends in '/'")
    result = invoke("build", "--onnx", graph, "--target", "rtx-sm89", "-o", tmp_path / "x.engine",
                    "--timing-cache", "/proc/cache.bin")   # root passes os.access there; creating a file fails
    assert result.exit_code == 2
    assert_clean_failure(result, "--timing-cache /proc/cache.bin: cannot write in /proc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.engine", "t.onnx", "t.onnx.json"]


def test_a_name_that_fits_is_written_and_one_whose_manifest_cannot_be_is_refused(tmp_path):
    fits = "m" * (255 - len(".onnx.json")) + ".onnx"         # the manifest's name is exactly 255 bytes
    result = invoke("export", "--variant", "refiner-vit-tiny", "-o", tmp_path / fits)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [fits, fits + ".json"]
    too_long = "n" * 247 + ".onnx"                            # 252 bytes: the file system takes it, not its manifest
    result = invoke("export", "--variant", "refiner-vit-tiny", "-o", tmp_path / too_long)
    assert result.exit_code == 2
    assert_clean_failure(result, "the name is 257 bytes and this file system allows 255")


def drop_dac_capabilities():
    """Run as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (dropped from the bounding set before exec), so
    permission bits apply as they do to a normal user: the suite runs as root."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):   # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:   # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_read_only_folder_is_refused_before_the_build(tmp_path, tiny_plain):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        for args in (["-o", folder / "t.engine"], ["-o", tmp_path / "t.engine", "--timing-cache", folder / "c.bin"]):
            try:
                proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "build", "--onnx", tiny_plain,
                                       "--target", "rtx-sm89", *map(str, args)], env=ENV, capture_output=True,
                                      text=True, timeout=120, preexec_fn=drop_dac_capabilities)
            except subprocess.SubprocessError as e:
                pytest.skip(f"cannot drop CAP_DAC_OVERRIDE here ({e})")
            assert proc.returncode == 2, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and f"cannot write in {folder} (Permission denied)" in lines[0], proc.stderr
            assert "unexpected" not in proc.stderr and "built in" not in proc.stdout
        assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["ro"]
    finally:
        folder.chmod(0o755)


# --- one lock per output --------------------------------------------------------------------------------------

@rtx
def test_concurrent_builds_to_one_output_leave_a_matching_pair(tmp_path, tiny_plain):
    out = tmp_path / "e" / "t.engine"
    cache = tmp_path / "cache.bin"
    procs = []
    for batch in ("1", "1:2:4", "2:4:8"):
        procs.append(cli(*build_args(tiny_plain, out, batch), "--timing-cache", cache))
        time.sleep(0.01)
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert any("waiting for another refiner-edge run" in e for e in errors), errors   # they took turns
    assert pair_matches(out)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cache.bin", "e", "t.engine", "t.engine.json"]


@rtx
def test_concurrent_chains_to_one_output_take_turns(tmp_path):
    """Two chains (export -> build) to one -o at different resolutions: the second waits for the first's locks, so
    the folder ends with one generation whose every file matches its manifest and its source."""
    out = tmp_path / "t.engine"
    procs = [cli("build", "--variant", "refiner-vit-tiny", "--img-size", size, "--target", "rtx-sm89", "-o", out)
             for size in ("64", "96")]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.engine", "t.engine.json", "t.onnx", "t.onnx.json"]
    assert pair_matches(out) and pair_matches(tmp_path / "t.onnx")
    engine = json.loads((tmp_path / "t.engine.json").read_text())
    assert engine["source"]["sha256"] == file_sha256(tmp_path / "t.onnx")   # the engine is built from this graph


# --- Ctrl-C reaches the compile; the pair is published whole ---------------------------------------------------

def running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie has)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def assert_old_or_new_pair(out: Path, before: bytes, proc: subprocess.Popen, err: str):
    assert proc.returncode in (0, 130), err
    if proc.returncode == 130:
        assert err.strip().splitlines()[-1] == "error: interrupted", err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert pair_matches(out), err
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.engine", "t.engine.json"], err
    return out.read_bytes() == before


# Ctrl-C at an instant of the build named by its phase, not by a delay that a slow or a fast machine can miss: the
# injection sends the SIGINT itself (printing when, on the system-wide monotonic clock, and the builder's pid) at
#   starting:  as the builder process is started
#   compiling: while the builder compiles (its process has started and not yet exited)
#   compiled:  the builder has exited, its engine is not published yet
#   published: just after the manifest, the last file, is renamed into place as the output
SIGINT_AT_PHASE = textwrap.dedent("""
    import subprocess, time
    PHASE, SENT = {phase!r}, []
    def interrupt(builder=None):
        if SENT:   # once: the kill after Ctrl-C waits for the builder again
            return
        SENT.append(builder)
        print(f"sigint-at={{time.monotonic()}} builder={{builder}}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGINT)
    def is_builder(proc):
        return "refiner_edge.engine.worker" in " ".join(map(str, proc.args))
    real_init, real_wait, real_replace = subprocess.Popen.__init__, subprocess.Popen.wait, os.replace
    def init(self, args, *a, **k):
        if PHASE == "starting" and "refiner_edge.engine.worker" in " ".join(map(str, args)):
            interrupt()
        real_init(self, args, *a, **k)
    def wait(self, *a, **k):
        if PHASE == "compiling" and is_builder(self) and self.returncode is None:
            interrupt(self.pid)
        code = real_wait(self, *a, **k)
        if PHASE == "compiled" and is_builder(self):
            interrupt(self.pid)
        return code
    def replace(src, dest, *a, **k):
        real_replace(src, dest, *a, **k)
        if PHASE == "published" and str(dest) == {manifest!r}:   # the output, not a file in the scratch folder
            interrupt()
    subprocess.Popen.__init__, subprocess.Popen.wait, os.replace = init, wait, replace
""")


@rtx
def test_ctrl_c_at_many_instants_of_a_build(earlier_pair, tiny_plain):
    out, before, seconds = earlier_pair
    worst, exits = 0.0, []
    # until the engine is published the earlier pair stays; once the manifest is in place, the new pair is whole
    for phase, keeps in (("starting", True), ("compiling", True), ("compiled", True), ("published", False)):
        proc = cli(*build_args(tiny_plain, out, "1:2:4"), injection=SIGINT_AT_PHASE.format(phase=phase, manifest=str(out) + ".json"))
        _, err = proc.communicate(timeout=300)
        ended = time.monotonic()
        marks = [line.split() for line in err.splitlines() if line.startswith("sigint-at=")]
        assert len(marks) == 1, f"{phase}: the interrupt was not sent exactly once: {err}"
        sent, builder = float(marks[0][0].split("=")[1]), marks[0][1].split("=")[1]
        worst = max(worst, ended - sent)
        if builder != "None":
            assert not running(int(builder)), f"{phase}: the builder outlived Ctrl-C"
        old = assert_old_or_new_pair(out, before, proc, err)
        if keeps:
            assert old and proc.returncode == 130, f"Ctrl-C while {phase} must leave the earlier engine: {err}"
        else:
            assert not old, f"Ctrl-C once the build is {phase} must leave the new engine: {err}"
            before = out.read_bytes()
        exits.append((phase, proc.returncode))
    print(f"Ctrl-C -> exit: worst {worst:.2f} s over {len(exits)} interrupts; a build takes {seconds:.1f} s; "
          f"(phase, exit code): {exits}")
    assert worst < 5.0


@rtx
def test_ctrl_c_just_after_the_engine_is_renamed(earlier_pair, tiny_plain):
    out, before, _ = earlier_pair
    proc = cli(*build_args(tiny_plain, out, "1:2:4"), injection=SIGINT_AFTER_ENGINE_RENAME)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert not assert_old_or_new_pair(out, before, proc, err)   # the new pair, whole: the commit was under way
    manifest = json.loads(out.with_name("t.engine.json").read_text())
    assert manifest["engine"]["profiles"][0]["max"][0] == 4


# --- a chain publishes every stage or none ---------------------------------------------------------------------

@rtx
def test_an_interrupted_chain_keeps_the_earlier_generation(tmp_path):
    out = tmp_path / "t.engine"
    first = cli("build", "--variant", "refiner-vit-tiny", "--target", "rtx-sm89", "-o", out)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["t.engine", "t.engine.json", "t.onnx", "t.onnx.json"]
    # Ctrl-C once the new export is done and the builder runs
    injection = textwrap.dedent("""
        import refiner_edge.engine.worker as worker
        real = worker.run_in_child
        def interrupted(*a, **k):
            os.kill(os.getpid(), signal.SIGINT)
            return real(*a, **k)
        worker.run_in_child = interrupted
    """)
    second = cli("build", "--variant", "refiner-vit-tiny", "--img-size", "96", "--target", "rtx-sm89", "-o", out,
                 injection=injection)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 130, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before   # no new t.onnx beside the old engine


# --- inputs refused in one line, messages that name the right files ---------------------------------------------

def test_a_resolution_that_cannot_fit_is_refused_before_the_export(tmp_path):
    result = invoke("build", "--variant", "refiner-vit-tiny", "--img-size", "4096", "--target", "rtx-sm89",
                    "-o", tmp_path / "t.engine")
    assert result.exit_code == 2
    assert_clean_failure(result, "refiner-vit-tiny at 4096x4096 needs about 274.9 GB of fp32 attention maps",
                         "4.0 GiB workspace")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:notaport", "grpc://127.0.0.1:abc", "127.0.0.1:99999", "h:0"])
def test_bench_triton_refuses_a_bad_port(url):
    result = invoke("bench", "--triton", url)
    assert result.exit_code == 2
    assert_clean_failure(result, "the port must be a number from 1 to 65535")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_deepstream_threshold_must_be_finite(tmp_path, value):
    result = invoke("deploy", "deepstream", "--engine", tmp_path / "t.engine", "-o", tmp_path / "ds",
                    "--classifier-threshold", value)
    assert result.exit_code == 2
    assert_clean_failure(result, "--classifier-threshold must be a finite number")
    assert list(tmp_path.iterdir()) == []


def test_wrong_files_are_named_for_what_they_are(tmp_path, tiny_plain, sample_photos):
    text = tmp_path / "notes.onnx"
    text.write_text("not a graph\n")
    result = invoke("build", "--onnx", text, "--target", "rtx-sm89", "-o", tmp_path / "t.engine")
    assert result.exit_code == 2
    assert_clean_failure(result, "notes.onnx is not an ONNX graph")
    result = invoke("infer", "--engine", tiny_plain, sample_photos[0])
    assert_clean_failure(result, "tiny.onnx's manifest is an export manifest, not an engine's")


@rtx
def test_build_names_both_files_records_absolute_paths_and_renews_a_garbage_timing_cache(tmp_path, tiny_plain,
                                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("cache.bin").write_bytes(b"garbage, not a timing cache")
    result = invoke("build", "--onnx", tiny_plain, "--target", "rtx-sm89", "--batch", "1", "-o", "e/t.engine",
                    "--timing-cache", "cache.bin")
    assert result.exit_code == 0, result.output
    assert "and e/t.engine.json" in result.stdout
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith("note: --timing-cache cache.bin: tensorrt-rtx") and \
        "cannot read it" in notes[0], result.stderr
    assert Path("cache.bin").read_bytes() != b"garbage, not a timing cache"   # replaced by this build's cache
    rebuild = json.loads(Path("e/t.engine.json").read_text())["engine"]["rebuild"]
    assert f"-o {tmp_path / 'e' / 't.engine'}" in rebuild and f"--timing-cache {tmp_path / 'cache.bin'}" in rebuild
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cache.bin", "e", "t.engine", "t.engine.json"]


def test_a_port_left_in_time_wait_by_a_stopped_server_is_free_again():
    """`serve` restarted at once: its port check binds as servers do (SO_REUSEADDR). Before, a port whose only
    socket was in TIME-WAIT after a stop was refused for about 60 s."""
    import socket

    from refiner_edge.deploy.serve import check_port
    from refiner_edge.errors import InputError

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()          # the server's side closes first, as a stopping server does: its port enters TIME-WAIT
    client.close()
    server.close()
    with socket.socket() as plain:   # what the check did before: refused while TIME-WAIT lasts
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
    check_port("127.0.0.1", port, "--http-port")
    with socket.socket() as busy:    # a port something listens on is still refused
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(InputError, match="cannot listen on 127.0.0.1"):
            check_port("127.0.0.1", busy.getsockname()[1], "--grpc-port")
