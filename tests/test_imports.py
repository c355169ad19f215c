"""The core install has no torch: importing the package, `--help`, and every command that runs graphs and engines
(infer, validate against an ONNX reference, bench, fuse, build from a graph, deploy, preprocess, info) import no
torch (it took 1.6 s of a 3 s `infer` before the layout by stage). A command that needs a missing extra ends with
one line naming it, exit 3. The package has no import cycle."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch_free

ROOT = Path(__file__).resolve().parents[1]
ABSENT = textwrap.dedent("""
    import os, sys
    class Absent:   # `import name` raises ModuleNotFoundError, as where it is not installed
        names = set(filter(None, os.environ.get("PROBE_ABSENT", "").split(",")))
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in self.names:
                raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
    sys.meta_path.insert(0, Absent())
""")
PROBE = ABSENT + textwrap.dedent("""
    heavy = ("torch", "tensorrt", "tensorrt_rtx", "triton", "pytriton")
    code = 0
    if sys.argv[1:] == ["import"]:
        import refiner_edge
    else:
        from refiner_edge.cli import run
        sys.argv = ["refiner-edge", *sys.argv[1:]]
        try:
            run()
        except SystemExit as e:
            code = e.code or 0
    print("HEAVY:" + ",".join(m for m in heavy if m in sys.modules))
    sys.exit(code)
""")


def probe(*args, absent: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROBE_ABSENT": ",".join(absent)}
    return subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def heavy_modules(*args) -> list[str]:
    result = probe(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    line = [s for s in result.stdout.splitlines() if s.startswith("HEAVY:")][-1]
    return [m for m in line[len("HEAVY:"):].split(",") if m]


def test_import_and_help_load_no_torch():
    assert heavy_modules("import") == []
    assert heavy_modules("--help") == []
    assert heavy_modules("infer", "--help") == []


def test_graph_and_engine_commands_run_without_torch(tmp_path, tiny_plain, sample_photos):
    """What a Jetson without torch runs, each in a fresh interpreter where `import torch` fails as it does there."""
    photo = sample_photos[0]
    runs = [("infer", photo, "--onnx", tiny_plain, "--json"),
            ("validate", "--onnx", tiny_plain, "--images", photo.parent, "--reference", tiny_plain, "--json"),
            ("bench", "--onnx", tiny_plain, "--iterations", 2, "--warmup", 1, "--json"),
            ("preprocess", photo, "--onnx", tiny_plain, "-o", tmp_path / "tensors"),
            ("deploy", "triton", "--onnx", tiny_plain, "-o", tmp_path / "models"),
            ("info", "--json")]
    if _importable("onnxruntime_extensions"):   # fuse checks the fused graph with the reference op
        runs.append(("fuse", tiny_plain, "-o", tmp_path / "tiny.fused.onnx"))
    if _importable("tensorrt_rtx"):
        runs.append(("build", "--onnx", tiny_plain, "--target", "rtx-sm89", "-o", tmp_path / "t.engine"))
    for args in runs:
        result = probe(*args, absent=("torch",))
        assert result.returncode == 0, (args, result.stderr[-2000:])
    assert heavy_modules("infer", photo, "--onnx", tiny_plain, "--json") == []


@pytest.mark.parametrize("args,module,extra", [
    (("export", "--variant", "refiner-vit-tiny", "-o", "{tmp}/x.onnx"), "torch", "torch"),
    (("infer", "{photo}"), "torch", "torch"),   # no --onnx: the PyTorch model
    (("bench", "--variant", "refiner-vit-tiny", "--iterations", "1"), "torch", "torch"),
    (("build", "--target", "rtx-sm89", "-o", "{tmp}/e.engine"), "torch", "torch"),   # no --onnx: exports first
    (("build", "--onnx", "{graph}", "--target", "rtx-sm89", "-o", "{tmp}/e.engine"), "tensorrt_rtx", "rtx"),
    # TensorRT depends on the platform: the line names the platform extras (and where TensorRT itself comes from)
    (("build", "--onnx", "{graph}", "--target", "orin-agx-jp6", "-o", "{tmp}/e.engine"), "tensorrt", "cuda12"),
])
def test_a_missing_extra_is_one_line_naming_it_exit_3(tmp_path, tiny_plain, sample_photos, args, module, extra):
    """The package really absent (its import raising ModuleNotFoundError, as in a core install)."""
    fill = {"tmp": tmp_path, "photo": sample_photos[0], "graph": tiny_plain}
    result = probe(*(a.format(**fill) for a in args), absent=(module,))
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 3, result.stderr[-2000:]
    assert len(errors) >= 1 and errors[-1].startswith("error: ") and "Traceback" not in result.stderr
    assert f"pip install 'refiner-edge[{extra}]'" in errors[-1], errors[-1]
    assert not list(tmp_path.iterdir())   # nothing written


def test_an_extra_missing_in_a_child_process_is_the_same_one_line(tmp_path, monkeypatch):
    """The chain's export runs in a child (engine/worker.py): torch missing there is the parent's one-line
    MissingDependencyError (exit 3), not "failed: ModuleNotFoundError". The child finds the hook as sitecustomize."""
    from refiner_edge.engine.worker import run_in_child
    from refiner_edge.errors import MissingDependencyError

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(ABSENT)
    monkeypatch.setenv("PYTHONPATH", str(hook))
    monkeypatch.setenv("PROBE_ABSENT", "torch")
    job = {"variant": "refiner-vit-tiny", "img_size": None, "checkpoint": None, "dest": str(tmp_path / "x.onnx")}
    with pytest.raises(MissingDependencyError, match=r"^the export needs torch, which is not installed: "
                                                     r"pip install 'refiner-edge\[torch\]'"):
        run_in_child("refiner_edge.pipeline:child_export", job, tmp_path / "result", what="export")
    assert not (tmp_path / "x.onnx").exists()


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_no_import_cycles_and_imports_flow_down_the_stages():
    """tools/import_check.py, the project's own check: no cycle, no stage importing one above it."""
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "import_check.py")], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and result.stdout.endswith(" 0 problems\n"), result.stdout + result.stderr


