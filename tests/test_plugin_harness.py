"""The RefinerDLA plugin host harness (tests/plugin_harness): the plugin library compiled against each TensorRT header
set in ../shared/tensorrt-headers with -Wall -Wextra -Werror under AddressSanitizer, UBSan and LeakSanitizer, loaded
as TensorRT's registry loads it and by a bare dlopen, and driven through TensorRT's call sequence with a stand-in
libnvinfer and a host-memory CUDA runtime that records and checks every launch (tests/plugin_harness/harness.cpp).

The header sets are looked for in $REFINER_EDGE_TENSORRT_HEADERS, else ../shared/tensorrt-headers beside the checkout.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .helpers import tensorrt_header_sets

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "plugins" / "refiner_dla"
HARNESS_DIR = ROOT / "tests" / "plugin_harness"
VERSIONS = ("10.3.0", "10.13.3", "11.1")
SCENARIOS = ("sequence", "bare", "linked", "first", "preload")
EXPORTS = {"getCreators", "setLoggerFinder", "refinerEdgePluginTensorRTVersion"}

pytestmark = pytest.mark.slow


def _headers_root() -> Path:
    root = tensorrt_header_sets()
    if not root.is_dir():
        pytest.skip(f"TensorRT header sets not found at {root} (set REFINER_EDGE_TENSORRT_HEADERS)")
    return root


def _tools() -> dict[str, str]:
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if nvcc is None:
        pytest.skip("nvcc not found: the kernel's host code cannot be compiled on this machine")
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the plugin cannot be compiled on this machine")
    return {"NVCC": nvcc, "CXX": "g++"}


def _build(out: Path, source: Path, versions, reuse_from: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **_tools()}
    if reuse_from is not None:
        env["REUSE_FROM"] = str(reuse_from)
    return subprocess.run(["bash", str(HARNESS_DIR / "build.sh"), str(out), str(source), str(_headers_root()),
                           *versions], capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def harness_build(tmp_path_factory) -> Path:
    root = _headers_root()
    missing = [v for v in VERSIONS if not (root / v / "include" / "NvInfer.h").is_file()]
    if missing:
        pytest.skip(f"TensorRT header sets {missing} not found under {root}")
    out = tmp_path_factory.mktemp("plugin-harness")
    built = _build(out, PLUGIN_DIR, VERSIONS)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    return out


def _major(version: str) -> str:
    return version.split(".")[0]


def _run(build_dir: Path, version: str, scenario: str) -> subprocess.CompletedProcess:
    lib_dir = build_dir / version
    plugin = lib_dir / ("librefiner_edge_plugin_linked.so" if scenario == "linked" else "librefiner_edge_plugin.so")
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:exitcode=23",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    if scenario in ("first", "preload"):
        # the library finds libnvinfer.so.<major> by its soname, as on a machine with TensorRT installed
        env["LD_LIBRARY_PATH"] = f"{lib_dir}:{env.get('LD_LIBRARY_PATH', '')}"
    if scenario == "preload":
        asan = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
        env["LD_PRELOAD"] = f"{asan}:{plugin}"  # the sanitizer's runtime must come first
    return subprocess.run([str(lib_dir / "harness"), scenario, str(plugin), str(lib_dir / f"libnvinfer.so.{_major(version)}")],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_harness(harness_build, version, scenario):
    """Every check of the scenario passes with no sanitizer report, against this header set."""
    result = _run(harness_build, version, scenario)
    log = result.stdout[-6000:] + result.stderr[-6000:]
    assert result.returncode == 0, log
    assert re.search(rf"harness {scenario}: \d+ checks, 0 failures", result.stdout), log
    assert "ERROR: AddressSanitizer" not in result.stderr and "runtime error" not in result.stderr, log
    if scenario == "sequence":
        checks = int(re.search(r"(\d+) checks", result.stdout).group(1))
        assert checks > 1000, log  # the whole sequence ran, not an early return


@pytest.mark.parametrize("version", VERSIONS)
def test_exports_and_imports(harness_build, version):
    """The library exports exactly its three entry points, and imports from the CUDA runtime only what the harness's
    runtime implements (the link used -z defs) and TensorRT's two functions weakly (it must load without them)."""
    lib = harness_build / version / "librefiner_edge_plugin.so"
    defined = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout
    exported = {line.split()[-1] for line in defined.splitlines() if line.split()[1] == "T"}
    assert exported == EXPORTS
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(lib)], capture_output=True, text=True).stdout
    weak = {line.split()[-1] for line in undefined.splitlines() if line.split()[0] == "w"}
    assert {"getPluginRegistry", "getLogger"} <= weak, undefined


