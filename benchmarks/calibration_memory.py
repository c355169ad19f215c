"""Peak resident memory and wall time of the precision stage, per stage, with today's range collector (every
activation a graph output, a whole batch held at once) beside the segmented one, on the same images.

    PYTHONPATH=$PWD python3 benchmarks/calibration_memory.py [--cases S@224,L@448] [--num 32] [--cap-gb 6]
                        [--stages export,old,new,int8,fp16,fuse,validate,infer,bench,build] [--out DIR]

The later stages (fuse, validate, infer, bench, build) run the other commands at default options on the exported
graph and the INT8 one (an --out folder that already holds them skips export and int8).

Each stage runs in its own process; its peak is the largest resident memory of the whole process tree (sampled
every 50 ms, and the kernel's own maximum for the process), and a stage that passes --cap-gb is killed and reported
as "exceeded cap". Images: scikit-learn's two sample photographs and as many of its digits (as PNG files) as
--num needs; nothing is downloaded. Weights are random (the figures do not depend on them).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {"S": "refiner-vit-s", "M": "refiner-vit-m", "L": "refiner-vit-l"}
STAGES = ("export", "old", "new", "int8", "fp16")                 # the default: the precision stage
LATER = ("fuse", "validate", "infer", "bench", "build")
LABELS = {"export": "export", "old": "ranges, all outputs at once (reference collector)",
          "new": "ranges, segment by segment", "int8": "calibrate --precision int8 (default options)",
          "fp16": "calibrate --precision fp16 (default options)", "fuse": "fuse (default: verified)",
          "validate": "validate the INT8 graph against the FP32 ONNX", "infer": "infer (the image folder)",
          "bench": "bench --onnx, batch 1", "build": "build the INT8 graph --target rtx-sm89"}


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


def measure(cmd: list[str], cap: float, log: Path) -> dict:
    """Run `cmd`; its wall time, peak resident bytes (whole tree) and whether it was killed at `cap` bytes."""
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        peak, killed = 0, False
        while True:   # os.wait4, not proc.poll: it also gives the kernel's peak resident size of the child
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = tree_rss(proc.pid)
            peak = max(peak, rss)
            if rss > cap and not killed:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.05)
    peak = max(peak, usage.ru_maxrss * 1024)
    code = os.waitstatus_to_exitcode(status)
    return {"seconds": round(time.perf_counter() - started, 1), "peak_gb": round(peak / 1e9, 2),
            "exit": code, "exceeded_cap": killed}


def image_folder(root: Path, num: int) -> Path:
    """The two sample photographs and num - 2 digits as PNG files."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from refiner_edge.images.samples import sample_image_dir

    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for photo in sorted(sample_image_dir().glob("*.jpg")):
        target = folder / photo.name
        if not target.exists():
            target.write_bytes(photo.read_bytes())
    digits = load_digits()
    for i in range(max(0, num - 2)):
        target = folder / f"digit_{i:04d}.png"
        if not target.exists():
            Image.fromarray((digits.images[i] * (255 / 16)).astype(np.uint8), "L").save(target)
    return folder


