"""The typed manifest: what every stage writes and every consumer reads (docs/manifest.md)."""
import json

import pytest

from refiner_edge.errors import InputError
from refiner_edge.manifest import SCHEMA_VERSION, parse_manifest, read_manifest, write_manifest

from .helpers import invoke

pytestmark = pytest.mark.torch_free


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("torch", reason="the manifest of an export: needs PyTorch, which this environment lacks")
    path = tmp_path_factory.mktemp("manifest") / "t.onnx"
    assert invoke("export", "--variant", "refiner-vit-tiny", "-o", path).exit_code == 0
    return path


def test_round_trip_and_fields(exported, tmp_path):
    m = read_manifest(exported)
    assert m.schema_version == SCHEMA_VERSION and m.stage == "export" and m.artifact == "t.onnx"
    assert m.model.variant == "refiner-vit-tiny" and m.model.refining_blocks == 2 and m.random_weights
    assert m.preprocess.resize_size == 71 and m.labels == "imagenet-1k" and m.graph.precision == "fp32"
    assert m.verification[0].metrics["max_rel"] < 1e-4 and len(m.sha256) == 64
    data = json.loads(exported.with_name("t.onnx.json").read_text())
    assert list(data)[0] == "schema_version"
    assert parse_manifest(data) == m
    # a derived artifact: model, preprocessing, labels and the verification history carry over
    child = tmp_path / "c.onnx"
    child.write_bytes(b"derived")
    derived = m.derive("fuse", child, exported, report={"k": 1})
    write_manifest(child, derived)
    again = read_manifest(child)
    assert again.source.artifact == "t.onnx" and again.source.sha256 == m.sha256 and again.source.stage == "export"
    assert again.model == m.model and again.verification == m.verification and again.report == {"k": 1}
    assert again.sha256 != m.sha256 and again.stage == "fuse"


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("schema_version"), "no schema_version"),
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "is newer than this refiner-edge reads"),
    (lambda d: d["model"].pop("heads"), "model: missing field 'heads'"),
    (lambda d: d["model"].update(img_size="224"), "model: img_size should be int, got str"),
    (lambda d: d["model"].update(aux_head=1), "model: aux_head should be bool, got int"),
    (lambda d: d["graph"].update(batch=None), "graph: batch must not be null"),
    (lambda d: d["preprocess"].update(mean="0.5"), "preprocess: mean should be list"),
    (lambda d: d.update(verification=[{"stage": "x"}]), "verification[0]: missing field"),
    (lambda d: d.update(model=[]), "model: expected an object"),
])
def test_malformed_manifests_are_refused(exported, change, message):
    data = json.loads(exported.with_name("t.onnx.json").read_text())
    change(data)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_manifest(data, "t.onnx.json")


def test_unknown_fields_are_ignored_and_absent_manifest_is_none(exported, tmp_path):
    data = json.loads(exported.with_name("t.onnx.json").read_text())
    data["model"]["future_field"] = 1
    assert parse_manifest(data).model.variant == "refiner-vit-tiny"
    assert read_manifest(tmp_path / "none.onnx") is None
    with pytest.raises(InputError, match="has no manifest"):
        read_manifest(tmp_path / "none.onnx", required=True)


def test_a_manifest_that_no_longer_describes_its_file_is_refused(exported, tmp_path, sample_photos):
    import shutil

    copy = tmp_path / "t.onnx"
    shutil.copy(exported, copy)
    shutil.copy(exported.with_name("t.onnx.json"), tmp_path / "t.onnx.json")
    assert read_manifest(copy).sha256 == read_manifest(exported).sha256
    copy.write_bytes(copy.read_bytes() + b"\0")  # the artifact replaced, its manifest not
    with pytest.raises(InputError, match="does not describe t.onnx"):
        read_manifest(copy)
    from .helpers import assert_clean_failure

    assert_clean_failure(invoke("infer", sample_photos[0], "--onnx", copy), "SHA-256 differs")


def test_manifest_doc_names_the_fp32_op_fields_the_code_writes():
    """docs/manifest.md lists the keys of each `fp32_ops` entry; calibrate writes precision.fp16.Fp32Node's fields."""
    import dataclasses
    import re
    from pathlib import Path

    from refiner_edge.precision.fp16 import Fp32Node

    doc = (Path(__file__).resolve().parents[1] / "docs" / "manifest.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `fp32_ops`"))
    documented = re.search(r"`\{([^}]*)\}`", row).group(1)
    assert [k.strip() for k in documented.split(",")] == [f.name for f in dataclasses.fields(Fp32Node)]
