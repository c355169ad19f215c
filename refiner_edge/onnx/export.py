"""PyTorch -> plain ONNX: BatchNorms folded into the convolutions before them, dynamic batch, checked on ONNX
Runtime against PyTorch before the file is kept, with its manifest beside it."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import defaults
from ..artifacts import staged_outputs
from ..compare import Comparison
from ..defaults import default
from ..errors import InputError, VerificationError
from .graph import INPUT_NAME, OUTPUT_NAME
from ..images.preprocess import Preprocess
from ..manifest import (IMAGENET_LABELS, INDEX_LABELS, GraphInfo, Manifest, ModelInfo, Verification,
                        write_manifest)
from ..models.model import RefinerViT
from ..result import StageResult
from .session import ort_session

MIN_OPSET = 17
DEFAULT_TOLERANCE = 1e-4


def max_opset() -> int:
    """The newest opset both the TorchScript exporter and the installed onnx package know."""
    import onnx
    from torch.onnx import _constants

    exporter = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET)
    return min(exporter, onnx.defs.onnx_opset_version())


def fold_batchnorms(model: nn.Module) -> nn.Module:
    """Return a copy whose Conv -> BatchNorm pairs are one Conv (torch.nn.utils.fusion), BNs made Identity."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    pairs = [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"),                     # ConvStem
             ("conv_exp", "bn1"), ("depth_sep_conv", "bn2"), ("conv_pro", "bn3")]     # DLA
    for module in folded.modules():
        for conv_name, bn_name in pairs:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return folded


def verification_input(model: RefinerViT, batch: int, seed: int = 0) -> np.ndarray:
    """A fixed pseudo-random image batch in the model's normalized input range."""
    rng = np.random.default_rng(seed)
    size = model.cfg.img_size
    return rng.uniform(-1.0, 1.0, size=(batch, 3, size, size)).astype(np.float32)


def export_onnx(model: RefinerViT, output: str | Path, *, opset: int | None = None, batch: int | str | None = None,
                tolerance: float | None = None, verify_batch: int | None = None) -> StageResult:
    """Export `model` to a plain ONNX graph at `output`, verified against PyTorch before it is kept.

    opset: None for defaults.EXPORT_OPSET. batch: "dynamic" or a fixed batch size (None: defaults.EXPORT_BATCH).
    Returns the StageResult: the manifest written beside the file, and the comparison of its outputs with PyTorch's.
    """
    opset = default(opset, defaults.EXPORT_OPSET)
    batch = default(batch, defaults.EXPORT_BATCH)
    tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
    if opset < MIN_OPSET:
        raise InputError(f"--opset {opset} is too old: Refiner-ViT needs opset >= {MIN_OPSET} (LayerNormalization)")
    if opset > max_opset():
        raise InputError(f"--opset {opset} is newer than this torch/onnx can export (at most {max_opset()})")
    if batch != "dynamic" and (not isinstance(batch, int) or batch < 1):
        raise InputError(f"--batch must be a positive integer or 'dynamic', got {batch!r}")
    model = model.eval()
    n = batch if isinstance(batch, int) else (verify_batch or 2)
    x = verification_input(model, n)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()

    from .. import progress

    output = Path(output)
    with staged_outputs(output) as staging:
        tmp = staging.path(output)
        progress.phase("torch.onnx.export")
        _torch_export(fold_batchnorms(model), tmp, opset, dynamic=batch == "dynamic", example=torch.from_numpy(x))
        import onnx

        progress.phase("checking the graph against PyTorch on ONNX Runtime")
        onnx.checker.check_model(str(tmp), full_check=True)
        got = ort_session(tmp, ["CPUExecutionProvider"]).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        result = Comparison.of(got, reference, {"max_rel_error": tolerance})
        if not result:
            raise VerificationError(f"exported graph does not match PyTorch: {result}")
        manifest = export_manifest(model, opset, batch)
        manifest.verification.append(Verification(
            stage="export", candidate="onnxruntime-cpu", reference="pytorch-fp32", inputs=f"random, batch {n}",
            metrics=result.metrics(), thresholds=result.thresholds))
        write_manifest(tmp, manifest)
    return StageResult(output, manifest, result, manifest.report)


def export_manifest(model: RefinerViT, opset: int, batch: int | str) -> Manifest:
    cfg = model.cfg
    return Manifest(
        stage="export", artifact="",
        model=ModelInfo(variant=cfg.name, img_size=cfg.img_size, num_classes=cfg.num_classes, heads=cfg.heads,
                        refining_blocks=len(cfg.refining_blocks), aux_head=model.aux_head is not None,
                        checkpoint_sha256=getattr(model, "checkpoint_sha256", None)),
        preprocess=Preprocess.from_config(cfg).record(),
        labels=IMAGENET_LABELS if cfg.num_classes == 1000 else INDEX_LABELS,
        graph=GraphInfo(input=INPUT_NAME, output=OUTPUT_NAME, batch=batch, opset=opset, precision="fp32",
                        fused=False))


def _torch_export(model: nn.Module, path: Path, opset: int, dynamic: bool, example: torch.Tensor) -> None:
    # The TorchScript exporter gives one ONNX node per PyTorch op, so the refinement subgraph keeps a stable,
    # recognisable structure for the graph surgery; the dynamo exporter rewrites it differently per version.
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False)
