"""Each default once (issue 25): no command-line option states a default of its own. The CLI's options default to
None (or False, a switch left off) and the library resolves them from refiner_edge/defaults.py; the help texts
format the values they show from there instead of retyping them. Read from the source with `ast`."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from refiner_edge import defaults
from refiner_edge.models.variants import DEFAULT_VARIANT

from .helpers import invoke

pytestmark = pytest.mark.torch_free

ROOT = Path(__file__).resolve().parents[1]
CLI = sorted((ROOT / "refiner_edge" / "cli").glob("*.py"))
# every value defaults.py states, and the default variant
KNOWN = [v for k, v in vars(defaults).items() if k.isupper() and isinstance(v, (str, int, float))] + [DEFAULT_VARIANT]


def _is_option(annotation: ast.expr | None) -> bool:
    """An Annotated[..., typer.Option(...)] parameter, or one of cli/common.py's aliases of one (…Opt)."""
    if annotation is None:
        return False
    text = ast.unparse(annotation)
    return "typer.Option(" in text or (isinstance(annotation, ast.Name) and annotation.id.endswith("Opt"))


def option_defaults() -> list[tuple[str, str, ast.expr]]:
    """(module:function, parameter, default) for every command-line option with a default."""
    found = []
    for path in CLI:
        for fn in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(fn, ast.FunctionDef):
                continue
            positional = fn.args.args
            pairs = list(zip(positional[len(positional) - len(fn.args.defaults):], fn.args.defaults))
            pairs += [(a, d) for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is not None]
            found += [(f"{path.stem}:{fn.name}", a.arg, d) for a, d in pairs if _is_option(a.annotation)]
    return found


def _same(text: str, value) -> bool:
    if isinstance(value, bool) or isinstance(value, str):
        return text == str(value)
    try:
        return float(text) == float(value)
    except ValueError:
        return False


def test_the_scan_finds_the_options():
    found = {(where, name) for where, name, _ in option_defaults()}
    assert ("bench:bench", "iterations") in found and ("deploy:triton", "ensemble") in found
    assert ("build:build", "target") in found and ("fuse:fuse", "verify") in found


def test_no_option_defaults_to_a_value_of_its_own():
    """None, or False for a switch that is off: anything else would be a second copy of a library default."""
    own = [f"{where} {name} = {ast.unparse(d)}" for where, name, d in option_defaults()
           if not (isinstance(d, ast.Constant) and (d.value is None or d.value is False))]
    assert not own, "options with a default of their own (make it None; the library resolves it): " + "; ".join(own)


def test_help_texts_format_the_library_defaults_they_show():
    """A literal "[default: 50]" in a help text is a copy of defaults.py that drifts; the f-string part
    "[default: {defaults.BENCH_ITERATIONS}]" is not."""
    copies = []
    for path in CLI:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for shown in re.findall(r"\[default: ([^\]:,]+)[\]:,]", node.value):
                    if any(_same(shown, v) for v in KNOWN):
                        copies.append(f"{path.stem}:{node.lineno} [default: {shown}]")
    assert not copies, "help texts retyping a value of defaults.py (format it from there): " + "; ".join(copies)


def test_the_rules_catch_what_they_are_for(tmp_path, monkeypatch):
    """The two scans on a module of each kind: a retyped default value and a retyped help default."""
    bad = tmp_path / "bad.py"
    bad.write_text('import typer\nfrom typing import Annotated\n\n'
                   'def cmd(n: Annotated[int, typer.Option("--n", help="N [default: 50].")] = 50,\n'
                   '        on: Annotated[bool, typer.Option("--on/--off")] = True,\n'
                   '        quiet: Annotated[bool, typer.Option("--quiet")] = False) -> None:\n    pass\n')
    monkeypatch.setitem(globals(), "CLI", [bad])
    names = {name for _, name, _ in option_defaults()}
    assert names == {"n", "on", "quiet"}
    with pytest.raises(AssertionError, match=r"cmd n = 50; bad:cmd on = True"):
        test_no_option_defaults_to_a_value_of_its_own()
    with pytest.raises(AssertionError, match=re.escape("bad:4 [default: 50]")):
        test_help_texts_format_the_library_defaults_they_show()


def test_help_shows_the_library_defaults():
    shown = " ".join(invoke("bench", "--help").output.split())
    assert f"[default: {defaults.BENCH_ITERATIONS}]" in shown and f"[default: {defaults.BENCH_WARMUP}]" in shown
    shown = " ".join(invoke("deploy", "triton", "--help").output.split())
    assert "[default: ensemble]" in shown
    shown = " ".join(invoke("fuse", "--help").output.split())
    assert "[default: verify]" in shown
    shown = " ".join(invoke("build", "--help").output.split())
    assert f"[default: {defaults.BUILD_TARGET}]" in shown


def test_the_library_resolves_what_the_cli_leaves_none():
    from refiner_edge.deploy.triton import RepositoryOptions

    assert RepositoryOptions().ensemble is defaults.TRITON_ENSEMBLE
    assert RepositoryOptions(ensemble=False).ensemble is False


def test_concurrency_without_triton_is_refused_even_at_its_default():
    r = invoke("bench", "--variant", "refiner-vit-tiny", "--concurrency", str(defaults.BENCH_CONCURRENCY))
    assert r.exit_code == 2 and "--concurrency applies to --triton" in r.output


# validate, infer, preprocess and serve: the modules their commands run through
COMMAND_MODULES = ["cli/validate.py", "cli/infer.py", "cli/preprocess.py", "cli/serve.py", "runners/validate.py",
                   "runners/classify.py", "deploy/serve.py", "deploy/serve_env.py"]


def test_these_commands_raise_the_projects_errors():
    """No `raise RuntimeError` and no `error:` line of their own: a RefinerEdgeError reaches the CLI boundary, which
    prints the one line and picks the exit code."""
    found = []
    for name in COMMAND_MODULES:
        path = ROOT / "refiner_edge" / name
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and node.exc is not None and "RuntimeError" in ast.unparse(node.exc):
                found.append(f"{name}:{node.lineno} raises RuntimeError")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("error:"):
                found.append(f"{name}:{node.lineno} prints its own error line")
    assert not found, "; ".join(found)


def test_wait_ready_says_the_server_exited_with_a_project_error():
    pytest.importorskip("tritonclient.http", reason="tritonclient is not installed")
    from refiner_edge.deploy.serve import wait_ready
    from refiner_edge.errors import RefinerEdgeError

    with pytest.raises(RefinerEdgeError, match="the server exited before it was ready"):
        wait_ready("127.0.0.1:9", ["refiner"], timeout=5, alive=lambda: False)
