"""The `validate` stage: a graph's logits against PyTorch FP32 (or another reference) on the same preprocessed
images: top-1 agreement, accuracy when labels are given, max abs error, cosine and SQNR, each checked against the
threshold for the graph's precision."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .. import defaults
from ..compare import THRESHOLDS, Comparison, check_thresholds
from ..defaults import default
from ..errors import InputError
from .base import Runner
from .runtime import load_runner, open_runner


def reference_runner(reference: str, manifest, checkpoint: str | Path | None, variant: str | None) -> Runner:
    """`torch`: the PyTorch FP32 model the graph was exported from; a path: an ONNX graph on ONNX Runtime."""
    if reference != "torch":
        if not Path(reference).is_file():
            raise InputError(f"--reference must be 'torch' or an ONNX file; {reference} does not exist")
        return load_runner("onnxruntime", onnx=reference)
    if manifest is None:
        if checkpoint is None:
            raise InputError("no manifest says which weights the graph holds: pass --checkpoint (and --variant)")
        return load_runner("torch", variant=variant, checkpoint=checkpoint)
    if checkpoint is None and manifest.random_weights:
        raise InputError("the graph was exported with random weights, which PyTorch cannot rebuild: pass "
                         "--checkpoint with the weights it was exported from, or --reference PLAIN.onnx")
    if checkpoint is None:   # else PyTorch would hold random weights and the comparison would fail for no reason
        raise InputError(f"{manifest.artifact} holds the weights of a checkpoint (SHA-256 "
                         f"{manifest.model.checkpoint_sha256[:12]}...): pass --checkpoint with that file, or "
                         "--reference PLAIN.onnx")
    m = manifest.model
    return load_runner("torch", variant=variant or m.variant, checkpoint=checkpoint, img_size=m.img_size,
                       num_classes=m.num_classes, aux_head=m.aux_head)


def validate_onnx(onnx: str | Path | None, images: str | Path, *, engine: str | Path | None = None,
                  labels: str | None = None, reference: str | None = None,
                  checkpoint: str | Path | None = None, variant: str | None = None, num: int | None = None,
                  seed: int = 0, batch_size: int | None = None, overrides: dict | None = None,
                  progress: Callable[[str, int], Callable[[int], None]] = lambda label, total: (lambda n: None),
                  ) -> dict:
    """Compare the graph `onnx` (or the TensorRT `engine`) with `reference` on the images under `images`; the
    report says `passed`. An engine is compared on the same metrics and per-precision thresholds as a graph (not
    with Polygraphy's comparator, whose per-tensor tolerances do not know top-1 agreement or accuracy)."""
    from ..images.imageset import load_image_set, load_labels
    from ..onnx.graph import graph_precision, load_onnx

    reference, batch_size = default(reference, defaults.VALIDATE_REFERENCE), default(batch_size, defaults.RUN_BATCH_SIZE)
    overrides = check_thresholds({k: v for k, v in (overrides or {}).items() if v is not None})
    candidate = open_runner(onnx, engine, variant=variant, required=True)   # the checkpoint is the reference's
    path, images = Path(onnx if onnx is not None else engine), Path(images)
    manifest = candidate.manifest
    precision = manifest.graph.precision if manifest else graph_precision(load_onnx(path, False))
    ref = reference_runner(reference, manifest, checkpoint, variant)
    recorded = manifest.model.checkpoint_sha256 if manifest else None
    if ref.weights_sha256 and recorded and ref.weights_sha256 != recorded:  # loading hashed the file already
        raise InputError(f"{checkpoint} is not the checkpoint {path.name} was exported from (SHA-256 differs)")
    if ref.num_classes != candidate.num_classes:   # else the comparison would fail on the logits' shapes
        raise InputError(f"the reference ({ref.description}) has {ref.num_classes} classes and {path.name} "
                         f"{candidate.num_classes}: they are not the same model")
    if ref.preprocess != candidate.preprocess:
        raise InputError(f"the reference preprocesses differently ({ref.preprocess}) from {path.name} "
                         f"({candidate.preprocess}): they are not the same model")
    imageset = load_image_set([images], candidate.preprocess, num=num, seed=seed,
                              on_image=progress("decoding images", num or 0))
    truth = load_labels(labels, imageset, images) if labels else None
    out = candidate.logits(imageset.arrays, batch_size, progress(f"running {path.name}", len(imageset)))
    expected = ref.logits(imageset.arrays, batch_size, progress(f"running {ref.description}", len(imageset)))
    comparison = Comparison.of(out, expected, {**THRESHOLDS[precision], **overrides}, labels=truth)
    return {"engine" if engine is not None else "onnx": str(path), "precision": precision,
            "candidate": candidate.description, "reference": ref.description, "images": imageset.summary(),
            "labels": labels,
            "metrics": comparison.metrics(), "thresholds": comparison.thresholds, "failures": comparison.failures(),
            "passed": bool(comparison)}
