"""Each platform's install, resolved by pip's real resolver against the registry, as a new user would meet it: a wheel
of the project, `pip install --dry-run --only-binary=:all: --platform ... --python-version ... wheel[extra]`. Fails
when a platform stops resolving or resolves to a set that cannot run there (torch from the registry, cuda-python of
the wrong CUDA major, Triton on JetPack 6). Skipped with the reason where the registry cannot be reached.

--platform takes exact tags, so each platform lists the manylinux tags its glibc accepts (manylinux2014 = glibc 2.17
up to the platform's own: JetPack 6 is Ubuntu 22.04, glibc 2.35; JetPack 7 Ubuntu 24.04, 2.39; x86-64 servers from
glibc 2.28, RHEL 8). manylinux2014 alone finds no onnxruntime >= 1.18 for aarch64."""
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.registry

# name: (machine, glibc minor, Python, extra); the commands docs/jetson.md gives
PLATFORMS = {
    "jetpack6": ("aarch64", 35, "3.10", "jetpack6"),
    "jetpack7": ("aarch64", 39, "3.12", "jetpack7"),
    **{f"x86-cuda{cuda}-py{py}": ("x86_64", 28, py, f"cuda{cuda}")
       for cuda in (12, 13) for py in ("3.10", "3.11", "3.12", "3.13")},
}


def pip(*args, python: str = sys.executable, pip_only: Path | None = None, timeout=600) -> subprocess.CompletedProcess:
    """pip under `python`; with pip_only (a folder holding only a link to this environment's pip), this environment's
    pip: an interpreter's own pip can be years older (pip 23's resolver took minutes per platform here, pip 26's
    seconds)."""
    env = {**os.environ, "PYTHONPATH": str(pip_only)} if pip_only else None
    return subprocess.run([python, "-m", "pip", "--disable-pip-version-check", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def interpreter(version: str) -> str | None:
    """A Python `version`: pip evaluates environment markers (python_version) with the interpreter it runs
    in, whatever --python-version says, so each platform resolves under its own Python."""
    if version == f"{sys.version_info.major}.{sys.version_info.minor}":
        return sys.executable
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() \
        if any(Path(d, "pyenv").exists() for d in os.environ.get("PATH", "").split(os.pathsep)) else ""
    for candidate in [f"python{version}", *sorted(glob.glob(f"{root}/versions/{version}*/bin/python{version}"))]:
        try:
            if subprocess.run([candidate, "-c", ""], capture_output=True).returncode == 0:
                return candidate
        except FileNotFoundError:
            continue
    return None


@pytest.fixture(scope="module")
def pip_only(tmp_path_factory) -> Path:
    import pip as this_pip

    folder = tmp_path_factory.mktemp("pip")
    (folder / "pip").symlink_to(Path(this_pip.__file__).parent)
    return folder


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    reach = pip("index", "versions", "onnxruntime", timeout=120)
    if reach.returncode != 0:
        lines = [line for line in reach.stderr.splitlines() if line.strip()]
        pytest.skip(f"the package registry cannot be reached ({lines[-1] if lines else 'pip index failed'})")
    out = tmp_path_factory.mktemp("dist")
    built = pip("wheel", "--no-deps", "-q", "-w", out, ROOT)
    assert built.returncode == 0, built.stderr[-3000:]
    return next(out.glob("refiner_edge-*.whl"))


def resolve(wheel: Path, pip_only: Path, tmp: Path, machine: str, glibc: int, python: str,
            extra: str) -> dict[str, str]:
    runner = interpreter(python)
    if runner is None:
        pytest.skip(f"no Python {python} here: pip evaluates markers with the interpreter it runs in")
    tags = [f"manylinux2014_{machine}", *(f"manylinux_2_{i}_{machine}" for i in range(17, glibc + 1))]
    report = tmp / f"{extra}-{python}.json"
    result = pip("install", "--dry-run", "--ignore-installed", "--only-binary=:all:", "--quiet",
                 *(a for tag in tags for a in ("--platform", tag)), "--python-version", python,
                 "--target", tmp / "target", "--report", report, f"{wheel}[{extra}]", python=runner, pip_only=pip_only)
    assert result.returncode == 0, f"[{extra}] on {machine} Python {python}: " + result.stderr[-3000:]
    return {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
            for i in json.loads(report.read_text())["install"]}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_each_platform_resolves_to_a_set_that_runs_there(wheel, pip_only, tmp_path, platform):
    machine, glibc, python, extra = PLATFORMS[platform]
    got = resolve(wheel, pip_only, tmp_path, machine, glibc, python, extra)
    assert {"refiner-edge", "numpy", "onnxruntime", "onnx", "polygraphy", "tritonclient"} <= set(got), got
    assert got["numpy"].split(".")[0] == "2", got["numpy"]
    assert "torch" not in got and not any(n.startswith("tensorrt") for n in got), sorted(got)
    major = extra[-2:] if extra.startswith("cuda") else {"jetpack6": "12", "jetpack7": "13"}[extra]
    assert got["cuda-python"].split(".")[0] == major, got["cuda-python"]
    if extra == "jetpack6":   # CUDA 12.6 and no Triton there
        assert got["cuda-python"].startswith("12.6.") and "triton" not in got, sorted(got)
    elif python != "3.10":    # the AOT plugin form's kernel compiler
        assert "triton" in got, sorted(got)
