"""Both RefinerDLA kernels (Triton: what the PyTorch op runs; CUDA C++: the plugin library's) against a true float64
reference on the GPU (benchmarks/gpu_check.sh runs these). Skipped, with the reason, without a CUDA GPU."""
import pytest
import torch

from refiner_edge.refine.reference import refiner_dla_torch
from tests.triton_cases import TOLERANCE, random_folded, random_maps

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU: the RefinerDLA kernels run only on a GPU", allow_module_level=True)

# The reference is float64 throughout; TF32 off as well, so that nothing on the reference side rounds to 10 bits.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


@pytest.fixture(scope="module")
def ext():
    from tests.cuda_extension import cuda_extension

    module = cuda_extension()
    assert module is not None, "the RefinerDLA CUDA extension must build on a GPU machine (see the log above)"
    return module


def _triton(a, w, heads, out):
    pytest.importorskip("triton", reason="Triton is not installed")
    from refiner_edge.refine.triton_kernel import launch

    return launch(a, w, heads, out)


KERNELS = {"triton": lambda request: _triton,
           "cuda": lambda request: request.getfixturevalue("ext").forward_out}

# Odd N from Refiner-ViT (197 = @224, 577 = @384, 785 = @448) and small ones; H 12, 16 (the variants) and 32 (the
# limit); batch 1 and 64 where the float64 reference fits.
SHAPES = [(1, 12, 1), (2, 16, 3), (23, 32, 3), (50, 12, 64), (197, 12, 64), (197, 16, 1), (197, 32, 8),
          (577, 12, 1), (577, 16, 2), (785, 16, 1), (785, 32, 1)]


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("maps", ["o1", "softmax"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("n,heads,batch", SHAPES)
def test_kernel_matches_float64_reference(request, kernel, n, heads, batch, dtype, maps):
    # float64 reference holds ~2E+2H copies of the map: 8 bytes each
    if batch * heads * n * n * 8 * 9 > torch.cuda.mem_get_info()[0] * 0.8:
        pytest.skip("not enough free GPU memory for this shape and its float64 reference")
    run = KERNELS[kernel](request)
    seed = n * 1000 + heads * 10 + batch
    weights = torch.from_numpy(random_folded(heads, seed).packed()).cuda()
    a = random_maps(batch, heads, n, maps, seed, device="cuda").to(getattr(torch, dtype))
    out = torch.full_like(a, float("nan"))  # poisoned: every element must be written
    run(a, weights, heads, out)
    torch.cuda.synchronize()  # raises on an asynchronous CUDA error
    ref = refiner_dla_torch(a.double(), weights, heads)  # float64 from the same (rounded) inputs
    assert ref.dtype == torch.float64
    assert torch.isfinite(out).all(), "some outputs were not written"
    tol = TOLERANCE[dtype]
    err = (out.double() - ref).abs().max().item()
    bound = tol["max_of_peak"] * max(1.0, ref.abs().max().item())
    rel = ((out.double() - ref).norm() / ref.norm()).item()
    assert err <= bound and rel <= tol["rel_norm"], f"max |err| {err:.2e} (bound {bound:.1e}), rel {rel:.1e}"


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_batch_zero(request, kernel):
    """An empty batch returns an empty output of its shape without a launch, and still gets the shape checks."""
    run = KERNELS[kernel](request)
    empty = torch.empty(0, 12, 197, 197, device="cuda")
    weights = torch.from_numpy(random_folded(12, 0).packed()).cuda()
    out = torch.empty_like(empty)
    got = run(empty, weights, 12, out)
    torch.cuda.synchronize()
    assert got.shape == (0, 12, 197, 197) and got.dtype == empty.dtype and got.device == empty.device
    with pytest.raises((ValueError, RuntimeError), match="heads"):
        run(torch.empty(0, 11, 197, 197, device="cuda"), weights, 12, torch.empty(0, 11, 197, 197, device="cuda"))


def test_cuda_kernel_reports_unsupported_shapes(ext):
    weights = torch.from_numpy(random_folded(12, 1).packed()).cuda()
    with pytest.raises(RuntimeError, match="heads"):
        ext.forward(random_maps(1, 11, 9, "o1", 0, device="cuda"), weights, 12)


def test_custom_op_runs_the_triton_kernel():
    pytest.importorskip("triton", reason="Triton is not installed")
    from refiner_edge.refine import torch_op
    from refiner_edge.refine.triton_kernel import launch

    assert torch_op.triton_launcher() is launch
    weights = torch.from_numpy(random_folded(16, 5).packed()).cuda()
    a = random_maps(2, 16, 197, "o1", 5, device="cuda").half()
    got = torch.ops.refiner_edge.refiner_dla(a, weights, 16)
    assert torch.equal(got, launch(a, weights, 16))  # same kernel, same inputs: bitwise the same


def test_fused_model_matches_unfused_model():
    from refiner_edge import create_model
    from refiner_edge.refine.torch_op import fuse_model
    from tests.helpers import randomize

    model = randomize(create_model("refiner-vit-tiny"), seed=3).cuda().eval()
    x = torch.randn(4, 3, 64, 64, device="cuda")
    with torch.no_grad():
        ref = model(x)
        fuse_model(model)  # folds weights that live on the GPU
        out = model(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5)
