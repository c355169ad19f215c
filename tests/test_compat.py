"""The one engine-compatibility rule, decided by Python (refiner_edge/engine/checks.py) and by the C++ library
(cpp/src/checks.cpp) on the same table of cases,
tests/data/engine_compat.json: TensorRT versions with and without build numbers, minor and patch releases,
version-compatible plans, the RTX flavour, compute capabilities with and without hardware compatibility, no GPU,
and the plugin library's presence and hash. Each side must give the table's verdict in the table's words.

The C++ side is the library's checks.cpp with the manifest reader it needs, compiled with g++ into the small
driver tests/cpp/check_engine_main.cpp (about 5 s here), not the CMake build test_cpp.py makes.
"""
from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from refiner_edge.artifacts import file_sha256
from refiner_edge.engine.checks import Runtime, check_engine, read_engine_manifest
from refiner_edge.errors import InputError
from refiner_edge.images.preprocess import Preprocess
from refiner_edge.manifest import EngineInfo, GraphInfo, Manifest, ModelInfo, Profile, write_manifest

from .helpers import compile_cpp_driver

ROOT = Path(__file__).resolve().parents[1]
CASES = json.loads((ROOT / "tests" / "data" / "engine_compat.json").read_text())["cases"]
SOURCES = [ROOT / "tests" / "cpp" / "check_engine_main.cpp",
           *(ROOT / "cpp" / "src" / name for name in ("checks.cpp", "manifest.cpp", "json.cpp", "sha256.cpp"))]
LIBRARY = "lib/librefiner_edge_plugin.so"
REBUILD = "refiner-edge build --onnx model.onnx --target orin-agx-jp6 -o model.engine"


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    return compile_cpp_driver(SOURCES, tmp_path_factory.mktemp("probe") / "check_engine", "the C++ side of the engine checks")


def _manifest(**engine) -> Manifest:
    m = Manifest(stage="build", artifact="model.engine", labels="imagenet-1k",
                 model=ModelInfo("refiner-vit-s", 224, 1000, 12, 8, False, None),
                 preprocess=Preprocess(224, 0.9, (0.5,) * 3, (0.5,) * 3, "bicubic").record(),
                 graph=GraphInfo(input="input", output="logits", batch="dynamic", opset=19, precision="fp16",
                                 fused=False))
    m.engine = EngineInfo(flavour="tensorrt", tensorrt_version="10.3.0", target="orin-agx-jp6",
                          compute_capability="8.7", device="Jetson AGX Orin", precision="fp16", typing="strong",
                          profiles=[Profile("input", [1, 3, 224, 224], [4, 3, 224, 224], [8, 3, 224, 224])],
                          plugin_form="none", plugin_library=None, plugin_sha256=None, dla_core=None,
                          workspace=1 << 30, builder_optimization_level=3, hardware_compatibility="none",
                          version_compatible=False, timing_cache=None, build_seconds=1.0, rebuild=REBUILD)
    for key, value in engine.items():
        setattr(m.engine, key, value)
    return m


def _engine(folder: Path, case: dict) -> Path:
    """The case's engine (a stand-in plan) with its manifest, and its plugin library as the case says."""
    folder.mkdir()
    engine = folder / "model.engine"
    engine.write_bytes(b"\x00plan bytes")
    overrides = dict(case["engine"])
    plugin = case.get("plugin")
    if plugin is not None:
        library = folder / LIBRARY
        library.parent.mkdir()
        library.write_bytes(b"the library the engine was built with")
        overrides.update(plugin_library=LIBRARY, plugin_sha256=file_sha256(library))   # relative: to the engine
        if plugin == "other":
            library.write_bytes(b"a library built later")
        elif plugin == "missing":
            library.unlink()
    write_manifest(engine, _manifest(**overrides))
    return engine


def _python(engine: Path, runtime: list) -> str:
    try:
        check_engine(engine, read_engine_manifest(engine), Runtime(*runtime))
    except InputError as e:
        return str(e)
    return "ok"


def _cpp(probe: Path, engine: Path, runtime: list, cwd: Path) -> str:
    flavour, version, cc, gpu = runtime
    done = subprocess.run([str(probe), str(engine), flavour, version, cc or "none", gpu],
                          capture_output=True, text=True, timeout=60, cwd=cwd)
    assert done.returncode in (0, 1), done.stderr
    return done.stdout.strip() if done.returncode == 0 else done.stderr.strip().removeprefix("error: ")


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_python_and_cpp_decide_the_table_alike(case, probe, tmp_path, monkeypatch):
    engine = _engine(tmp_path / "engine", case)
    expect = case["expect"].format(engine=engine.name, rebuild=rebuilt(engine))
    elsewhere = tmp_path / "elsewhere"   # relative plugin paths resolve against the engine, not the working dir
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert _python(engine, case["runtime"]) == expect
    assert _cpp(probe, engine, case["runtime"], elsewhere) == expect


def rebuilt(engine: Path) -> str:
    """REBUILD with its -o naming `engine` where it lies now: the manifest's line names where it was built."""
    return REBUILD.removesuffix(" -o model.engine") + " -o " + shlex.quote(str(engine.absolute()))


@pytest.mark.parametrize("folder", ["copied", "with space", "it's here", "a -o b", "naïve"])
def test_rebuild_line_names_the_engine_where_it_lies(folder, probe, tmp_path, monkeypatch):
    """An engine copied elsewhere with its manifest: the rebuild line must name the copy (quoted as a shell needs),
    not the file it was first written to, in Python and in C++ alike, from any working directory."""
    case = next(c for c in CASES if c["expect"] != "ok" and "{rebuild}" in c["expect"])
    engine = _engine(tmp_path / folder, case)
    monkeypatch.chdir(tmp_path)
    relative = Path(folder) / engine.name
    expect = case["expect"].format(engine=engine.name, rebuild=rebuilt(engine))
    assert shlex.split(expect.split("rebuild with: ")[1])[-2:] == ["-o", str(engine)]
    assert _python(relative, case["runtime"]) == expect
    assert _cpp(probe, relative, case["runtime"], tmp_path) == expect


def test_table_covers_the_rule():
    """Both verdicts for each part of the rule, so a side that always says ok (or always refuses) fails."""
    verdicts = {(c["expect"] == "ok", key) for c in CASES for key in ("tensorrt_version", "compute_capability",
                                                                      "flavour") if key in c["engine"]}
    plugin = {c["plugin"]: c["expect"] == "ok" for c in CASES if "plugin" in c}
    assert {(True, "tensorrt_version"), (False, "tensorrt_version"), (True, "compute_capability"),
            (False, "compute_capability"), (True, "flavour"), (False, "flavour")} <= verdicts
    assert plugin == {"same": True, "other": False, "missing": False}
