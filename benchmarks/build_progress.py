"""What the builder's progress monitor (engine/progress.py) costs: the same TensorRT-RTX build with and without it,
alternated in one run so both see the same machine, and the ratio of their medians.

    python benchmarks/build_progress.py                       # exports refiner-vit-s at 224 first (random weights)
    python benchmarks/build_progress.py --onnx s.onnx --rounds 5
    python benchmarks/build_progress.py --variant refiner-vit-l --img-size 448 --rounds 2   # minutes per build

Each build is the builder's child process as `build` runs it (engine/worker.run_in_child of engine/backend.child_build:
child process, pipe, reader thread); "with" listens as the CLI does on a terminal, "without" is the --json /
not-a-terminal build. The figures are the child's build seconds (what the manifest records), the whole call's wall
time, and, being immune to the machine's other load, the monitor's own count of callbacks and the seconds spent in
them (the Python bodies; pybind11's call into Python adds a few microseconds per callback).
"""
from __future__ import annotations

import argparse
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
    from refiner_edge.engine.plan import BuildOptions, read_network, resolve
    from refiner_edge.engine.targets import get_target
    from refiner_edge.engine.worker import run_in_child

    with tempfile.TemporaryDirectory(prefix="build-progress-") as folder:
        onnx = args.onnx
        if onnx is None:
            from refiner_edge.models.factory import create_model
            from refiner_edge.onnx.export import export_onnx

            onnx = Path(folder) / "model.onnx"
            export_onnx(create_model(args.variant, img_size=args.img_size), onnx)
        options = BuildOptions(target=get_target(args.target), batch=parse_batch(args.batch) if args.batch else None)
        plan = resolve(options, read_network(onnx))

        def build(name: str, listen=None) -> dict:
            job = {"plan": plan, "engine": str(Path(folder) / f"{name}.engine"), "timing_cache": None}
            return run_in_child("refiner_edge.engine.backend:child_build", job, Path(folder) / f"{name}.result",
                                what="builder", progress=listen)

        figures: dict[str, dict[str, list[float]]] = {kind: {"build": [], "wall": [], "events": [], "calls": [],
                                                             "inside": []} for kind in ("without", "with")}
        build("warm")   # first-build costs (imports, page cache) apart
        for round_ in range(args.rounds):
            for kind in ("without", "with") if round_ % 2 == 0 else ("with", "without"):
                events: list = []
                started = time.perf_counter()
                built = build(kind, events.append if kind == "with" else None)
                figures[kind]["wall"].append(time.perf_counter() - started)
                figures[kind]["build"].append(built["seconds"])
                figures[kind]["events"].append(len(events))
                monitor = built.get("monitor", {"callbacks": 0, "seconds": 0.0})
                figures[kind]["calls"].append(monitor["callbacks"])
                figures[kind]["inside"].append(monitor["seconds"])
                print(f"round {round_ + 1} {kind:>7} monitor: build {built['seconds']:7.2f} s, "
                      f"wall {figures[kind]['wall'][-1]:7.2f} s, {len(events)} events, {monitor['callbacks']} "
                      f"callbacks taking {monitor['seconds'] * 1e3:.1f} ms", flush=True)

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
    calls, inside = statistics.median(figures["with"]["calls"]), statistics.median(figures["with"]["inside"])
    print(f"  the monitor's own time: {calls:.0f} callbacks, {inside * 1e3:.1f} ms per build = "
          f"{inside / statistics.median(figures['without']['build']):.4%} of the build without it")
    print(f"  events reached the parent per build: {statistics.median(figures['with']['events']):.0f}")


if __name__ == "__main__":
    main()
