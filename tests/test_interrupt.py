"""Ctrl-C while ONNX Runtime runs a fused graph's Python op: exit 130, one line, nothing left behind.

Before the fix a KeyboardInterrupt raised inside the op unwound through ONNX Runtime's C++ and aborted the process
(`terminate called ... pybind11::error_already_set`, exit 134), leaving hidden temporary files and a scratch folder.
The interrupt is real (SIGINT sent to the process); the only injection is *when*: from inside the op.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .helpers import default_sigint, invoke

pytest.importorskip("onnxruntime_extensions", reason="the reference RefinerDLA op needs onnxruntime-extensions")

ROOT = Path(__file__).resolve().parents[1]
SIGINT_IN_OP = textwrap.dedent("""
    import os, signal, sys
    import refiner_edge.refine.ort_op as op

    real = op.refiner_dla_numpy

    def interrupted(*args, **kwargs):  # failure injection: Ctrl-C arrives while the op runs
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    op.refiner_dla_numpy = interrupted
    from refiner_edge.cli import run
    sys.argv = ["refiner-edge", *sys.argv[1:]]
    run()
""")


def run_interrupted(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", SIGINT_IN_OP, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, preexec_fn=default_sigint)


@pytest.fixture(scope="module")
def plain_and_fused(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("interrupt")
    plain, fused = root / "plain.onnx", root / "fused.onnx"
    exported = invoke("export", "--variant", "refiner-vit-tiny", "--checkpoint", tiny_checkpoint, "-o", plain)
    assert exported.exit_code == 0
    assert invoke("fuse", plain, "-o", fused).exit_code == 0
    return plain, fused


def assert_interrupted(result, folder: Path, expected: set[str]):
    assert result.returncode == 130, (result.returncode, result.stderr[-2000:])
    assert result.stderr.strip() == "error: interrupted", result.stderr[-2000:]
    assert {p.name for p in folder.iterdir()} == expected  # no temporary file, no scratch folder


def test_ctrl_c_in_fuse_check(plain_and_fused, tmp_path):
    plain, _ = plain_and_fused
    out = tmp_path / "out.onnx"
    out.write_bytes(b"earlier artifact")
    assert_interrupted(run_interrupted("fuse", plain, "-o", out), tmp_path, {"out.onnx"})
    assert out.read_bytes() == b"earlier artifact"


def test_ctrl_c_in_export_fuse(tmp_path):
    out = tmp_path / "m.onnx"
    assert_interrupted(run_interrupted("export", "--variant", "refiner-vit-tiny", "--fuse", "-o", out), tmp_path,
                       set())


def test_ctrl_c_in_infer_on_a_fused_graph(plain_and_fused, sample_photos, tmp_path):
    _, fused = plain_and_fused
    result = run_interrupted("infer", sample_photos[0], "--onnx", fused, "--json")
    assert_interrupted(result, tmp_path, set())
    assert result.stdout == ""
