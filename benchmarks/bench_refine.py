"""Speed of the fused RefinerDLA op and of whole models with it, against baselines measured in the same run.

    PYTHONPATH=$PWD python3 benchmarks/bench_refine.py [--out DIR] [--ops S@224x64,...] [--models S@224x64,...]

Op, FP16: eager PyTorch of the unfused refinement (DLA + adapt_bn + scale), torch.compile of it, the CUDA C++
kernel of the plugin library, the Triton kernel (what the PyTorch op and the AOT plugin run), and the memory floor
(one read of A and one write of out at the measured device-to-device copy bandwidth). End to end, FP16: the model
unfused vs fused (the op, i.e. the Triton kernel). Medians of CUDA-event timings after warm-up; ratios.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {"S": "refiner-vit-s", "M": "refiner-vit-m", "L": "refiner-vit-l"}
DEFAULT_OPS = "S@224x64,S@384x8,L@448x4"
DEFAULT_MODELS = "S@224x64,L@448x8"


def parse_cases(text: str) -> list[tuple[str, int, int]]:
    """"S@224x64,L@448x8" -> [("refiner-vit-s", 224, 64), ("refiner-vit-l", 448, 8)]."""
    cases = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        try:
            variant, rest = item.split("@")
            img, batch = rest.lower().split("x")
            cases.append((VARIANTS[variant.upper()], int(img), int(batch)))
        except (ValueError, KeyError):
            raise argparse.ArgumentTypeError(f"bad case {item!r}: expected VARIANT@IMGxBATCH, e.g. S@224x64") \
                from None
    return cases


def time_ms(fn, warmup=10, reps=50) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth_gbs() -> float:
    import torch

    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").uniform_()  # 1 GiB
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), warmup=5, reps=20)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def bench_op(variant: str, img: int, batch: int, bandwidth: float, ext) -> dict:
    import torch

    from refiner_edge import create_model
    from refiner_edge.refine.fold import fold_attention
    from refiner_edge.refine.triton_kernel import launch
    from tests.helpers import randomize

    model = randomize(create_model(variant, img_size=img), seed=0).cuda().half().eval()
    attn = model.blocks[1].attn
    n, h = model.cfg.tokens(), model.cfg.heads
    sets = [(torch.randn(batch, h, n, n, device="cuda") * 3).softmax(-1).half() for _ in range(3)]
    unfused = lambda a: attn.refine_map(a)  # noqa: E731  (the model stays unfused: this is the baseline)
    compiled = torch.compile(unfused)
    weights = torch.from_numpy(fold_attention(attn).packed()).cuda()
    out = torch.empty_like(sets[0])
    i = [0]

    def rotate():  # a different map each call, so no timing is of a cache-warm input
        i[0] = (i[0] + 1) % len(sets)
        return sets[i[0]]

    result = {"case": f"{variant}@{img} b{batch} fp16 op", "n": n, "heads": h}
    with torch.no_grad():
        ref = unfused(sets[0]).float()
        rel = lambda x: ((x.float() - ref).norm() / ref.norm()).item()  # noqa: E731
        result["triton_rel_error_vs_eager"] = rel(launch(sets[0], weights, h))
        result["eager_ms"] = time_ms(lambda: unfused(rotate()))
        result["compile_ms"] = time_ms(lambda: compiled(rotate()))
        result["triton_ms"] = time_ms(lambda: launch(rotate(), weights, h, out))
        if ext is not None:
            result["cuda_rel_error_vs_eager"] = rel(ext.forward(sets[0], weights, h))
            result["cuda_ms"] = time_ms(lambda: ext.forward_out(rotate(), weights, h, out))
    result["floor_ms"] = 2 * sets[0].numel() * sets[0].element_size() / (bandwidth * 1e9) * 1e3
    result["triton_x_floor"] = result["triton_ms"] / result["floor_ms"]
    result["triton_speedup_vs_compile"] = result["compile_ms"] / result["triton_ms"]
    result["triton_speedup_vs_eager"] = result["eager_ms"] / result["triton_ms"]
    return result


def bench_model(variant: str, img: int, batch: int) -> dict:
    import torch

    from refiner_edge import create_model
    from refiner_edge.refine.torch_op import fuse_model
    from tests.helpers import randomize

    model = randomize(create_model(variant, img_size=img), seed=0).cuda().half().eval()
    x = torch.randn(batch, 3, img, img, device="cuda").half()
    with torch.no_grad():
        unfused = time_ms(lambda: model(x), warmup=5, reps=20)
        ref = model(x).float()
        fuse_model(model)
        fused = time_ms(lambda: model(x), warmup=5, reps=20)
        out = model(x).float()
    return {"case": f"{variant}@{img} b{batch} fp16 end-to-end", "unfused_ms": unfused, "fused_ms": fused,
            "speedup": unfused / fused, "rel_error": ((out - ref).norm() / ref.norm()).item()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="folder for bench_refine.json")
    parser.add_argument("--ops", type=parse_cases, default=parse_cases(DEFAULT_OPS),
                        help=f"op cases (default {DEFAULT_OPS}; empty string for none)")
    parser.add_argument("--models", type=parse_cases, default=parse_cases(DEFAULT_MODELS),
                        help=f"end-to-end cases (default {DEFAULT_MODELS}; empty string for none)")
    parser.add_argument("--no-cuda-kernel", action="store_true", help="skip the CUDA C++ kernel (no build)")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to benchmark")
        return 0
    ext = None
    if not args.no_cuda_kernel:
        from tests.cuda_extension import cuda_extension

        ext = cuda_extension()
        if ext is None:
            print("the CUDA C++ extension did not build: its column stays empty")
    t0 = time.time()
    bandwidth = copy_bandwidth_gbs()
    results = {"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
               "torch": torch.__version__, "copy_bandwidth_gbs": bandwidth, "ops": [], "models": [], "errors": []}

    def save():
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "bench_refine.json").write_text(json.dumps(results, indent=2))

    for kind, cases, fn in (("ops", args.ops, lambda c: bench_op(*c, bandwidth, ext)),
                            ("models", args.models, lambda c: bench_model(*c))):
        for case in cases:
            try:  # one failing case must not cost the others
                results[kind].append(fn(case))
            except Exception as e:
                results["errors"].append(f"{kind} {case}: {type(e).__name__}: {e}")
                print(f"FAILED {kind} {case}: {type(e).__name__}: {e}")
            save()
    print(f"\n{results['device']}, {results['date']}, torch {results['torch']}, "
          f"copy bandwidth {bandwidth:.0f} GB/s, {time.time() - t0:.0f} s")
    print(f"{'op (ms)':28s} {'eager':>7s} {'compile':>8s} {'cuda':>7s} {'triton':>7s} {'floor':>7s} "
          f"{'x floor':>8s} {'vs comp':>8s}")
    for r in results["ops"]:
        cuda = f"{r['cuda_ms']:7.3f}" if "cuda_ms" in r else f"{'-':>7s}"
        print(f"{r['case']:28s} {r['eager_ms']:7.3f} {r['compile_ms']:8.3f} {cuda} {r['triton_ms']:7.3f} "
              f"{r['floor_ms']:7.3f} {r['triton_x_floor']:8.1f} {r['triton_speedup_vs_compile']:8.1f}")
    print(f"{'end to end (ms)':28s} {'unfused':>7s} {'fused':>8s} {'speedup':>7s} {'rel err':>9s}")
    for r in results["models"]:
        print(f"{r['case']:28s} {r['unfused_ms']:7.2f} {r['fused_ms']:8.2f} {r['speedup']:7.2f} {r['rel_error']:9.1e}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
