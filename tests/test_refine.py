"""The fused refinement on CPU: folding, references, graph surgery, ONNX Runtime op, PyTorch op."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from refiner_edge.models.factory import create_model
from refiner_edge.errors import InputError, VerificationError
from refiner_edge.onnx.export import export_onnx
from refiner_edge.refine import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION
from refiner_edge.refine.fold import FoldedDLA, fold_attention
from refiner_edge.refine import layout
from refiner_edge.refine.layout import packed_size
from refiner_edge.refine.reference import refiner_dla_numpy, refiner_dla_torch
from refiner_edge.refine.attributes import folded_from_attributes
from refiner_edge.refine.fuse import fuse_onnx
from refiner_edge.refine.surgery import fuse_graph
from refiner_edge.refine.torch_op import fuse_model, unfuse_model
from refiner_edge.onnx.session import ort_session

from .helpers import randomize

# Only the tests that run a fused graph on ONNX Runtime need onnxruntime-extensions (the reference RefinerDLA op);
# folding, the references, the layout and the PyTorch op run without it.
needs_ort_extensions = pytest.mark.skipif(importlib.util.find_spec("onnxruntime_extensions") is None,
                                          reason="the reference RefinerDLA op on ONNX Runtime needs "
                                                 "onnxruntime-extensions")


def _maps(b, h, n, seed=0):
    """Attention-like maps: softmax rows plus a previous map, as the refining blocks receive them."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, n, n, generator=g) * 3).softmax(-1) + 0.1 * torch.rand(b, h, n, n, generator=g)


@pytest.mark.parametrize("variant", ["refiner-vit-tiny", "refiner-vit-s"])
def test_fold_matches_unfused_module(variant):
    model = randomize(create_model(variant), seed=11)
    attn = model.blocks[1].attn
    a = _maps(2, model.cfg.heads, 29)
    with torch.no_grad():
        ref = attn.refine_map(a.double().float()).double()
    folded = fold_attention(attn)
    assert (folded.heads, folded.expanded) == (model.cfg.heads, 3 * model.cfg.heads)
    out = refiner_dla_numpy(a.numpy(), folded, dtype=np.float64)
    rel = np.abs(out - ref.numpy()).max() / np.abs(ref.numpy()).max()
    assert rel < 1e-5, rel


def test_references_agree_and_pack_round_trips():
    folded = fold_attention(randomize(create_model("refiner-vit-tiny"), seed=2).blocks[3].attn)
    flat = folded.packed()
    assert flat.size == packed_size(4, 12) and flat.dtype == np.float32
    back = FoldedDLA.unpack(flat, 4)
    assert all(np.array_equal(getattr(back, k), getattr(folded, k)) for k in ("w1", "wd", "w2", "alpha"))
    with pytest.raises(ValueError, match="do not fit"):
        FoldedDLA.unpack(flat[:-1], 4)
    a = _maps(3, 4, 17, seed=5)
    np_out = refiner_dla_numpy(a.numpy(), folded, dtype=np.float64)
    torch_out = refiner_dla_torch(a, torch.from_numpy(flat), 4).double().numpy()
    assert np.abs(np_out - torch_out).max() / np.abs(np_out).max() < 1e-6


