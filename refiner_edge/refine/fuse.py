"""The `fuse` stage: an ONNX file in, the same graph with each attention refinement as one RefinerDLA node out,
checked on real images against the graph it came from before it is kept, with its manifest beside it."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import deferred_interrupts, make_folder, remove_folders, scratch_folder, staged_outputs
from ..compare import THRESHOLDS, Comparison
from ..defaults import FUSE_FORM, FUSE_NUM, FUSE_VERIFY, default
from ..errors import InputError, VerificationError
from ..manifest import PluginInfo, Verification, read_manifest, write_manifest
from ..onnx.memory import return_freed_memory
from ..onnx.graph import check_interface, graph_precision, graph_preprocess, load_onnx, model_interface
from ..result import StageResult
from . import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION
from .plugin_form import FORMS
from .surgery import fuse_graph

# The fused op computes in FP32 from its input and rounds once; an FP16 subgraph rounds after every op, so an FP16
# or INT8 graph and its fused form differ by FP16 rounding: they are held to `validate`'s criteria for their
# precision. An FP32 graph must match to FP32 rounding.
FP32_TOLERANCE = 1e-4


def fuse_thresholds(precision: str) -> dict:
    criteria = {k: v for k, v in THRESHOLDS[precision].items() if k != "max_accuracy_drop"}
    return {"max_rel_error": FP32_TOLERANCE, **criteria} if precision == "fp32" else criteria


def fuse_onnx(source: str | Path, output: str | Path, verify: bool | None = None, images: str | Path | None = None,
              num: int | None = None, thresholds: dict | None = None, form: str | None = None) -> StageResult:
    """Fuse the refinement subgraphs of the ONNX file `source` into `output` (may be the same path), atomically.

    With verify (None: defaults.FUSE_VERIFY), the fused graph runs on ONNX Runtime with the reference RefinerDLA op on up to `num` real images
    (`images`, by default the sample photographs; `num` None: defaults.FUSE_NUM) and must meet `thresholds` against the source graph (by default
    fuse_thresholds of its precision). form (None: defaults.FUSE_FORM): "library" (weights as node attributes, the IPluginV3 library's fields)
    or "aot" (refine/plugin_form.aot_form: the AOT plugin embedded in TensorRT >= 10.9 engines); an AOT graph does
    not run on ONNX Runtime, so it is verified in the library form it is made from.
    Returns the StageResult: its comparison is None when not verified, its report {"fused_nodes", "form"}.
    """
    import onnx

    form = default(form, FUSE_FORM)
    verify = default(verify, FUSE_VERIFY)
    if form not in FORMS:
        raise InputError(f"unknown plugin form '{form}'; choose one of: {', '.join(FORMS)}")
    source, output = Path(source), Path(output)
    model = load_onnx(source)
    check_interface(source, *model_interface(model))
    manifest = read_manifest(source)
    precision, inputs = graph_precision(model), model_interface(model)[0]
    fused, count = fuse_graph(model, manifest.model.refining_blocks if manifest else None)
    # The check below holds an ONNX Runtime session of each graph in turn; the protos stay only as long as needed
    # (each is the graph's weights, 325 MB at L@448): the plain one not at all, the fused one for the aot form.
    del model
    comparison = record = None
    # in place (output = source) is allowed; otherwise neither the source nor its manifest may be written
    read = [images] + ([] if output.absolute() == source.absolute() else [source])
    with staged_outputs(output, inputs=read) as staging:
        tmp = staging.path(output)
        onnx.save(fused, str(tmp))
        if form != "aot":
            fused = None
        return_freed_memory()
        if verify:
            from .. import progress

            progress.phase("checking the fused graph against the plain one on ONNX Runtime")
            thresholds = thresholds or fuse_thresholds(precision)
            comparison = compare_graphs(source, tmp, manifest, thresholds, images, default(num, FUSE_NUM),
                                        inputs)
            if comparison is not None and not comparison:
                raise VerificationError(f"fused graph does not match the plain graph: {comparison}")
        if form == "aot":
            from .plugin_form import aot_form

            onnx.save(aot_form(fused), str(tmp))
        if manifest is not None:
            plugin = PluginInfo(name=PLUGIN_NAME, version=PLUGIN_VERSION, namespace=PLUGIN_NAMESPACE, nodes=count,
                                form=form)
            graph = dataclasses.replace(manifest.graph, fused=True, plugin=plugin)
            record = manifest.derive("fuse", output, source, graph=graph)
            if comparison is not None:
                record.verification.append(Verification(
                    stage="fuse", candidate="onnxruntime-cpu + reference RefinerDLA", reference=f"{source.name} "
                    "on onnxruntime-cpu", inputs=f"{comparison.images} images", metrics=comparison.metrics(),
                    thresholds=comparison.thresholds))
            write_manifest(tmp, record)
    return StageResult(output, record, comparison, {"fused_nodes": count, "form": form})


def export_fused(model, output: str | Path, *, opset: int | None = None, batch: int | str | None = None,
                 verify: bool = True, images: str | Path | None = None, num: int | None = None, form: str | None = None,
                 on_exported: Callable[[StageResult], None] = lambda result: None) -> dict[str, StageResult]:
    """Export the PyTorch `model` and fuse its refinements into `output` in one step. The plain graph goes to a
    scratch folder beside `output`, so a failed export or fusion leaves an earlier `output` as it was.
    `on_exported` gets export_onnx's result before the fusion starts. Returns {"export": export_onnx's
    StageResult, "fuse": fuse_onnx's}."""
    from ..onnx.export import export_onnx

    output = Path(output)
    created = make_folder(output.absolute().parent)
    try:
        with scratch_folder(output.absolute().parent) as scratch:
            plain = scratch / output.name
            exported = export_onnx(model, plain, opset=opset, batch=batch)
            on_exported(exported)
            fused = fuse_onnx(plain, output, verify=verify, images=images, num=num, form=form)
    except BaseException:   # a failed run leaves no folder it made (export --fuse -o new/sub/x.onnx)
        with deferred_interrupts():
            remove_folders(created)
        raise
    return {"export": exported, "fuse": fused}


def compare_graphs(plain: str | Path, fused: str | Path, manifest, thresholds: dict,
                   images: str | Path | None = None, num: int = FUSE_NUM,
                   inputs: list | None = None) -> Comparison | None:
    """Both graphs on the same preprocessed images on ONNX Runtime (CPU); None when the reference op is
    unavailable (onnxruntime-extensions missing). `inputs`: the plain graph's (model_interface), where the caller
    has read them."""
    from ..images.imageset import load_image_set
    from ..images.samples import sample_image_dir
    from ..onnx.session import ort_session
    from ..batching import run_batched
    from ..onnx.memory import graph_batch
    from .ort_op import available

    if not available():
        return None
    if inputs is None:
        inputs = model_interface(load_onnx(plain))[0]
    inp = inputs[0]
    preprocess = graph_preprocess(plain, manifest, inp.shape)
    imageset = load_image_set([images or sample_image_dir()], preprocess, num=num)
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    dtype = np.float16 if "float16" in inp.type else np.float32

    def run(graph):
        session = ort_session(graph, ["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return run_batched(lambda x: session.run(None, {name: x.astype(dtype)})[0], imageset.arrays, batch, fixed)

    # The batch estimate reads the whole graph (onnx/memory.py), so it runs before any session exists; then one
    # session at a time, each holding its graph's weights and ONNX Runtime's prepacked copies of them, the memory
    # of the one before handed back
    batch = fixed or graph_batch(plain, min(8, len(imageset)))   # the fused graph holds less than the plain one
    return_freed_memory()
    ref = run(plain)
    return_freed_memory()
    got = run(fused)
    return Comparison.of(got, ref, thresholds)
