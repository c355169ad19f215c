"""Building serialized TensorRT engines from our ONNX graphs, with TensorRT or TensorRT-RTX.

TensorRT-RTX (`pip install tensorrt-rtx`) parses ONNX and builds engines on a machine without a GPU for a chosen
compute capability, which is how CI checks that a real TensorRT builder accepts our plugin-free graphs. It has no
custom plugins, so fused graphs (RefinerDLA nodes) need TensorRT proper and the plugin library.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, MissingDependencyError, VerificationError

RUNTIMES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}


def import_runtime(runtime: str):
    try:
        module = RUNTIMES[runtime]
    except KeyError:
        raise InputError(f"unknown TensorRT runtime '{runtime}'; choose one of: {', '.join(RUNTIMES)}") from None
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = "rtx" if runtime == "tensorrt-rtx" else "tensorrt"
        raise MissingDependencyError(f"{runtime} is not installed (pip install 'refiner-edge[{extra}]')") from None


@dataclass
class BuildResult:
    engine: bytes
    runtime: str
    version: str
    layers: int


def build_engine(onnx_path: str | Path, runtime: str = "tensorrt", *, batch: tuple[int, int, int] = (1, 8, 32),
                 compute_capability: str | None = None, strongly_typed: bool = True) -> BuildResult:
    """Parse `onnx_path` and build a serialized engine with a (min, opt, max) batch profile.

    compute_capability: TensorRT-RTX target such as "SM89" (needed where no GPU is present).
    strongly_typed: precision comes from the graph (FP16 tensors, Q/DQ), as TensorRT 11 requires.
    """
    trt = import_runtime(runtime)
    path = Path(onnx_path)
    if not path.is_file():
        raise InputError(f"ONNX model not found: {path}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise VerificationError(f"{runtime} cannot parse {path.name}: {errors[:500]}")
    config = builder.create_builder_config()
    if compute_capability:
        if not hasattr(config, "set_compute_capability"):
            raise InputError(f"{runtime} does not take a compute capability")
        try:
            cc = getattr(trt.ComputeCapability, compute_capability.upper())
        except AttributeError:
            options = [n for n in dir(trt.ComputeCapability) if n.startswith("SM")]
            raise InputError(f"unknown compute capability '{compute_capability}'; {runtime} knows "
                             f"{', '.join(options)}") from None
        config.num_compute_capabilities = 1
        config.set_compute_capability(cc, 0)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if shape and shape[0] == -1:
            lo, opt, hi = ((b,) + shape[1:] for b in batch)
            profile.set_shape(tensor.name, lo, opt, hi)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise VerificationError(f"{runtime} could not build an engine from {path.name} (see the log above)")
    return BuildResult(engine=bytes(engine), runtime=runtime, version=trt.__version__, layers=network.num_layers)
