"""What the builder's progress monitor (engine/progress.py) costs: the same TensorRT-RTX build with and without it,
alternated in one run so both see the same machine, and the ratio of their medians.

    python benchmarks/build_progress.py                       # exports refiner-vit-s at 224 first (random weights)
    python benchmarks/build_progress.py --onnx s.onnx --rounds 5
    python benchmarks/build_progress.py --variant refiner-vit-l --img-size 448 --rounds 2   # minutes per build

Each build is the library's own (engine/build.build_engine: child process, pipe, reader thread); "with" listens as
the CLI does on a terminal, "without" is the --json / not-a-terminal build. The figures are the child's build
seconds (what the manifest records) and the whole call's wall time.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, help="graph to build [default: export --variant at --img-size]")
    parser.add_argument("--variant", default="refiner-vit-s")
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--target", default="rtx-sm89")
    parser.add_argument("--batch", help="MIN:OPT:MAX or one size [default: the target's]")
    parser.add_argument("--rounds", type=int, default=3, help="builds of each kind, alternated")
    args = parser.parse_args()

    from refiner_edge.cli.build import parse_batch
    from refiner_edge.engine import progress
    from refiner_edge.engine.build import build_engine
    from refiner_edge.engine.plan import BuildOptions
    from refiner_edge.engine.targets import get_target

    with tempfile.TemporaryDirectory(prefix="build-progress-") as folder:
        onnx = args.onnx
        if onnx is None:
            from refiner_edge.models.factory import create_model
            from refiner_edge.onnx.export import export_onnx

            onnx = Path(folder) / "model.onnx"
            export_onnx(create_model(args.variant, img_size=args.img_size), onnx)
        options = BuildOptions(target=get_target(args.target), batch=parse_batch(args.batch) if args.batch else None)
        figures: dict[str, dict[str, list[float]]] = {kind: {"build": [], "wall": [], "events": []}
                                                      for kind in ("without", "with")}
        build_engine(onnx, Path(folder) / "warm.engine", options)   # first-build costs (imports, page cache) apart
        for round_ in range(args.rounds):
            for kind in ("without", "with") if round_ % 2 == 0 else ("with", "without"):
                events: list = []
                out = Path(folder) / f"{kind}.engine"
                started = time.perf_counter()
                with progress.listening(events.append) if kind == "with" else contextlib.nullcontext():
                    manifest = build_engine(onnx, out, options).manifest
                figures[kind]["wall"].append(time.perf_counter() - started)
                figures[kind]["build"].append(manifest.engine.build_seconds)
                figures[kind]["events"].append(len(events))
                print(f"round {round_ + 1} {kind:>7} monitor: build {manifest.engine.build_seconds:7.2f} s, "
                      f"wall {figures[kind]['wall'][-1]:7.2f} s, {len(events)} events", flush=True)

    batch = args.batch or "the target's"
    print(f"\n{onnx.name} for {args.target}, batch {batch}, {args.rounds} rounds (medians; ratio = with / without, "
          "the baseline measured in this run):")
    for figure in ("build", "wall"):
        without = statistics.median(figures["without"][figure])
        with_ = statistics.median(figures["with"][figure])
        spread = max(figures["without"][figure]) - min(figures["without"][figure])
        print(f"  {figure:>5}: without {without:7.2f} s  with {with_:7.2f} s  ratio {with_ / without:.3f}  "
              f"(spread of the baseline: {spread:.2f} s, {spread / without:.1%})")
    # each round's pair ran back to back: their ratio cancels the machine's slower drifts (other load)
    paired = sorted(w / wo for w, wo in zip(figures["with"]["build"], figures["without"]["build"]))
    print(f"  build, paired by round: ratio median {statistics.median(paired):.3f}, min {paired[0]:.3f}, "
          f"max {paired[-1]:.3f}")
    print(f"  events reached the parent per build: {statistics.median(figures['with']['events']):.0f}")


if __name__ == "__main__":
    main()
