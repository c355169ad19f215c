"""The TensorRT AOT form of RefinerDLA on the CPU: the ONNX node marker on real fused graphs, the AOT kernel's PTX
(the same compile path aot_impl uses) and the clear error where TensorRT is missing."""
import importlib.util

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from refiner_edge.errors import InputError, MissingDependencyError
from refiner_edge.onnx.export import export_onnx
from refiner_edge.refine import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION
from refiner_edge.refine.fold import FoldedDLA
from refiner_edge.refine.layout import PACK_ORDER
from refiner_edge.refine.plugin_form import aot_form, is_aot
from refiner_edge.refine.attributes import folded_from_attributes
from refiner_edge.refine.surgery import fuse_graph


@pytest.fixture(scope="module")
def fused_tiny(tmp_path_factory, tiny_model):
    plain = tmp_path_factory.mktemp("aot") / "tiny.onnx"
    export_onnx(tiny_model, plain)
    fused, count = fuse_graph(onnx.load(str(plain)))
    assert count == 2
    return fused


def test_aot_form_moves_weights_to_an_input_and_marks_nodes(fused_tiny):
    marked = aot_form(fused_tiny)
    before = [n for n in fused_tiny.graph.node if n.op_type == PLUGIN_NAME]
    after = [n for n in marked.graph.node if n.op_type == PLUGIN_NAME]
    assert len(after) == len(before) == 2
    assert not any(is_aot(n) or len(n.input) != 1 for n in before), "the input model must stay untouched"
    inits = {i.name: numpy_helper.to_array(i) for i in marked.graph.initializer}
    for old, new in zip(before, after):
        attrs = {a.name: helper.get_attribute_value(a) for a in new.attribute}
        assert is_aot(new) and attrs["aot"] == 1
        assert attrs["plugin_namespace"] in (PLUGIN_NAMESPACE, PLUGIN_NAMESPACE.encode())
        assert attrs["plugin_version"] in (PLUGIN_VERSION, PLUGIN_VERSION.encode())
        assert not set(PACK_ORDER) & set(attrs), "weights must not stay as attributes (AOT drops them)"
        assert list(new.input[:1]) == list(old.input) and list(new.output) == list(old.output)
        packed = inits[new.input[1]]
        assert packed.dtype == np.float32
        folded = folded_from_attributes({a.name: helper.get_attribute_value(a) for a in old.attribute})
        back = FoldedDLA.unpack(packed, int(attrs["num_heads"]))
        assert all(np.array_equal(getattr(back, k), getattr(folded, k)) for k in PACK_ORDER)
    assert len({n.input[1] for n in after}) == 2
    onnx.checker.check_model(marked)  # initializers and inputs well-formed after the rewrite


def test_aot_form_refuses_graphs_it_cannot_mark(tmp_path, tiny_model, fused_tiny):
    plain = tmp_path / "plain.onnx"
    export_onnx(tiny_model, plain)
    with pytest.raises(InputError, match="no RefinerDLA nodes"):
        aot_form(onnx.load(str(plain)))
    with pytest.raises(InputError, match="already in the AOT form"):
        aot_form(aot_form(fused_tiny))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="tensorrt is installed here: the missing-dependency error cannot be seen")
def test_register_without_tensorrt_says_what_is_missing():
    from refiner_edge.refine import aot

    with pytest.raises(MissingDependencyError, match=r"TensorRT >= 10\.9.*tensorrt"):
        aot.register()


def test_aot_kernel_is_the_triton_kernel_as_ptx():
    """The PTX aot_impl hands TensorRT: the Triton kernel with tensor-core mma, exactly TensorRT's four arguments
    (map, weights, N, output), and ptxas still accepts it."""
    pytest.importorskip("triton", reason="Triton is not installed: pip install triton")
    from refiner_edge.refine import aot, triton_kernel

    for heads, dtype, cc in [(12, "fp16", 90), (16, "fp32", 80), (16, "fp16", 87)]:
        k = aot.aot_kernel(heads, 3 * heads, dtype, cc)
        assert k.name == "refiner_dla_kernel" and f".entry {k.name}(" in k.ptx
        entry = k.ptx[k.ptx.index(f".entry {k.name}("):]
        params = entry[:entry.index(")")].count(".param")
        assert params == 4, f"{params} kernel parameters, TensorRT passes 4"
        assert "mma" in k.ptx
        assert (k.block_c, k.block_x // 32) == triton_kernel.tile_config(heads)
        usage = triton_kernel.ptxas_report(k.ptx, cc)
        assert usage["spill_stores"] == 0 and usage["mma_instructions"] > 0, usage
        print(f"AOT sm_{cc} H={heads} {dtype}: {usage['registers']} registers, {k.shared_mem} B shared, "
              f"{k.block_x} threads")


def test_aot_kernel_refuses_more_shared_memory_than_a_launch_gets():
    """H = 32 in FP32 needs 80 KiB of shared memory; an AOT plugin launch cannot opt in past 48 KiB, so the build
    gets a clear refusal instead of a kernel that fails to launch."""
    pytest.importorskip("triton", reason="Triton is not installed: pip install triton")
    from refiner_edge.refine import aot

    with pytest.raises(ValueError, match="shared memory, over the 49152 an AOT plugin launch gets"):
        aot.aot_kernel(32, 96, "fp32", 80)
    assert aot.aot_kernel(32, 96, "fp16", 80).shared_mem <= aot.SHARED_MEMORY_LIMIT
