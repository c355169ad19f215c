"""Speed of the fused RefinerDLA op and of whole models with it, against baselines measured in the same run.

    PYTHONPATH=$PWD python benchmarks/bench_refine.py [--out DIR]

Op: eager PyTorch of the unfused refinement (DLA + adapt_bn + scale), torch.compile of it, the fused CUDA kernel,
and the memory floor (bytes that must move / measured device-to-device copy bandwidth). End to end: Refiner-ViT-S@224
batch 64 and Refiner-ViT-L@448 batch 8 in FP16, fused vs unfused. Medians of CUDA-event timings after warm-up.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refiner_edge.models.factory import create_model  # noqa: E402
from refiner_edge.refine.fold import fold_attention  # noqa: E402
from refiner_edge.refine.torch_op import cuda_extension, fuse_model  # noqa: E402
from tests.helpers import randomize  # noqa: E402


def time_ms(fn, warmup=10, reps=50) -> float:
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
    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").uniform_()  # 1 GiB
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), warmup=5, reps=20)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def bench_op(variant: str, img: int, batch: int, bandwidth: float) -> dict:
    model = randomize(create_model(variant, img_size=img), seed=0).cuda().half().eval()
    attn = model.blocks[1].attn
    n = model.cfg.tokens()
    sets = [(torch.randn(batch, model.cfg.heads, n, n, device="cuda") * 3).softmax(-1).half() for _ in range(3)]
    unfused = lambda a: attn.refine_map(a)  # noqa: E731  (the model stays unfused: this is the baseline)
    compiled = torch.compile(unfused)
    ext = cuda_extension()
    assert ext is not None, "the RefinerDLA CUDA extension did not build"
    weights = torch.from_numpy(fold_attention(attn).packed()).cuda()
    i = [0]

    def rotate():
        i[0] = (i[0] + 1) % len(sets)
        return sets[i[0]]

    with torch.no_grad():
        ref = unfused(sets[0]).float()
        err = ((ext.forward(sets[0], weights, model.cfg.heads).float() - ref).norm() / ref.norm()).item()
        eager = time_ms(lambda: unfused(rotate()))
        comp = time_ms(lambda: compiled(rotate()))
        fused = time_ms(lambda: ext.forward(rotate(), weights, model.cfg.heads))
        fused_again = time_ms(lambda: ext.forward(rotate(), weights, model.cfg.heads))
    floor = 2 * sets[0].numel() * sets[0].element_size() / (bandwidth * 1e9) * 1e3
    return {"case": f"{variant}@{img} b{batch} fp16 op", "eager_ms": eager, "compile_ms": comp,
            "fused_ms": fused, "fused_repeat_ms": fused_again, "floor_ms": floor,
            "floor_fraction": floor / fused, "speedup_vs_eager": eager / fused, "speedup_vs_compile": comp / fused,
            "rel_error_vs_eager_fp16": err}


def bench_model(variant: str, img: int, batch: int) -> dict:
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
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to benchmark")
        return 0
    t0 = time.time()
    bandwidth = copy_bandwidth_gbs()
    results = {"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
               "torch": torch.__version__, "copy_bandwidth_gbs": bandwidth, "ops": [], "models": []}
    for variant, img, batch in [("refiner-vit-s", 224, 64), ("refiner-vit-l", 448, 8)]:
        results["ops"].append(bench_op(variant, img, batch, bandwidth))
    for variant, img, batch in [("refiner-vit-s", 224, 64), ("refiner-vit-l", 448, 8)]:
        results["models"].append(bench_model(variant, img, batch))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_refine.json").write_text(json.dumps(results, indent=2))
    print(f"\n{results['device']}, {results['date']}, torch {results['torch']}, "
          f"copy bandwidth {bandwidth:.0f} GB/s, {time.time() - t0:.0f} s")
    print(f"{'case':36s} {'eager':>8s} {'compile':>8s} {'fused':>8s} {'floor':>8s} {'floor%':>7s} {'x eager':>8s}")
    for r in results["ops"]:
        print(f"{r['case']:36s} {r['eager_ms']:8.3f} {r['compile_ms']:8.3f} {r['fused_ms']:8.3f} "
              f"{r['floor_ms']:8.3f} {100 * r['floor_fraction']:6.0f}% {r['speedup_vs_eager']:8.1f}")
    print(f"{'case':36s} {'unfused':>8s} {'fused':>8s} {'speedup':>8s} {'rel err':>9s}")
    for r in results["models"]:
        print(f"{r['case']:36s} {r['unfused_ms']:8.2f} {r['fused_ms']:8.2f} {r['speedup']:8.2f} {r['rel_error']:9.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
