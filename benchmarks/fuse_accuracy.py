"""CPU figures for export and fusion: PyTorch vs plain ONNX vs fused ONNX (reference RefinerDLA op on ONNX Runtime).

    python benchmarks/fuse_accuracy.py [--variants refiner-vit-s refiner-vit-m refiner-vit-l]

Weights are random but non-trivial (tests/helpers.randomize: BN statistics, scale_channel), as no checkpoint can
be downloaded here. Prints one table row per variant.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refiner_edge.models.factory import create_model  # noqa: E402
from refiner_edge.compare import Comparison  # noqa: E402
from refiner_edge.onnx.export import export_onnx  # noqa: E402
from refiner_edge.refine.fuse import fuse_onnx  # noqa: E402
from refiner_edge.onnx.session import ort_session  # noqa: E402
from tests.helpers import randomize  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["refiner-vit-s", "refiner-vit-m", "refiner-vit-l"])
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    print(f"{'variant':16s} {'export s':>9s} {'fuse s':>7s} {'nodes':>6s} {'plain vs torch':>15s} "
          f"{'fused vs plain':>15s} {'fused vs torch':>15s} {'ORT plain s':>12s} {'ORT fused s':>12s}")
    for variant in args.variants:
        model = randomize(create_model(variant), seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            plain, fused = Path(tmp) / "p.onnx", Path(tmp) / "f.onnx"
            t = time.perf_counter()
            export_onnx(model, plain)
            t_export = time.perf_counter() - t
            t = time.perf_counter()
            report = fuse_onnx(plain, fused, verify=False).report
            t_fuse = time.perf_counter() - t
            size = model.cfg.img_size
            x = np.random.default_rng(1).uniform(-1, 1, (args.batch, 3, size, size)).astype(np.float32)
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy()
            sessions = {name: ort_session(p, ["CPUExecutionProvider"]) for name, p in (("plain", plain),
                                                                                      ("fused", fused))}
            outs, secs = {}, {}
            for name, sess in sessions.items():
                sess.run(None, {"input": x})
                t = time.perf_counter()
                outs[name] = sess.run(None, {"input": x})[0]
                secs[name] = time.perf_counter() - t
        rel = lambda a, b: Comparison.of(a, b).max_rel  # noqa: E731
        print(f"{variant:16s} {t_export:9.1f} {t_fuse:7.1f} {report['fused_nodes']:6d} "
              f"{rel(outs['plain'], ref):15.2e} {rel(outs['fused'], outs['plain']):15.2e} "
              f"{rel(outs['fused'], ref):15.2e} {secs['plain']:12.2f} {secs['fused']:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