def test_layout_is_one_description():
    """Offsets, the packed length and its inverse all come from layout.FIELDS, and FoldedDLA packs in that order."""
    heads, expanded = 4, 12
    starts, sizes = layout.offsets(heads, expanded), layout.shapes(heads, expanded)
    assert list(starts) == list(layout.PACK_ORDER) == [name for name, _ in layout.FIELDS]
    assert sizes["w1"] == (12, 4) and sizes["wd"] == (12, 3, 3) and sizes["alpha"] == (4,)
    ends = [starts[k] + int(np.prod(sizes[k])) for k in layout.PACK_ORDER]
    assert ends[:-1] == [starts[k] for k in layout.PACK_ORDER[1:]] and ends[-1] == packed_size(heads, expanded)
    assert packed_size(heads, expanded) == 2 * 12 * 4 + 11 * 12 + 2 * 4
    for h in (1, 4, 12, 16, 32):
        for e in (1, 3 * h, 4 * h, 127):
            assert layout.expanded_of(packed_size(h, e), h) == e
    for bad in (packed_size(4, 12) - 1, packed_size(4, 12) + 1, 0):
        with pytest.raises(ValueError, match="do not fit"):
            layout.expanded_of(bad, 4)
    folded = fold_attention(randomize(create_model("refiner-vit-tiny"), seed=2).blocks[1].attn)
    flat = folded.packed()
    starts = layout.offsets(folded.heads, folded.expanded)
    assert np.array_equal(flat[starts["b2"]:starts["alpha"]], folded.b2)


def test_cpp_layout_header_is_generated_from_python():
    """plugins/refiner_dla/refinerDLALayout.h is what refine/layout.py generates (regenerate it when this fails)."""
    header = Path(__file__).resolve().parents[1] / "plugins" / "refiner_dla" / "refinerDLALayout.h"
    assert header.read_text() == layout.cpp_header(), \
        "stale header: python -m refiner_edge.refine.layout > plugins/refiner_dla/refinerDLALayout.h"


def test_plugin_readme_lists_the_layout():
    """The field table of plugins/refiner_dla/README.md names the weight fields in layout order, with their shapes."""
    readme = (Path(__file__).resolve().parents[1] / "plugins" / "refiner_dla" / "README.md").read_text()
    rows = [line.split("|")[1:4] for line in readme.splitlines() if line.startswith("| `") and "FLOAT32 |" in line]
    table = [(name.strip().strip("`"), length.strip()) for name, _, length in rows]
    expected = [(name, " x ".join(map(str, shape))) for name, shape in layout.FIELDS]
    assert table == expected


def test_depthwise_padding_is_zero_outside_the_map():
    """x1 is zero outside the map, not relu6(b1): a positive b1 shows the difference at the border."""
    h, e = 1, 1
    folded = FoldedDLA(w1=np.zeros((e, h), np.float32), b1=np.full(e, 2.0, np.float32),
                       wd=np.ones((e, 3, 3), np.float32), bd=np.zeros(e, np.float32),
                       w2=np.ones((h, e), np.float32), b2=np.zeros(h, np.float32), alpha=np.zeros(h, np.float32))
    out = refiner_dla_numpy(np.zeros((1, 1, 4, 4), np.float32), folded)[0, 0]
    # interior sums nine 2s (then relu6 caps at 6); a corner sees four, an edge six
    assert out[0, 0] == 6.0 and out[1, 1] == 6.0
    folded.wd[:] = 0.25
    out = refiner_dla_numpy(np.zeros((1, 1, 4, 4), np.float32), folded)[0, 0]
    assert out[0, 0] == pytest.approx(2.0) and out[0, 1] == pytest.approx(3.0) and out[1, 1] == pytest.approx(4.5)


@pytest.fixture(scope="module")
def plain_s(tmp_path_factory):
    model = randomize(create_model("refiner-vit-s"), seed=21)
    path = tmp_path_factory.mktemp("s") / "s.onnx"
    export_onnx(model, path)
    return model, path