def test_mutation_without_cudafree_fails(harness_build, tmp_path):
    """The harness is not blind: the plugin with the device weights' cudaFree removed (a copy of the sources) fails."""
    source = tmp_path / "src"
    shutil.copytree(PLUGIN_DIR, source)
    plugin_cpp = source / "refinerDLAPlugin.cpp"
    text = plugin_cpp.read_text()
    assert text.count("cudaFree(copy.second);") == 1
    plugin_cpp.write_text(text.replace("cudaFree(copy.second);", "(void) copy;"))
    built = _build(tmp_path / "out", source, ("10.13.3",), reuse_from=harness_build)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    result = _run(tmp_path / "out", "10.13.3", "sequence")
    assert result.returncode != 0, result.stdout[-3000:]
    assert "device memory never freed" in result.stdout or "LeakSanitizer" in result.stderr


PROBE = """
import tensorrt_rtx as trt
registry = trt.get_plugin_registry()
def registered():
    return registry.get_creator("RefinerDLA", "1", "refiner_edge") is not None
print("at start-up", registered())
handle = registry.load_library({lib!r})
print("load_library", handle is not None, registered())
print("again", registry.load_library({lib!r}) is not None, registered())
registry.deregister_library(handle)
print("deregistered", registered())
"""


def test_real_registry_takes_a_preloaded_library_then_load_library(tmp_path):
    """Against a real TensorRT registry, TensorRT-RTX's (it runs on CPU here; its IPluginRegistry has TensorRT 11's
    interface): under LD_PRELOAD the library registers at start-up, load_library of the same file then succeeds (the
    load-time registration gives way inside getCreators, with no deadlock), a second load is refused as a duplicate,
    and deregister_library removes RefinerDLA."""
    import importlib.util
    import sys

    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    if spec is None or importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("tensorrt-rtx is not installed: no real TensorRT registry to load the library into")
    rtx = Path(spec.submodule_search_locations[0]) / "libtensorrt_rtx.so.1"
    headers = _headers_root() / "11.1" / "include"
    if not rtx.is_file() or not headers.is_dir():
        pytest.skip(f"{rtx.name} or the TensorRT 11.1 headers not found")
    tools = _tools()
    lib = tmp_path / "librefiner_edge_plugin.so"
    built = subprocess.run([tools["NVCC"], "-std=c++17", "-O1", "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden",
                            "-gencode=arch=compute_90,code=sm_90", f"-I{PLUGIN_DIR}", "-isystem", str(headers),
                            str(PLUGIN_DIR / "refinerDLAKernel.cu"), str(PLUGIN_DIR / "refinerDLAPlugin.cpp"), "-ldl",
                            "-o", str(lib)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    # a TensorRT 11 build looks for libnvinfer.so.11: here that name is TensorRT-RTX's library, whose soname the
    # tensorrt_rtx bindings then find already loaded, as a host's libnvinfer would be
    (tmp_path / "libnvinfer.so.11").symlink_to(rtx)
    env = {**os.environ, "LD_PRELOAD": str(lib),
           "LD_LIBRARY_PATH": f"{tmp_path}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    result = subprocess.run([sys.executable, "-c", PROBE.format(lib=str(lib))], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.split("\n")[:4] == ["at start-up True", "load_library True True", "again False True",
                                            "deregistered False"], result.stdout + result.stderr[-2000:]
