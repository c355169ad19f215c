"""Shared test helpers."""
import importlib.util
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from refiner_edge.cli import app

runner = CliRunner()


def invoke(*args):
    """Run the CLI in-process with string arguments."""
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(result, *needles):
    """A non-zero exit with exactly one `error:` line on stderr (containing each needle) and no traceback."""
    assert result.exit_code != 0, result.output
    err = result.stderr.strip()
    assert "Traceback" not in result.output and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def randomize(model, seed: int = 0):
    """Give every parameter and BatchNorm statistic non-trivial values, so that folding and export bugs show.

    The official init leaves BNs at identity and scale_channel at 1e-5, which would hide most mistakes.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale_channel"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.25)
            elif p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if "bn" in name or "norm" in name else 0.0))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_import_check():
    """tools/import_check.py as a module: the checks of the package's source, read with ast."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "import_check.py"
    spec = importlib.util.spec_from_file_location("import_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_sigint() -> None:
    """preexec_fn of a child that a test interrupts with SIGINT: the default disposition, whatever this process
    inherited. Started from a shell that ignores SIGINT (`nohup`, `cmd &` in a script) the child would inherit SIG_IGN,
    which Python keeps (it installs its KeyboardInterrupt handler only over SIG_DFL), and the SIGINT would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started by a test as a user would (Ctrl-C); kill it if it has not exited within 30 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


HAS_PB = importlib.util.find_spec("tritonclient") is not None and importlib.util.find_spec("google.protobuf") \
    is not None
needs_pb = pytest.mark.skipif(not HAS_PB, reason="tritonclient[grpc] is not installed (pip install "
                              "'refiner-edge[client]'): it holds Triton's model-config protobuf")


def parse_config(path: Path):
    """A config.pbtxt as Triton reads it (tritonclient's model-config protobuf)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def tensorrt_header_sets() -> Path:
    """Where TensorRT's public header sets (10.3.0, 10.13.3, 11.1, each with include/) lie for compiling native code
    on machines without TensorRT: $REFINER_EDGE_TENSORRT_HEADERS, else ../shared/tensorrt-headers beside the
    checkout (the folder may be absent: callers skip, saying where they looked)."""
    import os

    return Path(os.environ.get("REFINER_EDGE_TENSORRT_HEADERS")
                or Path(__file__).resolve().parents[2] / "shared" / "tensorrt-headers")


def compile_cpp_driver(sources, out: Path, what: str) -> Path:
    """g++ the C++ library sources with a test driver into `out` (a few seconds); skipped where g++ is missing."""
    import shutil

    if shutil.which("g++") is None:
        pytest.skip(f"g++ not found: {what} cannot be built here")
    root = Path(__file__).resolve().parents[1]
    cmd = ["g++", "-std=c++17", "-O0", "-Wall", "-Wextra", "-Werror", f"-I{root / 'cpp/include'}",
           f"-I{root / 'cpp/src'}", *map(str, sources), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out
