"""The package's import graph, read from its source with `ast` (nothing is imported): import cycles, and imports
against the pipeline's direction; and the rules of the code's shape that a reading of its text would only guess at:
each list of choices spelled out once, no command loading a runner by name.

    python tools/import_check.py [ROOT]     # exit 1 and one line per problem, else a one-line summary

The stages, lowest first: an import may reach the same stage or a lower one, never a higher one. Imports inside
functions (lazy ones, which keep torch and TensorRT out of `--help`) count too: they still make the lower stage
depend on the higher one. `pipeline` (one module, the chain of stages) is the layer above the stages, under the
command line. The other modules directly in the package (errors, manifest, artifacts ...) are shared by all stages
and may import none of them. The package docstring states the same order (`stage_order_problems`).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "refiner_edge"
STAGES = ("models", "images", "onnx", "refine", "precision", "engine", "runners", "deploy", "pipeline", "cli")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under `root`."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported module of the package, at module scope?) for each import in one module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                submodules = [f"{base}.{a.name}" for a in child.names if f"{base}.{a.name}" in modules]
                if len(submodules) < len(child.names):  # a name read from `base` itself
                    found.append((base, top))
                found.extend((m, top) for m in submodules)
            visit(child, inner)

    visit(tree, True)
    # importing a.b.c runs a and a.b first, except those this module's own import has already begun; keep the
    # package's own modules only
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    out = []
    for target, top in found:
        parts = target.split(".")
        out.extend((".".join(parts[:i]), top) for i in range(1, len(parts)) if ".".join(parts[:i]) not in ancestors)
        out.append((target, top))
    return [(t, top) for t, top in dict.fromkeys(out) if t in modules and t != name]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def stage_of(module: str) -> int | None:
    """The module's position in STAGES (a folder, or the pipeline module); -1 for the shared modules directly in the
    package; None for the package."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    if parts[1] in STAGES:
        return STAGES.index(parts[1])
    return -1 if len(parts) == 2 else None


# The lists of choices the package spells out in one place only (the CLI's choices and every check import them):
# precisions (manifest.PRECISIONS) and plugin forms (refine/plugin_form.FORMS).
SPELLED_ONCE = (("fp32", "fp16", "int8"), ("library", "aot"))
# Names no command module may use: runners/runtime.py's rule picks the runtime (choose_runtime, load_artifact).
NOT_IN_CLI = ("load_runner",)
# The one module that locates the package's files (and the source checkout around it) from its own __file__;
# every other module imports PACKAGE_DIR or SOURCE_ROOT from it, instead of counting `parents[N]` itself.
SOURCE_MODULE = f"{PACKAGE}.source"


def _strings(nodes) -> list[str | None]:
    return [n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) else None for n in nodes]


def _holds(items: list, words: tuple[str, ...]) -> bool:
    return any(tuple(items[i:i + len(words)]) == words for i in range(len(items) - len(words) + 1))


def spellings(words: tuple[str, ...], modules: dict[str, Path]) -> list[str]:
    """Where the string constants `words` stand next to each other, in order: a tuple, list or set display, or the
    members of a class (an Enum); "module:line" each."""
    found = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                items = _strings(node.elts)
            elif isinstance(node, ast.ClassDef):
                items = [_strings([s.value])[0] if isinstance(s, ast.Assign) else None for s in node.body]
            else:
                continue
            if _holds(items, words):
                found.append(f"{name}:{node.lineno}")
    return found


def names_used(module: Path) -> set[str]:
    """Every name a module reads, imports or reaches as an attribute."""
    used = set()
    for node in ast.walk(ast.parse(module.read_text(), str(module))):
        if isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.alias):
            used.add(node.name.rpartition(".")[2])
    return used


def rule_problems(modules: dict[str, Path]) -> list[str]:
    found = []
    for words in SPELLED_ONCE:
        where = spellings(words, modules)
        if len(where) > 1:
            found.append(f"the choices {', '.join(words)} are spelled out {len(where)} times, not once: "
                         + ", ".join(where))
    for name, path in modules.items():
        if name.split(".")[1:2] == ["cli"]:
            found.extend(f"{name} uses {used}: the runtime is chosen in runners/runtime.py"
                         for used in sorted(names_used(path) & set(NOT_IN_CLI)))
        if name != SOURCE_MODULE:
            found.extend(f"{name}:{node.lineno} reads __file__: locate files through {SOURCE_MODULE}"
                         for node in ast.walk(ast.parse(path.read_text(), str(path)))
                         if isinstance(node, ast.Name) and node.id == "__file__")
    return found


def problems(root: Path) -> tuple[list[str], int]:
    modules = module_files(root)
    edges = {name: imports(name, path, modules) for name, path in modules.items()}
    found = []
    for lazy_too in (False, True):
        graph = {m: {t for t, top in targets if top or lazy_too} for m, targets in edges.items()}
        for component in cycles(graph):
            found.append(f"import cycle{' (counting imports inside functions)' if lazy_too else ''}: "
                         + " -> ".join(component))
    for module, targets in sorted(edges.items()):
        here = stage_of(module)
        for target, top in targets:
            there = stage_of(target)
            if here is not None and there is not None and there > here:
                found.append(f"{module} imports {target}{'' if top else ' (inside a function)'}: "
                             f"{target.split('.')[1]} is above {module.split('.')[1] if here >= 0 else 'the package'}")
    found.extend(rule_problems(modules))
    return found, len(modules)


def stage_order_problems(root: Path) -> list[str]:
    """The package docstring must state STAGES in this order, as `a -> b -> ...`, so the two cannot drift."""
    path = root / PACKAGE / "__init__.py"
    doc = " ".join((ast.get_docstring(ast.parse(path.read_text(), str(path))) or "").split())
    order = " -> ".join(STAGES)
    return [] if order in doc else [f"{PACKAGE}/__init__.py: its docstring does not state the stages in order: {order}"]


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    if not (root / PACKAGE / "__init__.py").is_file():
        print(f"error: no {PACKAGE} package under {root}", file=sys.stderr)
        return 2
    found, count = problems(root)
    found += stage_order_problems(root)
    for line in found:
        print(line)
    print(f"{count} modules, {len(found)} problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
