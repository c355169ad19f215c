"""Importing the package, `--help`, and ONNX Runtime inference on a plain graph import no torch (it took 1.6 s of a
3 s `infer` before the layout by stage), and the package has no import cycle."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .helpers import invoke

ROOT = Path(__file__).resolve().parents[1]
PROBE = textwrap.dedent("""
    import sys
    heavy = ("torch", "tensorrt", "tensorrt_rtx", "onnx_graphsurgeon")
    if sys.argv[1:] == ["import"]:
        import refiner_edge
    else:
        from refiner_edge.cli import run
        sys.argv = ["refiner-edge", *sys.argv[1:]]
        try:
            run()
        except SystemExit as e:
            assert e.code in (0, None), e.code
    print("HEAVY:" + ",".join(m for m in heavy if m in sys.modules))
""")


def heavy_modules(*args) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    line = [s for s in result.stdout.splitlines() if s.startswith("HEAVY:")][-1]
    return [m for m in line[len("HEAVY:"):].split(",") if m]


def test_import_and_help_load_no_torch():
    assert heavy_modules("import") == []
    assert heavy_modules("--help") == []
    assert heavy_modules("infer", "--help") == []


def test_onnxruntime_inference_on_a_plain_graph_loads_no_torch(tmp_path, sample_photos):
    plain = tmp_path / "plain.onnx"
    assert invoke("export", "--variant", "refiner-vit-tiny", "-o", plain).exit_code == 0
    assert heavy_modules("infer", sample_photos[0], "--onnx", plain, "--json") == []


def test_no_import_cycles():
    tool = ROOT.parent / "shared" / "tools" / "import_cycles.py"
    if not tool.is_file():
        pytest.skip(f"the import-cycle checker is not beside the checkout ({tool.name} missing)")
    result = subprocess.run([sys.executable, str(tool), "refiner_edge", "--lazy-too"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert "0 module-scope cycles, 0 cycles counting lazy imports" in result.stdout, result.stdout
