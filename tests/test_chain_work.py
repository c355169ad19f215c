"""The chain at the cost of its work: each file hashed once per command, the plugin prepared once per chain, and
what killed runs leave (scratch folders, a deploy's temporary folder) removed by the next run, never a live run's."""
import hashlib
import importlib.util
import os
from collections import Counter
from pathlib import Path

import pytest

from refiner_edge import artifacts

from .helpers import invoke

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt-rtx is not installed (pip install 'refiner-edge[rtx]')")
TINY_CHAIN = ("build", "--variant", "refiner-vit-tiny", "--target", "rtx-sm89", "--json")


def count_hashing(monkeypatch) -> Counter:
    """Each real read of a file for its SHA-256, by the file's identity (a staged file keeps its inode when it is
    published, so it stays one file)."""
    counts: Counter = Counter()
    real = artifacts._sha256

    def spy(f):
        st = os.fstat(f.fileno())
        counts[(st.st_dev, st.st_ino, Path(f.name).name)] += 1
        return real(f)

    monkeypatch.setattr(artifacts, "_sha256", spy)
    return counts


def hashed_more_than_once(counts: Counter) -> dict:
    return {name: n for (_, _, name), n in counts.items() if n > 1}


@rtx
@pytest.mark.torch
def test_the_chain_hashes_each_file_once(tmp_path, monkeypatch, sample_photos):
    """export -> calibrate (int8, with its cache) -> build: every stage file, its manifest checks and the stage keys
    ask for the same SHA-256s several times; each file is read once per command, made or reused."""
    images = tmp_path / "images"
    images.mkdir()
    for photo in sample_photos:
        (images / photo.name).symlink_to(photo)
    out = tmp_path / "out" / "t.engine"
    args = (*TINY_CHAIN, "--precision", "int8", "--calib-images", images, "-o", out)
    counts = count_hashing(monkeypatch)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    names = {name for _, _, name in counts}
    # the stage files and the calibration images were all hashed, each once
    assert {"t.onnx", "t.int8.onnx", "t.engine", *(p.name for p in sample_photos)} <= names, names
    assert hashed_more_than_once(counts) == {}
    counts.clear()
    again = invoke(*args)   # every stage reused: each published file is checked, once
    assert again.exit_code == 0, again.output
    assert {"t.onnx", "t.int8.onnx", "t.engine"} <= {name for _, _, name in counts}
    assert hashed_more_than_once(counts) == {}


def test_a_file_changed_between_commands_is_hashed_again(tmp_path):
    """The digests last one command: a file rewritten in place with the same size, even within the file system's
    timestamp granularity, has its new SHA-256 in the next command."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    with artifacts.hashing_once():
        first = artifacts.file_sha256(path)
        assert artifacts.file_sha256(path) == first
        replaced = tmp_path / "g.bin"
        replaced.write_bytes(b"b" * 100)
        os.replace(replaced, path)   # a new file at the same path: a new inode, read again
        assert artifacts.file_sha256(path) != first
    with open(path, "r+b") as f:   # in place, same size, same inode
        f.write(b"c")
    assert artifacts.file_sha256(path) == hashlib.sha256(b"c" + b"b" * 99).hexdigest()
