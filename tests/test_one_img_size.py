"""One image size (issue 25): the manifest keeps it once, as model.img_size (schema 2), and both readers still read a
schema 1 manifest that wrote it in preprocess too, refusing one whose two sizes differ with the same line; and the
attention-map estimate takes its token count from the variant (VariantConfig.tokens), not from `img // 16`.

The C++ side is the library's manifest reader compiled with g++ into the small driver
tests/cpp/read_manifest_main.cpp (a few seconds), as tests/test_compat.py does for the engine checks.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from refiner_edge.errors import InputError
from refiner_edge.images.preprocess import Preprocess
from refiner_edge.manifest import SCHEMA_VERSION, parse_manifest, read_manifest, write_manifest

from .helpers import compile_cpp_driver
from .manifest_cases import good_manifest

pytestmark = pytest.mark.torch_free

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "tests" / "cpp" / "read_manifest_main.cpp",
           *(ROOT / "cpp" / "src" / name for name in ("manifest.cpp", "json.cpp"))]
DIFFERS = ("M: preprocess: img_size 256 differs from model: img_size 224 (the crop is the model's input size)")


def schema_1(**preprocess) -> dict:
    """The manifest as refiner-edge wrote it before schema 2: the image size in model and in preprocess."""
    data = copy.deepcopy(good_manifest())
    data["schema_version"] = 1
    data["preprocess"] = {"img_size": data["model"]["img_size"], **data["preprocess"], **preprocess}
    return data


def with_model(data: dict, **model) -> dict:
    data = copy.deepcopy(data)
    data["model"].update(model)
    return data


# (case, manifest, what both readers say: (schema, model img_size, preprocess img_size, resize_size) or the error)
CASES = [
    ("written now", good_manifest(), (SCHEMA_VERSION, 224, 224, 248)),
    ("written now at 96", with_model({**good_manifest(), "preprocess": {**good_manifest()["preprocess"],
                                                                         "resize_size": 106}}, img_size=96),
     (SCHEMA_VERSION, 96, 96, 106)),
    ("schema 1, sizes agree", schema_1(), (1, 224, 224, 248)),
    ("schema 1, sizes differ", schema_1(img_size=256, resize_size=284), DIFFERS),
    ("schema 1, preprocess size out of range", schema_1(img_size=0),
     "M: preprocess: img_size 0 is out of range (1 to 8192)"),
    ("schema 1, preprocess size null", schema_1(img_size=None), "M: preprocess: img_size must not be null"),
    ("schema 1, preprocess size as text", schema_1(img_size="224"), "M: preprocess: img_size should be int, got str"),
    ("no size at all", with_model(good_manifest(), img_size=None), "M: model: img_size must not be null"),
    ("resize held to the model's size", with_model(good_manifest(), img_size=256),
     "manifest preprocessing is inconsistent: resize_size 248 but floor(img_size / crop_pct) = 284"),
]


def python_reads(data: dict):
    try:
        m = parse_manifest(json.loads(json.dumps(data)), "M")
    except InputError as e:
        return str(e)
    return m.schema_version, m.model.img_size, m.preprocess.img_size, m.preprocess.resize_size


def test_the_manifest_writes_one_img_size_and_reads_it_back(tmp_path):
    data = good_manifest()
    assert data["schema_version"] == SCHEMA_VERSION == 2
    assert data["model"]["img_size"] == 224 and "img_size" not in data["preprocess"]
    artifact = tmp_path / "model.engine"
    artifact.write_bytes(b"plan")
    m = parse_manifest(data)
    write_manifest(artifact, m)
    written = json.loads((tmp_path / "model.engine.json").read_text())
    assert "img_size" not in written["preprocess"] and written["model"]["img_size"] == 224
    back = read_manifest(artifact)
    assert back.model == m.model and back.preprocess == m.preprocess and back.preprocess.img_size == 224
    # the preprocessing built from the record crops the model's size
    assert Preprocess.from_record(back.preprocess).img_size == 224


def test_a_schema_1_manifest_still_reads_and_is_written_as_schema_2(tmp_path):
    artifact = tmp_path / "model.engine"
    artifact.write_bytes(b"plan")
    old = schema_1()
    (tmp_path / "model.engine.json").write_text(json.dumps({**old, "sha256": ""}))
    m = read_manifest(artifact)
    assert m.schema_version == 1 and m.model.img_size == m.preprocess.img_size == 224
    # a stage deriving from it writes the current schema, the size once (derive keeps the read version number)
    derived = m.derive("build", artifact, artifact)
    write_manifest(artifact, derived)
    written = json.loads((tmp_path / "model.engine.json").read_text())
    assert written["schema_version"] == SCHEMA_VERSION and "img_size" not in written["preprocess"]


def test_disagreeing_sizes_are_refused_with_one_line(tmp_path):
    artifact = tmp_path / "model.engine"
    artifact.write_bytes(b"plan")
    (tmp_path / "model.engine.json").write_text(json.dumps(schema_1(img_size=256, resize_size=284)))
    with pytest.raises(InputError) as e:
        read_manifest(artifact, verify=False)
    assert str(e.value) == DIFFERS.replace("M:", f"{tmp_path / 'model.engine.json'}:", 1)
    assert len(str(e.value).splitlines()) == 1


def test_a_manifest_cannot_be_written_with_two_sizes(tmp_path):
    artifact = tmp_path / "model.engine"
    artifact.write_bytes(b"plan")
    m = parse_manifest(good_manifest())
    m = dataclasses.replace(m, preprocess=dataclasses.replace(m.preprocess, img_size=256))
    with pytest.raises(ValueError, match="preprocess img_size 256 is not the model's 224"):
        write_manifest(artifact, m)
    assert not (tmp_path / "model.engine.json").exists()


@pytest.mark.parametrize("name,data,expected", CASES, ids=[c[0] for c in CASES])
def test_python_reader(name, data, expected):
    assert python_reads(data) == expected


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> Path:
    return compile_cpp_driver(SOURCES, tmp_path_factory.mktemp("reader") / "read_manifest", "the C++ manifest reader")


def test_cpp_reader_agrees_with_python(reader, tmp_path):
    path = tmp_path / "M"
    for name, data, expected in CASES:
        path.write_text(json.dumps(data))
        r = subprocess.run([str(reader), str(path)], capture_output=True, text=True, timeout=30)
        if isinstance(expected, str):
            assert r.returncode == 1 and r.stderr == f"error: {expected}\n", (name, r.stdout, r.stderr)
        else:
            assert r.returncode == 0 and r.stdout.split() == ["ok", *map(str, expected)], (name, r.stderr)
        assert python_reads(data) == expected, name


def test_attention_bytes_and_check_fits_count_the_variants_tokens(monkeypatch):
    """A variant with 32-pixel patches has (448 / 32)^2 + 1 = 197 tokens at 448, not the 785 of `448 // 16`."""
    from refiner_edge.engine.plan import check_fits, planned_network
    from refiner_edge.engine.targets import attention_bytes
    from refiner_edge.models import variants

    wide = dataclasses.replace(variants.get_variant("refiner-vit-s"), name="refiner-vit-s32", patch_size=32)
    monkeypatch.setitem(variants.VARIANTS, wide.name, wide)
    assert wide.tokens(448) == 197
    assert attention_bytes(12, 448, "fp32", wide.name) == 4 * 12 * 197 * 197 * 4
    assert attention_bytes(12, 448, "fp16", "refiner-vit-s") == 4 * 12 * 785 * 785 * 2
    network = planned_network(wide.name, 448)
    check_fits(network, "fp32", ((1, 1, 1),), 1 << 30)   # 7.5 MB per image fits a GiB
    with pytest.raises(InputError) as e:
        check_fits(network, "fp32", ((64, 64, 64),), 1 << 28)
    assert "(12 heads, 197 tokens)" in str(e.value) and "0.5 GB" in str(e.value)
