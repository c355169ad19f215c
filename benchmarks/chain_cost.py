"""What the build chain costs against the work its result needs: calibration's wall time over one FP32 inference of
the same images, and the peak resident memory of every stage and of the whole chain.

    PYTHONPATH=$PWD python3 benchmarks/chain_cost.py [--cases S@224,L@448] [--num 8] [--out DIR]
                        [--stages export,infer,calibrate,fuse,build,chain] [--cap-gb 8] [--json FILE]

Per case (variant@size, random weights):
- export: `refiner-edge export` (skipped when --out DIR already holds the graph: an L@448 export takes minutes);
- infer: `refiner-edge infer IMAGES --onnx GRAPH`, one FP32 ONNX Runtime pass over the images (the baseline), and
  the same pass timed inside one process (session made, images decoded beforehand);
- calibrate: `refiner-edge calibrate --precision int8` at default options (method percentile) on the same images:
  range collection, the FP32 comparison and the INT8 check; its SQNR against FP32 is calibrate's own report;
- fuse: `refiner-edge fuse` of the INT8 graph (its check on the sample photographs);
- build: `refiner-edge build --onnx INT8 --target rtx-sm89` (TensorRT-RTX on the CPU);
- chain: `refiner-edge build --precision int8 --target rtx-sm89` with no --onnx (export -> calibrate -> build).

Each stage runs in its own process; its peak is the largest resident memory of its whole process tree (sampled every
50 ms, and the kernel's maximum for the process), as in benchmarks/calibration_memory.py, and a stage past --cap-gb
is killed. Images: scikit-learn's two sample photographs and --num - 2 of its digits as PNG files; nothing is
downloaded. "x infer" is calibrate's wall time over infer's, both whole commands run back to back in this run, so
the ratio holds on a machine shared with other work where the seconds do not.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from calibration_memory import image_folder, measure  # noqa: E402

VARIANTS = {"S": "refiner-vit-s", "M": "refiner-vit-m", "L": "refiner-vit-l", "T": "refiner-vit-tiny"}
STAGES = ("export", "infer", "calibrate", "fuse", "build", "chain")


def pass_worker(onnx_path: str, images: str, num: int) -> None:
    """One FP32 ONNX Runtime pass over the images, timed inside the process: session and images ready first."""
    import numpy as np

    from refiner_edge.images.imageset import load_image_set
    from refiner_edge.manifest import read_manifest
    from refiner_edge.onnx.graph import graph_preprocess, load_onnx
    from refiner_edge.onnx.memory import graph_batch
    from refiner_edge.onnx.session import ort_session

    model = load_onnx(onnx_path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    preprocess = graph_preprocess(Path(onnx_path), read_manifest(onnx_path), shape)
    x = np.stack(load_image_set([Path(images)], preprocess, num=num).arrays).astype(np.float32)
    batch = graph_batch(onnx_path, 8)
    session = ort_session(onnx_path)
    name = session.get_inputs()[0].name
    started = time.perf_counter()
    for i in range(0, len(x), batch):
        session.run(None, {name: x[i:i + batch]})
    print(json.dumps({"images": len(x), "batch": batch, "run_seconds": round(time.perf_counter() - started, 2)}))


def run_case(case: str, args, work: Path, images: Path) -> list[dict]:
    letter, size = case.split("@")
    variant = VARIANTS[letter]
    cli = [sys.executable, str(ROOT / "cli.py")]
    graph = work / f"{letter}{size}.onnx"
    int8 = work / f"{letter}{size}.int8.onnx"
    commands = {
        "export": [*cli, "export", "--variant", variant, "--img-size", size, "-o", graph],
        "infer": [*cli, "infer", images, "--onnx", graph, "--json"],
        "pass": [sys.executable, __file__, "--pass-worker", graph, images, args.num],
        "calibrate": [*cli, "calibrate", "--onnx", graph, "--images", images, "--num", args.num,
                      "--precision", "int8", "-o", int8, "--json"],
        "fuse": [*cli, "fuse", int8, "-o", work / f"{letter}{size}.int8.fused.onnx", "--json"],
        "build": [*cli, "build", "--onnx", int8, "--target", "rtx-sm89", "-o",
                  work / f"{letter}{size}.int8.engine", "--json"],
        "chain": [*cli, "build", "--precision", "int8", "--variant", variant, "--img-size", size,
                  "--calib-images", images, "--target", "rtx-sm89", "-o", work / "chain" / f"{letter}{size}.engine",
                  "--force", "--json"],
    }
    (work / "chain").mkdir(exist_ok=True)
    rows = []
    for stage in [s for s in STAGES if s in args.stages]:
        if stage == "export" and graph.is_file():
            rows.append({"case": case, "stage": stage, "note": f"reused {graph.name}"})
            continue
        for name in (["infer", "pass"] if stage == "infer" else [stage]):
            cmd = [str(c) for c in commands[name]]
            log = work / f"{letter}{size}.{name}.log"
            result = measure(cmd, args.cap_gb * 1e9, log)
            row = {"case": case, "stage": name, **result}
            text = log.read_text()
            if name == "pass" and result["exit"] == 0:
                row.update(json.loads(text.strip().splitlines()[-1]))
            if name == "calibrate" and result["exit"] == 0:
                report = json.loads(text[text.index("{"):])
                report = report.get("report", report)
                row.update({"sqnr_db": round(report["evaluation"]["sqnr_db"], 3),
                            "collect_seconds": report["calibration"]["seconds"],
                            "total_seconds": report["calibration"]["total_seconds"],
                            "segments": report["calibration"]["segments"], "batch": report["calibration"]["batch"]})
            print(json.dumps(row), flush=True)
            rows.append(row)
    by = {r["stage"]: r for r in rows}
    if "calibrate" in by and "infer" in by and by["calibrate"].get("exit") == 0 and by["infer"].get("exit") == 0:
        summary = {"case": case, "stage": "ratio",
                   "calibrate_over_infer": round(by["calibrate"]["seconds"] / by["infer"]["seconds"], 2)}
        if by.get("pass", {}).get("run_seconds"):
            summary["calibration_over_pass"] = round(by["calibrate"]["total_seconds"] / by["pass"]["run_seconds"], 2)
            summary["collection_over_pass"] = round(by["calibrate"]["collect_seconds"] / by["pass"]["run_seconds"], 2)
        print(json.dumps(summary), flush=True)
        rows.append(summary)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| case | stage | peak GB | wall s | note |", "|---|---|---|---|---|"]
    for r in rows:
        if r["stage"] == "ratio":
            note = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("case", "stage"))
            lines.append(f"| {r['case']} | ratio | | | {note} |")
            continue
        note = ", ".join(f"{k} {r[k]}" for k in ("sqnr_db", "collect_seconds", "total_seconds", "segments",
                                                 "batch", "images", "run_seconds", "note") if k in r)
        if r.get("exit"):
            note = f"exit {r['exit']}" + (", exceeded cap" if r.get("exceeded_cap") else "") + \
                   (f", {note}" if note else "")
        lines.append(f"| {r['case']} | {r['stage']} | {r.get('peak_gb', '')} | {r.get('seconds', '')} | {note} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--pass-worker":
        pass_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="S@224,L@448", help="variant letter @ image size, comma-separated")
    parser.add_argument("--num", type=int, default=8, help="images (calibration and the baseline pass)")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--cap-gb", type=float, default=8.0, help="kill a stage past this resident size")
    parser.add_argument("--out", type=Path, default=None, help="work folder kept (and reused) [default: a temp one]")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    args.stages = set(args.stages.split(","))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="chain-cost-") as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        images = image_folder(work, args.num)
        rows = [r for case in args.cases.split(",") for r in run_case(case.strip(), args, work, images)]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
