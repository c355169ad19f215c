"""The RefinerDLA CUDA kernel against a float64 reference (GPU only; benchmarks/gpu_check.sh runs these)."""
import numpy as np
import pytest
import torch

from refiner_edge.refine.fold import FoldedDLA
from refiner_edge.refine.reference import refiner_dla_torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU: the RefinerDLA kernel runs only on a GPU", allow_module_level=True)


@pytest.fixture(scope="module")
def ext():
    from refiner_edge.refine.torch_op import cuda_extension

    module = cuda_extension()
    assert module is not None, "the RefinerDLA CUDA extension must build on a GPU machine (see the log above)"
    return module


def random_folded(heads: int, seed: int) -> FoldedDLA:
    rng = np.random.default_rng(seed)
    e = 3 * heads
    n = lambda *s, std=1.0: (rng.standard_normal(s) * std).astype(np.float32)  # noqa: E731
    return FoldedDLA(w1=n(e, heads, std=2.0), b1=n(e, std=0.5), wd=n(e, 3, 3, std=0.5), bd=n(e, std=0.5),
                     w2=n(heads, e, std=0.3), b2=n(heads, std=0.1), alpha=n(heads, std=0.3)).validate()


def random_maps(b, h, n, seed, device="cuda"):
    g = torch.Generator(device=device).manual_seed(seed)
    return (torch.randn(b, h, n, n, generator=g, device=device) * 3).softmax(-1) * 4.0


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
@pytest.mark.parametrize("batch", [1, 8, 64])
@pytest.mark.parametrize("heads", [12, 16])
@pytest.mark.parametrize("n", [50, 197, 577, 785])
def test_kernel_matches_float64_reference(ext, n, heads, batch, dtype, tol):
    if batch * heads * n * n * 8 * 3 > torch.cuda.mem_get_info()[0] * 0.8:
        pytest.skip("not enough free GPU memory for this shape and its float64 reference")
    seed = n * 1000 + heads * 10 + batch
    folded = random_folded(heads, seed)
    weights = torch.from_numpy(folded.packed()).cuda()
    a = random_maps(batch, heads, n, seed).to(dtype)
    out = torch.full_like(a, float("nan"))  # poisoned: every element must be written
    ext.forward_out(a, weights, heads, out)
    torch.cuda.synchronize()
    ref = refiner_dla_torch(a.double(), weights, heads)  # float64 from the same (rounded) inputs
    assert torch.isfinite(out).all(), "some outputs were not written"
    err = (out.double() - ref).norm() / ref.norm()
    assert err < tol, f"relative error {err:.2e} >= {tol:.0e}"


def test_odd_shapes_and_batch_zero(ext):
    for heads, n in [(1, 1), (3, 2), (5, 33), (32, 17)]:
        folded = random_folded(heads, heads + n)
        weights = torch.from_numpy(folded.packed()).cuda()
        a = random_maps(2, heads, n, 7)
        out = torch.full_like(a, float("nan"))
        ext.forward_out(a, weights, heads, out)
        ref = refiner_dla_torch(a.double(), weights, heads)
        assert ((out.double() - ref).norm() / ref.norm()) < 1e-5
    empty = torch.empty(0, 12, 197, 197, device="cuda")
    assert ext.forward(empty, torch.from_numpy(random_folded(12, 0).packed()).cuda(), 12).shape == empty.shape


def test_unsupported_shapes_are_reported(ext):
    weights = torch.from_numpy(random_folded(12, 1).packed()).cuda()
    with pytest.raises(RuntimeError, match="heads"):
        ext.forward(random_maps(1, 11, 9, 0), weights, 12)
    big = random_folded(33, 2)
    with pytest.raises(RuntimeError, match="between 1 and 32"):
        ext.forward(random_maps(1, 33, 9, 0), torch.from_numpy(big.packed()).cuda(), 33)


def test_custom_op_uses_the_kernel_and_matches_model():
    from refiner_edge.models.factory import create_model
    from tests.helpers import randomize

    model = randomize(create_model("refiner-vit-tiny"), seed=3).cuda()
    x = torch.randn(4, 3, 64, 64, device="cuda")
    with torch.no_grad():
        ref = model(x)
        from refiner_edge.refine.torch_op import fuse_model

        fuse_model(model)
        out = model(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5)
