"""Random option values and paths thrown at every command's parser and input checks (seeded, bounded): each run
ends in success, or in exit 2 (bad input) or 3 (missing optional dependency) with exactly one `error:` line;
never exit 1 ("unexpected"), never a traceback.

Every value comes from pools of unusable values, and each command gets one fixed unusable input (a "guard") that
it checks before any real work, so no case exports, calibrates or builds a model: the test stays at parsing and
validation and takes seconds.
"""
import random

import pytest
import typer

from refiner_edge.cli import app

from .helpers import assert_clean_failure, invoke

SEED, CASES = 19, 14
VALUES = ["", "-1", "0", "nan", "inf", "-inf", "1e400", "abc", "99999999999999999999", "3.5", "1:2", "4:1:8", "-",
          "ü", "x" * 300, "a b", "--", "http://h:notaport"]


def paths(tmp) -> list[str]:
    folder = tmp / "dir"
    folder.mkdir(exist_ok=True)
    garbage = tmp / "garbage.bin"
    garbage.write_bytes(b"\x00\x01 not a model, image or engine")
    return ["/dev/null", "/proc/nope/x.bin", str(folder), f"{folder}/", str(garbage), "missing/", "x" * 300,
            f"{tmp}/{'y' * 260}.onnx"]


URLS = ["http://127.0.0.1:notaport", "grpc://127.0.0.1:abc", "127.0.0.1:99999", "h:0", "ftp://h:1", "h:", "",
        "http://:8000", "grpc://[::1:8001"]


def guards(bad: str, case: int = 0) -> dict[str, list[str]]:
    """Per command, an unusable input it refuses before any model is made or run."""
    return {"export": ["--variant", "no-such-variant"], "build": ["--target", "no-such-target"],
            "bench": ["--triton", URLS[case % len(URLS)]], "validate": ["--onnx", bad], "serve": ["--onnx", bad],
            "infer": ["--onnx", bad], "deploy triton": ["--onnx", bad], "calibrate": ["--onnx", bad],
            "deploy deepstream": ["--engine", bad], "fuse": [bad], "preprocess": [bad]}


def leaf_commands():
    def walk(group, prefix):
        for name, command in sorted(group.commands.items()):
            if hasattr(command, "commands"):
                yield from walk(command, prefix + [name])
            else:
                yield prefix + [name], command

    return list(walk(typer.main.get_command(app), []))


@pytest.mark.parametrize("path,command", leaf_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_random_inputs_end_in_one_line(path, command, tmp_path):
    rng = random.Random(f"{SEED} {' '.join(path)}")
    pool = paths(tmp_path)
    name = " ".join(path)
    guarded = [opt for opt in guards("")[name] if opt.startswith("-")] if name in guards("") else []
    options = [p for p in command.params if p.param_type_name == "option" and p.opts[0] not in guarded
               and p.opts[0] not in ("--help", "--list-targets", "--setup")]   # actions, not inputs
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    for case in range(3 if name == "info" else CASES):
        guard = guards(rng.choice(["/dev/null", "/proc/nope/x.bin", str(tmp_path / "garbage.bin")]), case).get(name, [])
        args = [*path]
        if guard and not guard[0].startswith("-"):
            args += guard        # the command's positional input is the guard
        else:
            for arg in arguments:
                args += [rng.choice(pool) for _ in range(1 if arg.nargs == 1 else rng.randint(1, 2))]
        for option in rng.sample(options, min(len(options), 0 if case < 3 else rng.randint(1, 4))):
            args.append(option.opts[0])
            if not option.is_flag:
                args.append(rng.choice(pool if rng.random() < 0.4 else VALUES))
        if guard and guard[0].startswith("-"):
            args += guard
        result = invoke(*args)
        shown = " ".join(a if len(a) < 40 else a[:12] + "..." for a in args)
        assert result.exit_code in (0, 2, 3), (shown, result.exit_code, result.output[-1500:])
        assert "Traceback" not in result.output and "unexpected" not in result.output, (shown, result.output)
        if result.exit_code:
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, (shown, result.stderr)


def test_serve_refuses_a_file_that_is_no_graph_in_this_process(tmp_path):
    """serve replaces its process with serve's own environment (numpy<2) once its inputs pass: a file that is no
    ONNX graph must be refused before that, in one line, or the refusal comes from another interpreter (and, run
    in-process as here, the exec would replace the test run itself)."""
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not a model")
    result = invoke("serve", "--onnx", garbage)
    assert result.exit_code == 2
    assert_clean_failure(result, "garbage.onnx")
