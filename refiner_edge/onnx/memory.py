"""How much memory a graph's activations take, per image, and how to run it within a memory budget.

The sizes come from ONNX Runtime's symbolic shape inference (every dimension of an exported Refiner-ViT resolves to
`batch` or a number). From them:
- `forward_peak`: the bytes alive at once in a plain forward pass (what ONNX Runtime holds at least);
- `segments`: the graph cut into consecutive pieces whose tensors fit a per-image target, each cut where the fewest
  bytes cross it (block boundaries: the residual stream and the attention map), so range collection can measure
  one piece's tensors, drop them, and pass only the crossing tensors on;
- `largest_batch`: how many images one run may take within the budget.
Why: measuring every activation of Refiner-ViT-L@448 at once needs about 22 GB per image (16 refinement subgraphs
of 48 x 785 x 785 float maps); one segment of it needs well under 1 GB.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..defaults import CALIBRATE_MEMORY_GB, default

GB = 1e9
MAX_SEGMENTS = 128   # each segment is an ONNX Runtime session and a run per batch (Refiner-ViT-L@448 at 1 GB: 77)

_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}  # TensorProto types


@dataclass
class Segment:
    """Nodes [start, stop) of the graph: the tensors they read from earlier pieces and the ones they produce."""

    start: int
    stop: int
    inputs: list[str]                               # produced before (or graph inputs), read here
    produced: list[str]                             # every output of these nodes
    passed: list[str]                               # produced here and read later (or graph outputs)
    bytes_per_image: int = 0                        # inputs + everything produced, at once


@dataclass
class GraphMemory:
    """Per-image tensor sizes of one graph and the liveness of each tensor over its (topologically ordered) nodes."""

    model: object                                   # the shape-inferred ModelProto
    sizes: dict[str, int]                           # tensor -> bytes per image (per fixed batch if `fixed_batch`)
    fixed_batch: int | None = None
    first: dict[str, int] = field(default_factory=dict)   # tensor -> index of its producing node (-1: graph input)
    last: dict[str, int] = field(default_factory=dict)    # tensor -> index of its last consumer (n: graph output)

    @classmethod
    def of(cls, model) -> "GraphMemory":
        """`model`: a float graph (loaded, weights included). Its shapes are inferred here."""
        from .quiet import quiet

        with quiet():
            inferred = _symbolic_shape_inference().infer_shapes(model, auto_merge=True)
        graph = inferred.graph
        first_dim = graph.input[0].type.tensor_type.shape.dim[0]
        fixed = first_dim.dim_value if first_dim.HasField("dim_value") else None
        batch_name = None if fixed else first_dim.dim_param
        nodes = list(graph.node)
        infos = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
        initializers = {t.name for t in graph.initializer}
        sizes: dict[str, int] = {}
        for node in nodes:
            known = [sizes[i] for i in node.input if i in sizes]
            for out in node.output:
                size = _bytes(infos.get(out), batch_name)
                sizes[out] = size if size is not None else max(known, default=0)  # unknown: like its largest input
        for inp in graph.input:
            if inp.name not in initializers:
                sizes[inp.name] = _bytes(inp, batch_name) or 0
        memory = cls(inferred, sizes, fixed)
        n = len(nodes)
        for inp in graph.input:
            memory.first[inp.name] = -1
        for i, node in enumerate(nodes):
            for out in node.output:
                memory.first.setdefault(out, i)
            for name in _reads(node):
                if name in memory.first:
                    memory.last[name] = i
        for out in graph.output:
            memory.last[out.name] = n
        return memory

    @property
    def nodes(self):
        return self.model.graph.node

    def forward_peak(self) -> int:
        """Bytes per image alive at once in a plain forward pass (each tensor freed after its last reader)."""
        alive, peak = 0, 0
        ends: dict[int, int] = {}
        for name, start in self.first.items():
            if start == -1:
                alive += self.sizes.get(name, 0)
            ends[self.last.get(name, start)] = ends.get(self.last.get(name, start), 0) + self.sizes.get(name, 0)
        for i, node in enumerate(self.nodes):
            alive += sum(self.sizes.get(o, 0) for o in node.output)
            peak = max(peak, alive)
            alive -= ends.get(i, 0)
        return peak

    def segments(self, target: float, max_segments: int | None = None) -> list[Segment]:
        """Consecutive pieces of at most `target` bytes per image where the graph allows, cut where the fewest
        bytes cross from one piece to the next; never more than `max_segments` [MAX_SEGMENTS] of them: a target
        that would need more is doubled until they are few enough (the count is bounded, the target then is not:
        a tiny budget once cut Refiner-ViT-L into thousands of one-node sessions)."""
        limit = max(1, max_segments or MAX_SEGMENTS)
        target = max(float(target), 1.0)
        while True:
            pieces = self._cut(target)
            if len(pieces) <= limit:
                return pieces
            target *= 2

    def _cut(self, target: float) -> list[Segment]:
        nodes = self.nodes
        n = len(nodes)
        out_bytes = [sum(self.sizes.get(o, 0) for o in node.output) for node in nodes]
        crossing = self._crossing()
        cuts, start, held = [], 0, 0
        for i in range(n):
            if held + out_bytes[i] > target and i > start:
                cut = min(range(start, i), key=lambda c: (crossing[c], -c))  # after node `cut`
                cuts.append(cut + 1)
                start = cut + 1
                held = sum(out_bytes[start:i])
            held += out_bytes[i]
        bounds = [0, *cuts, n]
        return [self._segment(a, b) for a, b in zip(bounds, bounds[1:])]

    def _crossing(self) -> list[int]:
        """crossing[c]: bytes per image produced at or before node c and read after it."""
        n = len(self.nodes)
        delta = [0] * (n + 1)
        for name, start in self.first.items():
            end = self.last.get(name, start)
            if end > start:
                delta[max(start, 0)] += self.sizes.get(name, 0)
                delta[end] -= self.sizes.get(name, 0)
        out, running = [], 0
        for c in range(n):
            running += delta[c]
            out.append(running)
        return out

    def _segment(self, start: int, stop: int) -> Segment:
        nodes = self.nodes[start:stop]
        produced = list(dict.fromkeys(o for node in nodes for o in node.output if o))
        mine = set(produced)
        inputs = list(dict.fromkeys(i for node in nodes for i in _reads(node)
                                    if i in self.first and i not in mine))
        passed = [o for o in produced if self.last.get(o, -1) >= stop]
        held = sum(self.sizes.get(t, 0) for t in [*inputs, *produced])
        return Segment(start, stop, inputs, produced, passed, held)


def largest_batch(per_image: int, budget_bytes: float, wanted: int) -> int:
    """The largest batch up to `wanted` whose `per_image` bytes fit the budget (at least 1)."""
    if per_image <= 0:
        return wanted
    return max(1, min(wanted, int(budget_bytes // per_image)))


def forward_batch(model, budget: float, wanted: int) -> int:
    """The largest batch up to `wanted` whose plain forward pass of `model` (a ModelProto or its GraphMemory) fits
    `budget` bytes (ONNX Runtime's convolutions add workspace beside the live tensors: counted as twice the largest
    tensor)."""
    memory = model if isinstance(model, GraphMemory) else GraphMemory.of(model)
    if memory.fixed_batch:
        return memory.fixed_batch
    return largest_batch(memory.forward_peak() + 2 * max(memory.sizes.values(), default=0), budget, wanted)


def graph_batch(path, wanted: int, memory_gb: float | None = None) -> int:
    """forward_batch of the ONNX graph at `path` (plain or Q/DQ) within the budget, for the commands that run a
    whole graph (fuse's check, infer, validate): at Refiner-ViT-L@448 a batch of 8 holds about 4 GB of activations.
    Asking for 1 loads nothing; a graph whose shapes cannot be inferred (a fused op) keeps `wanted`."""
    if wanted <= 1:
        return wanted
    import onnx

    model = onnx.load(str(path))
    _readable(model)
    try:
        return forward_batch(model, budget_bytes(memory_gb), wanted)
    except Exception:   # noqa: BLE001 (the estimate is an optimisation: without it the requested batch runs)
        return wanted


def _readable(model) -> None:
    """Rewrites `model` in place into a float graph of the same activation shapes that symbolic shape inference
    reads."""
    import onnx

    # Symbolic shape inference reads neither Q/DQ nor the axes input of reductions other than ReduceSum (opset 18+,
    # as calibrate writes them): Q/DQ become Casts and those reductions ReduceSum (same shapes and output types).
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.domain in ("", "ai.onnx"):
            to = onnx.TensorProto.FLOAT if node.op_type == "DequantizeLinear" else onnx.TensorProto.INT8
            del node.input[1:]
            node.op_type = "Cast"
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute("to", to))
        elif node.op_type.startswith("Reduce") and len(node.input) > 1 and node.domain in ("", "ai.onnx"):
            node.op_type = "ReduceSum"
    del model.graph.value_info[:]   # inferred anew


def _symbolic_shape_inference():
    """ONNX Runtime's SymbolicShapeInference, loaded from its file: importing it the usual way runs
    onnxruntime/tools/__init__.py, which imports torch where it is installed (1.0 s of the 1.3 s import here) and
    `infer` and `validate` do not need torch."""
    import importlib.util
    import sys

    name = "refiner_edge_symbolic_shape_infer"
    if name not in sys.modules:
        import onnxruntime

        from pathlib import Path

        spec = importlib.util.spec_from_file_location(
            name, Path(onnxruntime.__file__).parent / "tools" / "symbolic_shape_infer.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name].SymbolicShapeInference


def return_freed_memory() -> None:
    """Hand the memory of freed tensors back to the system (glibc's malloc_trim; nothing elsewhere). glibc serves
    allocations below its mmap threshold, which it raises up to 32 MB as large blocks are freed, from heaps it
    rarely shrinks, so range collection's short-lived tensors kept the resident size well above what was alive.
    Called after each segment has run (so it first reuses what the last one freed): Refiner-ViT-S@224 ranges at
    batch 16 peaked at 1.99 GB without, 1.55 GB with it. (Trimming after dropping a segment's tensors, or mapping
    every block over 1 MB on its own with mallopt(M_MMAP_THRESHOLD), saved a little more memory but took 1.75x the
    CPU time of the all-outputs collector, against about 1.3x, setup included, for this.)"""
    global _libc
    if _libc is None:
        import ctypes
        import sys

        try:
            _libc = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else False
            _libc.malloc_trim
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


def budget_bytes(memory_gb: float | None) -> float:
    return float(default(memory_gb, CALIBRATE_MEMORY_GB)) * GB


def _reads(node) -> list[str]:
    """The tensors a node reads, including those its subgraphs (If/Loop bodies) read from the outer scope."""
    names = [i for i in node.input if i]
    for attr in node.attribute:
        for graph in [attr.g] if attr.HasField("g") else list(attr.graphs):
            inner = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | \
                    {t.name for t in graph.initializer}
            names += [i for n in graph.node for i in _reads(n) if i not in inner]
    return names


def _bytes(info, batch_name: str | None) -> int | None:
    """Bytes of one image's worth of a tensor (the batch dimension counted as 1); None when its shape is unknown."""
    if info is None or not info.type.HasField("tensor_type"):
        return None
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    count = 1
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            count *= dim.dim_value
        elif dim.dim_param != batch_name:
            return None
    return count * _ITEMSIZE.get(tensor.elem_type, 4)
