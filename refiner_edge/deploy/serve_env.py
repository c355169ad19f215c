"""serve's own environment: PyTriton with numpy<2, beside an environment on NumPy 2.

PyTriton 0.7.0 (August 2025) is the last release; its Python-backend stub is built for NumPy 1.x and it pins
numpy<2 (serve.py says what NumPy 2 does to it). Rather than hold every user of `serve` at NumPy 1.x, `serve` runs in a
virtual environment of its own: made once (`refiner-edge serve --setup`, or on first use, with a progress line),
found again afterwards by its folder, which names the interpreter and the requirements it was made for.

- Where: $REFINER_EDGE_SERVE_ENV if set, else $XDG_CACHE_HOME/refiner-edge (default ~/.cache/refiner-edge)/
  serve-py3XX-<hash of the requirements>.
- What: numpy<2, nvidia-pytriton 0.7, tritonclient, and the versions this environment has of the packages the runners
  use (onnxruntime, cuda-python ...), so the server runs the runner `infer` runs. Made with --system-site-packages
  when this environment sees the system's packages (JetPack's TensorRT).
- How it runs: the same refiner_edge package (this one, loaded from its folder, nothing else of this environment) under
  that environment's interpreter, so a source checkout serves its own code.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from ..errors import MissingDependencyError
from ..source import PACKAGE_DIR

ENV_VAR = "REFINER_EDGE_SERVE_ENV"
INSIDE_VAR = "REFINER_EDGE_IN_SERVE_ENV"   # set in the server's process: it must not look for another environment
PYTRITON = "nvidia-pytriton>=0.7,<0.8"
CLIENT = "tritonclient[http,grpc]>=2.56"
# Taken at this environment's versions where installed (the runner behind the server must be the one `infer` runs).
SHARED = ("onnx", "onnxruntime", "onnxruntime-extensions", "pillow", "typer", "rich", "tritonclient", "polygraphy",
          "cuda-python", "cuda-bindings", "pycuda")
STAMP = "refiner-edge-serve.json"
PACKAGE = PACKAGE_DIR   # the refiner_edge folder the server imports
# How the server's interpreter imports this refiner_edge and nothing else from this environment (whose site-packages
# holds NumPy 2): the package from its folder, then the command line.
BOOT = ("import importlib.util, sys\n"
        "pkg = sys.argv.pop(1)\n"
        "spec = importlib.util.spec_from_file_location('refiner_edge', pkg + '/__init__.py', "
        "submodule_search_locations=[pkg])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['refiner_edge'] = module\n"
        "spec.loader.exec_module(module)\n"
        "from refiner_edge.cli import run\n"
        "sys.argv[0] = 'refiner-edge'\n"
        "run()\n")


def requirements() -> list[str]:
    reqs = ["numpy<2", PYTRITON]
    for name in SHARED:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        reqs.append(f"{name}[http,grpc]=={version}" if name == "tritonclient" else f"{name}=={version}")
    if not any(r.startswith("tritonclient") for r in reqs):
        reqs.append(CLIENT)
    return reqs


def sees_system_packages() -> bool:
    """Whether this interpreter sees the system's site-packages (not a venv, or a venv made with them)."""
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    if sys.prefix == sys.base_prefix or not cfg.is_file():
        return True
    return any(line.replace(" ", "").lower() == "include-system-site-packages=true"
               for line in cfg.read_text().splitlines())


def spec() -> dict:
    """What the environment is made from; its hash names the folder."""
    return {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "base": sys.base_prefix,
            "system_site_packages": sees_system_packages(), "requirements": requirements()}


def folder() -> Path:
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "refiner-edge"
    s = spec()
    digest = hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:12]
    return cache / f"serve-py{s['python'].replace('.', '')}-{digest}"


def interpreter(root: Path) -> Path:
    return root / "bin" / "python"


def find() -> Path | None:
    """The interpreter of an environment already made for this spec, or None."""
    root = folder()
    try:
        made = json.loads((root / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return interpreter(root) if made == spec() and interpreter(root).exists() else None


def ensure(progress: Callable[[str], None] = lambda message: None) -> Path:
    """The interpreter of serve's environment, made first if needed (minutes, once). Concurrent callers wait for
    one another; a failed make leaves nothing behind and raises MissingDependencyError with pip's last line."""
    found = find()
    if found is not None:
        return found
    root = folder()
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        lock = open(root.parent / f"{root.name}.lock", "w")
    except OSError as e:
        raise MissingDependencyError(f"could not make serve's environment in {root} ({e.strerror}): set "
                                     f"{ENV_VAR} to a writable folder") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find()   # made by another process while this one waited
        if found is not None:
            return found
        s = spec()
        progress(f"making serve's environment (PyTriton with numpy<2) in {root}: once, a few minutes")
        building = root.with_name(f"{root.name}.building")
        shutil.rmtree(building, ignore_errors=True)
        try:
            venv = [sys.executable, "-m", "venv", str(building)]
            if s["system_site_packages"]:
                venv.append("--system-site-packages")
            _run(venv, "python -m venv")
            _run([str(interpreter(building)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  *s["requirements"]], "pip install")
            (building / STAMP).write_text(json.dumps(s, indent=1))
            shutil.rmtree(root, ignore_errors=True)
            # a venv's interpreter finds its site-packages from where it is, so the folder can be renamed into place
            os.replace(building, root)
        finally:
            shutil.rmtree(building, ignore_errors=True)
        progress(f"serve's environment is ready: {root}")
        return interpreter(root)


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        raise MissingDependencyError(f"could not make serve's environment ({what} failed: "
                                     f"{lines[-1] if lines else 'no output'})")


def serves_here() -> bool:
    """Whether `serve` runs in this process: this environment can serve (PyTriton, numpy<2), or it is serve's own
    environment already (which must not look for another one)."""
    from .serve import serving_unavailable

    return serving_unavailable() is None or bool(os.environ.get(INSIDE_VAR))


def serve_args(onnx: Path | None, engine: Path | None, options, as_json: bool, verbose: bool) -> list[str]:
    """The `refiner-edge serve` command line for serve's environment: `options` (deploy.serve.ServeOptions)
    resolved, so that both environments serve the same thing."""
    args = ["-v"] if verbose else []
    args += ["serve", "--engine", str(engine)] if engine is not None else ["serve", "--onnx", str(onnx)]
    args += ["--name", options.name, "--host", options.host, "--http-port", str(options.http_port),
             "--grpc-port", str(options.grpc_port), "--max-batch", str(options.max_batch),
             "--queue-delay-us", str(options.queue_delay_us)]
    for size in options.preferred_batch:
        args += ["--preferred-batch", str(size)]
    return args + (["--json"] if as_json else [])


def relaunch(args: list[str], progress: Callable[[str], None] = lambda message: None) -> None:
    """Run `refiner-edge serve ARGS` in serve's environment instead of this process: made on first use (a few
    minutes), then exec'd. Returns only by raising."""
    exec_serve(ensure(progress=progress), args)


def exec_serve(python: Path, args: list[str]) -> None:
    """Replace this process with `refiner-edge serve ARGS` under serve's environment (same pid, signals, exit code)."""
    env = {**os.environ, INSIDE_VAR: "1"}
    env.pop("PYTHONPATH", None)   # this environment's paths (NumPy 2) must not shadow that one's
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os.execve(str(python), [str(python), "-c", BOOT, str(PACKAGE), *args], env)