@needs_ort_extensions
def test_fused_refiner_s_equals_plain_graph(plain_s, tmp_path):
    model, plain = plain_s
    fused = tmp_path / "s.fused.onnx"
    result = fuse_onnx(plain, fused, thresholds={"max_rel_error": 1e-5})
    assert result.report["fused_nodes"] == 8 and result.comparison.max_rel < 1e-5
    graph = onnx.load(str(fused))
    nodes = [n for n in graph.graph.node if n.op_type == PLUGIN_NAME]
    assert len(nodes) == 8
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["plugin_version"] == PLUGIN_VERSION.encode() and attrs["plugin_namespace"] == PLUGIN_NAMESPACE.encode()
    assert attrs["num_heads"] == 12 and attrs["num_expanded"] == 36
    # the node's weights are the folded weights of the matching block
    expected = fold_attention(model.blocks[1].attn)
    got = folded_from_attributes(attrs)
    assert np.allclose(got.w2, expected.w2, rtol=1e-6, atol=1e-7) and np.allclose(got.alpha, expected.alpha)
    # no DLA op remains; everything else is untouched
    plain_ops = [n.op_type for n in onnx.load(str(plain)).graph.node]
    fused_ops = [n.op_type for n in graph.graph.node]
    assert fused_ops.count("BatchNormalization") == 0 and plain_ops.count("BatchNormalization") == 8
    assert fused_ops.count("MatMul") == plain_ops.count("MatMul")
    assert fused_ops.count("Softmax") == plain_ops.count("Softmax")
    assert fused_ops.count("Conv") == plain_ops.count("Conv") - 3 * 8
    manifest = json.loads((tmp_path / "s.fused.onnx.json").read_text())
    assert manifest["graph"]["fused"] and manifest["graph"]["plugin"]["nodes"] == 8
    assert manifest["model"]["variant"] == "refiner-vit-s" and manifest["source"]["artifact"] == "s.onnx"
    # and the fused graph predicts what PyTorch predicts, through the same session helper `infer` uses
    x = np.random.default_rng(3).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = ort_session(fused).run(None, {"input": x})[0]
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-5


@needs_ort_extensions
@pytest.mark.slow
@pytest.mark.parametrize("variant,blocks", [("refiner-vit-m", 16), ("refiner-vit-l", 16)])
def test_every_variant_fuses(tmp_path, variant, blocks):
    model = randomize(create_model(variant), seed=4)
    plain = tmp_path / "p.onnx"
    export_onnx(model, plain, batch=1)
    result = fuse_onnx(plain, tmp_path / "f.onnx", thresholds={"max_rel_error": 1e-5})
    assert result.report["fused_nodes"] == blocks and result.comparison


@needs_ort_extensions
def test_fuse_tiny_at_other_resolution_and_in_place(tmp_path):
    model = randomize(create_model("refiner-vit-tiny", img_size=96), seed=8)
    path = tmp_path / "t.onnx"
    export_onnx(model, path)
    result = fuse_onnx(path, path)  # `export --fuse` rewrites in place
    assert result.report["fused_nodes"] == 2 and result.comparison
    assert json.loads((tmp_path / "t.onnx.json").read_text())["stage"] == "fuse"


@needs_ort_extensions
def test_fuse_fp16_graph(tmp_path, tiny_model):
    """An FP16 copy of the plain graph fuses too, and the op runs with FP16 maps."""
    from onnx import numpy_helper

    plain = tmp_path / "t.onnx"
    export_onnx(tiny_model, plain)
    model = onnx.load(str(plain))
    model = _to_fp16(model, numpy_helper)
    fp16 = tmp_path / "t16.onnx"
    onnx.save(model, str(fp16))
    fused, count = fuse_graph(onnx.load(str(fp16)))
    assert count == 2
    out = tmp_path / "t16.fused.onnx"
    onnx.save(fused, str(out))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float16)
    a = ort_session(fp16).run(None, {"input": x})[0].astype(np.float32)
    b = ort_session(out).run(None, {"input": x})[0].astype(np.float32)
    assert np.abs(a - b).max() / np.abs(a).max() < 2e-2


def _to_fp16(model, numpy_helper):
    """Minimal FP16 conversion for the test: float initializers and Constant nodes to float16, I/O to float16."""
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == onnx.TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16)))
        if node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to" and a.i == onnx.TensorProto.FLOAT:
                    a.i = onnx.TensorProto.FLOAT16
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    del model.graph.value_info[:]
    return model


