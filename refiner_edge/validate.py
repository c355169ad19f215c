"""The `validate` stage: a graph's logits against PyTorch FP32 (or another reference) on the same preprocessed
images: top-1 agreement, accuracy when labels are given, max abs error, cosine and SQNR, each checked against the
threshold for the graph's precision. Backends come from refiner_edge.backends (the TensorRT engine backend plugs
in there)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .artifacts import read_manifest
from .backends import Backend, load_backend
from .errors import InputError
from .precision.metrics import THRESHOLDS, compare_logits


def reference_backend(reference: str, manifest: dict, checkpoint: str | Path | None,
                      variant: str | None) -> Backend:
    """`torch`: the PyTorch FP32 model the graph was exported from; a path: an ONNX graph on ONNX Runtime."""
    if reference != "torch":
        if not Path(reference).is_file():
            raise InputError(f"--reference must be 'torch' or an ONNX file; {reference} does not exist")
        return load_backend("onnxruntime", onnx=reference)
    recorded = manifest.get("checkpoint_sha256", "unknown") if manifest else "unknown"
    if checkpoint is None and recorded is None:
        raise InputError("the graph was exported with random weights, which PyTorch cannot rebuild: pass "
                         "--checkpoint with the weights it was exported from, or --reference PLAIN.onnx")
    if checkpoint is None and recorded == "unknown":
        raise InputError("no manifest says which weights the graph holds: pass --checkpoint (and --variant)")
    return load_backend("torch", variant=variant or manifest.get("variant"), checkpoint=checkpoint,
                        img_size=manifest.get("img_size"), num_classes=manifest.get("num_classes"),
                        aux_head=manifest.get("aux_head", True))


def validate_onnx(onnx: str | Path, images: str | Path, *, labels: str | None = None, reference: str = "torch",
                  checkpoint: str | Path | None = None, variant: str | None = None, num: int | None = None,
                  seed: int = 0, batch_size: int = 8, overrides: dict | None = None,
                  progress: Callable[[str, int], Callable[[int], None]] = lambda label, total: (lambda n: None),
                  ) -> dict:
    """Compare the graph `onnx` with `reference` on the images under `images`; the report says `passed`."""
    import onnx as onnx_lib

    from .imageset import load_image_set, load_labels
    from .precision import graph_precision

    path, images = Path(onnx), Path(images)
    candidate = load_backend("onnxruntime", onnx=path, variant=variant)
    manifest = read_manifest(path) or {}
    precision = manifest.get("precision") or graph_precision(onnx_lib.load(str(path), load_external_data=False))
    ref = reference_backend(reference, manifest, checkpoint, variant)
    recorded = manifest.get("checkpoint_sha256")
    if ref.weights_sha256 and recorded and ref.weights_sha256 != recorded:  # loading hashed the file already
        raise InputError(f"{checkpoint} is not the checkpoint {path.name} was exported from (SHA-256 differs)")
    if ref.preprocess != candidate.preprocess:
        raise InputError(f"the reference preprocesses differently ({ref.preprocess}) from {path.name} "
                         f"({candidate.preprocess}): they are not the same model")
    imageset = load_image_set([images], candidate.preprocess, num=num, seed=seed,
                              on_image=progress("decoding images", num or 0))
    truth = load_labels(labels, imageset, images) if labels else None
    out = candidate.logits(imageset.arrays, batch_size, progress(f"running {path.name}", len(imageset)))
    expected = ref.logits(imageset.arrays, batch_size, progress(f"running {ref.description}", len(imageset)))
    comparison = compare_logits(out, expected, truth)
    thresholds = {**THRESHOLDS[precision], **{k: v for k, v in (overrides or {}).items() if v is not None}}
    failures = comparison.failures(thresholds)
    return {"onnx": str(path), "precision": precision, "candidate": candidate.description,
            "reference": ref.description, "images": imageset.summary(), "labels": labels,
            "metrics": comparison.to_dict(), "thresholds": thresholds, "failures": failures, "passed": not failures}