def test_import_check_finds_cycles_and_upward_imports(tmp_path, monkeypatch):
    """The checker itself: a module-scope cycle, a cycle through a function's import, and an import of a higher
    stage are each reported; a submodule's use of its own package is not a cycle."""
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import import_check

    def package(files: dict[str, str]) -> list[str]:
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        for name, text in {"__init__.py": "", "errors.py": "", **files}.items():
            path = root / import_check.PACKAGE / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return import_check.problems(root)[0]

    clean = {"models/__init__.py": "", "models/a.py": "from ..errors import x\nfrom . import b\n",
             "models/b.py": "from .. import errors\n", "onnx/__init__.py": "from .c import y\n",
             "onnx/c.py": "from ..models import a\nfrom . import d\n", "onnx/d.py": ""}
    assert package(clean) == []
    found = package({**clean, "models/b.py": "from . import a\n"})
    assert found == [f"import cycle: {import_check.PACKAGE}.models.a -> {import_check.PACKAGE}.models.b",
                     f"import cycle (counting imports inside functions): {import_check.PACKAGE}.models.a -> "
         f"{import_check.PACKAGE}.models.b"]
    found = package({**clean, "models/b.py": "def f():\n    from . import a\n"})
    assert len(found) == 1 and found[0].startswith("import cycle (counting imports inside functions)")
    found = package({**clean, "models/e.py": "def f():\n    from ..onnx.d import z\n"})
    assert found == [f"{import_check.PACKAGE}.models.e imports {import_check.PACKAGE}.onnx (inside a function): "
                     "onnx is above models",
                     f"{import_check.PACKAGE}.models.e imports {import_check.PACKAGE}.onnx.d (inside a function): "
                     "onnx is above models"]