def ranges_worker(which: str, onnx_path: str, images: str, num: int, batch: int) -> None:
    """One range collection, as `calibrate --precision int8` runs it (percentile, the same image sample)."""
    import onnx

    from refiner_edge.images.imageset import load_image_set
    from refiner_edge.manifest import read_manifest
    from refiner_edge.onnx.graph import graph_preprocess
    from refiner_edge.precision.calibrate import _batches
    from refiner_edge.precision.int8 import activation_inputs, quantizable_nodes
    from refiner_edge.precision.ranges import _collect_ranges_all_outputs, collect_ranges
    from refiner_edge.refine.surgery import refinement_subgraphs

    model = onnx.load(onnx_path, load_external_data=False)
    shape = [d.dim_value or None for d in model.graph.input[0].type.tensor_type.shape.dim]
    preprocess = graph_preprocess(Path(onnx_path), read_manifest(onnx_path), shape)
    units = refinement_subgraphs(model)
    quantized = activation_inputs(model, quantizable_nodes(model, {n for u in units for n in u}))
    del model
    arrays = load_image_set([Path(images)], preprocess, num=num).arrays
    batches = list(_batches(arrays, batch, pad=False))
    started = time.perf_counter()
    if which == "old":
        ranges = _collect_ranges_all_outputs(onnx_path, batches, "percentile", "input", quantized)
    else:
        ranges = collect_ranges(onnx_path, batches, "percentile", "input", quantized)
    print(json.dumps({"images": len(arrays), "tensors": len(ranges.minmax), "batch": ranges.batch,
                      "segments": ranges.segments, "collect_seconds": round(time.perf_counter() - started, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="S@224,L@448")
    parser.add_argument("--num", type=int, default=32, help="calibration images")
    parser.add_argument("--batch-size", type=int, default=16, help="calibrate's default")
    parser.add_argument("--cap-gb", type=float, default=6.0, help="a stage above this is killed")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", type=Path, default=None, help="work folder [default: a temporary one]")
    parser.add_argument("--ranges-worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ranges_worker:
        which, onnx_path, images, num, batch = args.ranges_worker
        ranges_worker(which, onnx_path, images, int(num), int(batch))
        return
    stages = [s for s in args.stages.split(",") if s]
    work = args.out or Path(tempfile.mkdtemp(prefix="calibration-memory-"))
    images = image_folder(work, args.num)
    cli = [sys.executable, str(ROOT / "cli.py")]
    rows = []
    for case in args.cases.split(","):
        variant, img = case.split("@")
        name = f"{variant}{img}"
        onnx_path = work / f"{name}.onnx"
        commands = {
            "export": [*cli, "export", "--variant", VARIANTS[variant.upper()], "--img-size", img, "-o", onnx_path],
            "old": [sys.executable, __file__, "--ranges-worker", "old", onnx_path, images, args.num,
                    args.batch_size],
            "new": [sys.executable, __file__, "--ranges-worker", "new", onnx_path, images, args.num,
                    args.batch_size],
            "int8": [*cli, "calibrate", "--onnx", onnx_path, "--images", images, "--num", args.num, "--precision",
                     "int8", "-o", work / f"{name}.int8.onnx", "--json"],
            "fp16": [*cli, "calibrate", "--onnx", onnx_path, "--images", images, "--num", args.num, "--precision",
                     "fp16", "-o", work / f"{name}.fp16.onnx", "--json"],
            "fuse": [*cli, "fuse", onnx_path, "-o", work / f"{name}.fused.onnx", "--json"],
            "validate": [*cli, "validate", "--onnx", work / f"{name}.int8.onnx", "--reference", onnx_path,
                         "--images", images, "--json"],
            "infer": [*cli, "infer", images, "--onnx", onnx_path, "--json"],
            "bench": [*cli, "bench", "--onnx", onnx_path, "--batch", "1", "--json"],
            "build": [*cli, "build", "--onnx", work / f"{name}.int8.onnx", "--target", "rtx-sm89", "-o",
                      work / f"{name}.int8.engine", "--json"],
        }
        for stage in stages:
            log = work / f"{name}.{stage}.log"
            result = measure([str(c) for c in commands[stage]], args.cap_gb * 1e9, log)
            row = {"case": case, "stage": LABELS[stage], **result}
            if stage in ("old", "new") and result["exit"] == 0:
                row.update(json.loads(log.read_text().strip().splitlines()[-1]))
            if stage in ("int8", "fp16") and result["exit"] == 0:
                report = json.loads(log.read_text()[log.read_text().index("{"):])
                cal = report["calibration"]
                row.update({"images": cal["used"], "batch": cal["batch"], "segments": cal.get("segments"),
                            "calibration_seconds": cal["seconds"], "sqnr_db": report["evaluation"]["sqnr_db"]})
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'case':8} {'stage':52} {'peak GB':>8} {'wall s':>8}  note")
    for r in rows:
        if r["exceeded_cap"]:
            note = f"exceeded cap ({args.cap_gb:g} GB): killed"
        elif r["exit"]:
            note = f"failed (exit {r['exit']})"
        else:
            note = ", ".join(f"{k} {r[k]}" for k in ("images", "batch", "segments", "collect_seconds",
                                                      "calibration_seconds", "sqnr_db") if r.get(k) is not None)
        print(f"{r['case']:8} {r['stage']:52} {r['peak_gb']:8.2f} {r['seconds']:8.1f}  {note}")
    print(f"\nwork folder: {work}")


if __name__ == "__main__":
    main()