@needs_ort_extensions
def test_fuse_with_qdq_elsewhere(tmp_path, tiny_model):
    """Q/DQ pairs on a MatMul input (as the INT8 graphs carry) do not disturb the refinement match."""
    from onnx import helper

    plain = tmp_path / "t.onnx"
    export_onnx(tiny_model, plain)
    model = onnx.load(str(plain))
    mm = next(n for n in model.graph.node if n.op_type == "MatMul")
    src = mm.input[0]
    model.graph.initializer.extend([onnx.numpy_helper.from_array(np.array(0.05, np.float32), "qdq_scale"),
                                    onnx.numpy_helper.from_array(np.array(0, np.int8), "qdq_zero")])
    q = helper.make_node("QuantizeLinear", [src, "qdq_scale", "qdq_zero"], [src + "_q"])
    dq = helper.make_node("DequantizeLinear", [src + "_q", "qdq_scale", "qdq_zero"], [src + "_dq"])
    mm.input[0] = src + "_dq"
    idx = list(model.graph.node).index(mm)
    model.graph.node.insert(idx, dq)
    model.graph.node.insert(idx, q)
    qdq = tmp_path / "qdq.onnx"
    onnx.save(model, str(qdq))
    result = fuse_onnx(qdq, tmp_path / "qdq.fused.onnx", thresholds={"max_rel_error": 1e-5})
    assert result.report["fused_nodes"] == 2 and result.comparison
    ops = [n.op_type for n in onnx.load(str(tmp_path / "qdq.fused.onnx")).graph.node]
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1


@needs_ort_extensions
def test_fuse_refuses_wrong_count_and_keeps_files(tmp_path, tiny_model):
    plain = tmp_path / "t.onnx"
    export_onnx(tiny_model, plain)
    out = tmp_path / "f.onnx"
    out.write_bytes(b"earlier artifact")
    model = onnx.load(str(plain))
    with pytest.raises(VerificationError, match="found 2 .* expected 3"):
        fuse_graph(model, expected=3)
    # break one subgraph: its depthwise output is also a graph output, so it must not be fused
    dw = next(n for n in model.graph.node if n.op_type == "Conv" and
              any(a.name == "group" and a.i > 1 for a in n.attribute))
    model.graph.output.append(onnx.helper.make_tensor_value_info(dw.output[0], onnx.TensorProto.FLOAT, None))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(VerificationError, match="found 1 .* expected 2"):
        fuse_onnx(broken, out)
    assert out.read_bytes() == b"earlier artifact"
    fused = tmp_path / "ok.onnx"
    fuse_onnx(plain, fused)
    with pytest.raises(InputError, match="already holds RefinerDLA"):
        fuse_onnx(fused, tmp_path / "again.onnx")


def test_torch_fused_model_matches_unfused():
    model = randomize(create_model("refiner-vit-tiny"), seed=9)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        fuse_model(model)
        assert model.blocks[1].attn.fused_refine is not None
        out = model(x)
        unfuse_model(model)
        again = model(x)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(again, ref)
    a = _maps(1, 4, 17)
    weights = torch.from_numpy(fold_attention(model.blocks[1].attn).packed())
    with torch.no_grad():
        expected = model.blocks[1].attn.refine_map(a)
    assert torch.allclose(torch.ops.refiner_edge.refiner_dla(a, weights, 4), expected, rtol=1e-5, atol=1e-6)


def test_torch_runner_fused_flag(tiny_checkpoint):
    from refiner_edge.runners.runtime import load_runner

    fused = load_runner("torch", variant="refiner-vit-tiny", checkpoint=tiny_checkpoint, fused=True)
    plain = create_model("refiner-vit-tiny", checkpoint=tiny_checkpoint)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(fused(x.numpy())), plain(x), rtol=1e-5, atol=1e-6)
    assert "fused refinement" in fused.description
