"""Writing artifacts atomically (temporary file, then rename) and the JSON manifest beside each one."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterator

from . import __version__

MANIFEST_SUFFIX = ".json"


@contextlib.contextmanager
def atomic_output(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it replaces `dest`, on any error it is removed.

    A failed run therefore never leaves a half-written file and never touches an earlier artifact.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def write_json(dest: str | Path, data: dict) -> Path:
    with atomic_output(dest) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return Path(dest)


def write_manifest(artifact: str | Path, stage: str, data: dict) -> Path:
    """Record what produced `artifact` in `<artifact>.json`."""
    record = {
        "artifact": Path(artifact).name,
        "stage": stage,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **data,
        "versions": package_versions(),
    }
    return write_json(manifest_path(artifact), record)


def inherited(manifest: dict) -> dict:
    """What a derived artifact keeps of its source's manifest: everything but the record-keeping fields."""
    return {k: v for k, v in manifest.items() if k not in ("artifact", "stage", "created", "versions")}


def read_manifest(artifact: str | Path) -> dict | None:
    path = manifest_path(artifact)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def load_onnx(path: str | Path):
    """An ONNX model from a file the user named, or InputError with one clear line."""
    import onnx

    from .errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError and others with no common base
        raise InputError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:200]})") from None


def package_versions() -> dict[str, str]:
    versions = {"refiner-edge": __version__, "python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxruntime", "onnx-graphsurgeon", "tensorrt", "tensorrt-rtx"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions
