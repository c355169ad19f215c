"""tools/import_check.py's rules of the code's shape, read with ast: each list of choices spelled out once (a second
tuple or Enum is found, a string in a comment or a message is not), and no command loading a runner by name."""
import textwrap


from .helpers import load_import_check


def problems(root, files: dict[str, str]) -> list[str]:
    import_check = load_import_check()
    for name, text in {"__init__.py": "", "cli/__init__.py": "", **files}.items():
        path = root / import_check.PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return import_check.problems(root)[0]


def test_a_list_of_choices_spelled_out_twice_is_found(tmp_path):
    found = problems(tmp_path, {
        "a.py": 'PRECISIONS = ("fp32", "fp16", "int8")\nHELP = "fp32, fp16, int8"  # "fp32", "fp16", "int8"\n',
        "cli/b.py": 'import enum\nclass Precision(str, enum.Enum):\n    fp32 = "fp32"\n    fp16 = "fp16"\n'
                    '    int8 = "int8"\n'})
    assert found == ["the choices fp32, fp16, int8 are spelled out 2 times, not once: refiner_edge.a:1, "
                     "refiner_edge.cli.b:2"]


def test_a_command_that_loads_a_runner_itself_is_found(tmp_path):
    found = problems(tmp_path, {"runners/__init__.py": "", "runners/runtime.py": "def load_runner(): pass\n",
                                "cli/infer.py": "def infer():\n    from ..runners import runtime\n"
                                                "    return runtime.load_runner()\n",
                                "cli/ok.py": '"""load_runner is named in text only."""\n'})
    assert found == ["refiner_edge.cli.infer uses load_runner: the runtime is chosen in runners/runtime.py"]
