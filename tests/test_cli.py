import json
from pathlib import Path

import numpy as np
import pytest
import torch

from refiner_edge import __version__
from refiner_edge.models.factory import create_model
from refiner_edge.images.preprocess import Preprocess

from .helpers import assert_clean_failure, invoke, load_import_check

ROOT = Path(__file__).resolve().parents[1]

TINY = ["--variant", "refiner-vit-tiny"]


def _commands() -> list[list[str]]:
    """Every leaf command as its argument path (["export"], ["deploy", "triton"], ...)."""
    import typer

    from refiner_edge.cli import app

    def walk(group, prefix):
        for name, command in sorted(group.commands.items()):
            yield from walk(command, prefix + [name]) if hasattr(command, "commands") else [prefix + [name]]

    return list(walk(typer.main.get_command(app), []))


ALL_COMMANDS = _commands()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, tiny_checkpoint):
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    result = invoke("export", *TINY, "--checkpoint", tiny_checkpoint, "-o", out)
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout
    return out


def test_version_and_help():
    assert invoke("--version").stdout.strip() == f"refiner-edge {__version__}"
    result = invoke("--help")
    assert result.exit_code == 0
    for cmd in ("export", "calibrate", "fuse", "build", "infer", "validate", "bench", "serve", "deploy",
                "preprocess", "info"):
        assert cmd in result.stdout
    assert ["deploy", "triton"] in ALL_COMMANDS and ["deploy", "deepstream"] in ALL_COMMANDS


def test_info_lists_runtimes():
    result = invoke("info")
    assert result.exit_code == 0
    for key in ("torch", "onnxruntime", "tensorrt", "tensorrt_rtx", "cuda devices", "nvcc"):
        assert key in result.stdout


def test_infer_torch_json_on_real_photos(sample_photos, tiny_checkpoint):
    result = invoke("infer", *sample_photos, *TINY, "--checkpoint", tiny_checkpoint, "--json", "--topk", "3")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["image"] for d in data] == [str(p) for p in sample_photos]
    for d in data:
        preds = d["predictions"]
        assert len(preds) == 3
        assert preds[0]["prob"] >= preds[1]["prob"] >= preds[2]["prob"] > 0
        assert {"index", "label", "prob"} == set(preds[0])
        assert isinstance(preds[0]["label"], str) and preds[0]["label"]


def test_same_logits_through_create_model_infer_and_onnx(sample_photos, tiny_checkpoint, tiny_onnx):
    """Done-when of the foundation: official-style checkpoint -> same predictions on all three paths."""
    model = create_model("refiner-vit-tiny", checkpoint=tiny_checkpoint)
    pre = Preprocess.from_config(model.cfg)
    x = torch.from_numpy(np.stack([pre.load(p) for p in sample_photos]))
    with torch.no_grad():
        probs = torch.softmax(model(x).double(), -1).numpy()
    via_torch = json.loads(invoke("infer", *sample_photos, *TINY, "--checkpoint", tiny_checkpoint,
                                  "--json", "--topk", "5").stdout)
    via_ort = json.loads(invoke("infer", *sample_photos, "--backend", "onnxruntime", "--onnx", tiny_onnx,
                                "--json", "--topk", "5").stdout)
    for i, (t, o) in enumerate(zip(via_torch, via_ort)):
        top = np.argsort(-probs[i])[:5]
        assert [p["index"] for p in t["predictions"]] == top.tolist()
        assert [p["index"] for p in o["predictions"]] == top.tolist()
        for p_t, p_o in zip(t["predictions"], o["predictions"]):
            assert p_t["prob"] == pytest.approx(probs[i, p_t["index"]], rel=1e-5)
            assert p_o["prob"] == pytest.approx(p_t["prob"], rel=1e-4)


def test_infer_table_and_directory(sample_photos, tiny_onnx):
    folder = sample_photos[0].parent
    result = invoke("infer", folder, "--backend", "onnxruntime", "--onnx", tiny_onnx, "--topk", "2",
                    "--batch-size", "1")
    assert result.exit_code == 0, result.output
    assert "china.jpg" in result.stdout and "flower.jpg" in result.stdout
    assert "random" not in result.stderr  # the ONNX came from a checkpoint


def test_random_weights_are_announced(sample_photos):
    result = invoke("infer", sample_photos[0], *TINY, "--json")
    assert result.exit_code == 0
    assert "weights are random" in result.stderr


def test_export_fixed_batch_and_manifest(tmp_path):
    out = tmp_path / "m.onnx"
    result = invoke("export", *TINY, "--batch", "2", "--img-size", "96", "-o", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "m.onnx.json").read_text())
    assert manifest["graph"]["batch"] == 2 and manifest["model"]["img_size"] == 96
    assert manifest["model"]["checkpoint_sha256"] is None


def test_missing_image(tmp_path):
    assert_clean_failure(invoke("infer", tmp_path / "nope.jpg", *TINY), "no such file")


def test_corrupt_image(tmp_path, sample_photos):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    result = invoke("infer", bad, *TINY)
    assert_clean_failure(result, "bad.jpg")
    assert result.exit_code == 2
    # with good images beside it, the good ones are still classified
    mixed = invoke("infer", bad, sample_photos[0], *TINY, "--json")
    assert mixed.exit_code == 2
    data = json.loads(mixed.stdout)
    assert "error" in data[0] and data[1]["predictions"]


def test_empty_directory(tmp_path):
    assert_clean_failure(invoke("infer", tmp_path, *TINY), "holds no images")


def test_wrong_and_malformed_checkpoint(tmp_path, sample_photos, tiny_checkpoint):
    assert_clean_failure(invoke("infer", sample_photos[0], "--variant", "refiner-vit-s",
                                "--checkpoint", tiny_checkpoint), "does not match refiner-vit-s")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    assert_clean_failure(invoke("infer", sample_photos[0], *TINY, "--checkpoint", junk),
                         "not a readable PyTorch checkpoint")


def test_bad_options(tmp_path, sample_photos):
    assert_clean_failure(invoke("export", *TINY, "--opset", "11", "-o", tmp_path / "x.onnx"), "opset")
    assert_clean_failure(invoke("infer", sample_photos[0], "--variant", "refiner-vit-xl"), "unknown variant")
    assert_clean_failure(invoke("infer", sample_photos[0], "--backend", "onnxruntime", "--onnx",
                                tmp_path / "absent.onnx"), "not found")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    assert_clean_failure(invoke("infer", sample_photos[0], "--backend", "onnxruntime", "--onnx", garbage),
                         "ONNX Runtime cannot load")
    assert not (tmp_path / "x.onnx").exists()


def test_fuse_command_and_export_fuse(tmp_path, tiny_onnx, sample_photos):
    pytest.importorskip("onnxruntime_extensions", reason="the reference RefinerDLA op needs it")
    fused = tmp_path / "fused.onnx"
    result = invoke("fuse", tiny_onnx, "-o", fused)
    assert result.exit_code == 0, result.output
    assert "fused 2 refinement subgraphs" in result.stdout and "PASS" in result.stdout
    plain_preds = json.loads(invoke("infer", sample_photos[0], "--backend", "onnxruntime", "--onnx", tiny_onnx,
                                    "--json").stdout)
    fused_preds = json.loads(invoke("infer", sample_photos[0], "--backend", "onnxruntime", "--onnx", fused,
                                    "--json").stdout)
    assert [p["index"] for p in fused_preds[0]["predictions"]] == [p["index"] for p in plain_preds[0]["predictions"]]
    direct = tmp_path / "direct.onnx"
    result = invoke("export", *TINY, "--fuse", "-o", direct)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "direct.onnx.json").read_text())["graph"]["plugin"]["nodes"] == 2


def test_fuse_bad_input(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk")
    assert_clean_failure(invoke("fuse", junk, "-o", tmp_path / "out.onnx"), "not a readable ONNX model")
    assert_clean_failure(invoke("fuse", tmp_path / "absent.onnx", "-o", tmp_path / "out.onnx"), "not found")
    assert not (tmp_path / "out.onnx").exists()


def test_export_fuse_failure_keeps_earlier_artifact(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime_extensions", reason="the reference RefinerDLA op needs it")
    from refiner_edge.errors import VerificationError
    from refiner_edge.refine import fuse as fuse_stage

    out = tmp_path / "m.onnx"
    out.write_bytes(b"earlier fused graph")

    def broken(*args, **kwargs):  # failure injection: the fusion step fails after a good export
        raise VerificationError("found 0 attention-refinement subgraphs, expected 2")

    monkeypatch.setattr(fuse_stage, "fuse_onnx", broken)
    result = invoke("export", *TINY, "--fuse", "-o", out)
    assert_clean_failure(result, "found 0 attention-refinement subgraphs")
    assert out.read_bytes() == b"earlier fused graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# ---------------------------------------------------------------- what a new user tripped over (foundation issue)

def test_bad_sizes_and_ranges_are_input_errors(tmp_path, sample_photos, tiny_onnx):
    """Exit 2 with one line, never 'unexpected ValueError', Torch IR, or a silent cap."""
    result = invoke("export", *TINY, "--img-size", "225", "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2
    assert_clean_failure(result, "--img-size 225 is not a positive multiple of the patch size 16")
    result = invoke("export", *TINY, "--opset", "99", "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert_clean_failure(result, "--opset 99 is newer than")
    result = invoke("infer", sample_photos[0], "--onnx", tiny_onnx, "--topk", "100000")
    assert result.exit_code == 2
    assert_clean_failure(result, "--topk must be between 1 and the model's 1000 classes")
    for option, value in (("--min-agreement", "101"), ("--min-cosine", "1.5")):
        result = invoke("validate", "--onnx", tiny_onnx, "--images", sample_photos[0], option, value)
        assert result.exit_code == 2
        assert_clean_failure(result, option)
    assert not (tmp_path / "x.onnx").exists()


def test_the_artifact_picks_the_backend(sample_photos, tiny_onnx, tiny_checkpoint):
    """`infer --onnx m.onnx` runs the graph (it used to classify with a random PyTorch model)."""
    via_onnx = invoke("infer", sample_photos[0], "--onnx", tiny_onnx, "--json")
    assert via_onnx.exit_code == 0, via_onnx.output
    explicit = invoke("infer", sample_photos[0], "--backend", "onnxruntime", "--onnx", tiny_onnx, "--json")
    assert json.loads(via_onnx.stdout) == json.loads(explicit.stdout)
    # an option the chosen backend does not use is an error, never dropped
    assert_clean_failure(invoke("infer", sample_photos[0], "--onnx", tiny_onnx, "--checkpoint", tiny_checkpoint),
                         "--checkpoint applies to the torch backend")
    assert_clean_failure(invoke("infer", sample_photos[0], "--onnx", tiny_onnx, "--variant", "refiner-vit-s"),
                         "manifest says refiner-vit-tiny@64")
    assert_clean_failure(invoke("infer", sample_photos[0], "--backend", "torch", "--onnx", tiny_onnx),
                         "--onnx runs on ONNX Runtime")
    assert_clean_failure(invoke("infer", sample_photos[0], "--backend", "onnxruntime"), "needs --onnx")


def test_verbose_after_the_command_and_plain_help():
    from refiner_edge.cli.app import hoist_verbose

    assert hoist_verbose(["export", "-o", "m.onnx", "-v"]) == ["-v", "export", "-o", "m.onnx"]
    assert hoist_verbose(["infer", "--", "-v"]) == ["infer", "--", "-v"]  # after --, -v is an image's name
    result = invoke("info", "-v")
    assert result.exit_code == 0, result.output
    for command in ALL_COMMANDS:
        text = invoke(*command, "--help").stdout
        assert "<bool>" not in text, command
        # every option states its default: an explicit [default: ...] or a flag / required option
        options = [line.split()[0] for line in text.splitlines() if line.strip().startswith("--")]
        assert options, command
        assert options_without_default(text) == [], command
    text = " ".join(invoke("infer", "--help").stdout.split())
    # the default from defaults.INFER_TOPK, stated in the help; the range from the option
    assert "[default: 5]. [x>=1]" in text and "[default: refiner-vit-s]" in text


def options_without_default(help_text: str) -> list[str]:
    """The options of one --help whose entry states no default and is neither a flag nor required (help text is
    wrapped, so entries are joined before looking)."""
    import re

    missing = []
    for entry in re.split(r"\n  (?=-)", "\n" + help_text.split("Options:", 1)[1]):
        entry = " ".join(entry.split())
        if not entry or entry.startswith("-h, --help"):
            continue
        flag = not re.match(r"^(-\w, )?--[\w-]+( / --[\w-]+)? <", entry)
        if not (flag or "[default:" in entry or "[required]" in entry):
            missing.append(entry.split()[0])
    return missing


def test_help_states_every_default():
    """Each option's help entry says its default, or is a flag / a required option."""
    missing = [f"{' '.join(command)} {option}" for command in ALL_COMMANDS
               for option in options_without_default(invoke(*command, "--help").stdout)]
    assert not missing


def test_json_output_is_where_the_readme_says():
    """The README says which commands print --json for scripts; `preprocess`, which writes tensor files and prints
    their paths, is the one without."""
    from pathlib import Path

    without = [" ".join(c) for c in ALL_COMMANDS if "--json" not in invoke(*c, "--help").stdout]
    assert without == ["preprocess"]
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "Every command but `preprocess` (which prints the paths it writes) has `--json`" in readme


def test_notes_go_to_stderr(tmp_path, sample_photos):
    export = invoke("export", *TINY, "-o", tmp_path / "m.onnx")
    infer = invoke("infer", sample_photos[0], *TINY, "--json")
    assert "weights are random" in export.stderr and "weights are random" in infer.stderr
    assert "note:" not in export.stdout and "note:" not in infer.stdout
    json.loads(infer.stdout)  # stdout stays the result


def test_artifacts_respect_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        assert invoke("export", *TINY, "-o", tmp_path / "m.onnx").exit_code == 0
    finally:
        os.umask(old)
    for name in ("m.onnx", "m.onnx.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_stale_or_newer_manifest_is_one_clear_line(tmp_path, sample_photos, tiny_onnx):
    import shutil

    copy = tmp_path / "m.onnx"
    shutil.copy(tiny_onnx, copy)
    manifest = json.loads(tiny_onnx.with_name(tiny_onnx.name + ".json").read_text())
    path = tmp_path / "m.onnx.json"
    path.write_text(json.dumps({**manifest, "schema_version": 99}))
    assert_clean_failure(invoke("infer", sample_photos[0], "--onnx", copy), "manifest schema 99 is newer")
    del manifest["model"]["num_classes"]
    path.write_text(json.dumps(manifest))
    assert_clean_failure(invoke("infer", sample_photos[0], "--onnx", copy), "model: missing field 'num_classes'")
    path.write_text("{not json")
    assert_clean_failure(invoke("infer", sample_photos[0], "--onnx", copy), "not a readable manifest")


def test_fuse_in_the_aot_plugin_form(tmp_path, tiny_onnx, sample_photos):
    """--plugin-form aot: checked in the library form, written with weights as an input and aot=1; ONNX Runtime
    refuses the AOT form in one line."""
    pytest.importorskip("onnxruntime_extensions", reason="the reference RefinerDLA op needs it")
    import onnx

    out = tmp_path / "aot.onnx"
    result = invoke("fuse", tiny_onnx, "-o", out, "--plugin-form", "aot", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["form"] == "aot" and report["verification"]["passed"]
    nodes = [n for n in onnx.load(str(out)).graph.node if n.op_type == "RefinerDLA"]
    assert len(nodes) == 2 and all(len(n.input) == 2 for n in nodes)
    assert all({a.name: a.i for a in n.attribute}.get("aot") == 1 for n in nodes)
    manifest = json.loads(out.with_name("aot.onnx.json").read_text())
    assert manifest["graph"]["plugin"]["form"] == "aot" and manifest["verification"][-1]["stage"] == "fuse"
    assert_clean_failure(invoke("infer", sample_photos[0], "--onnx", out), "AOT plugin form, which only TensorRT")
    assert_clean_failure(invoke("fuse", tiny_onnx, "-o", tmp_path / "x.onnx", "--plugin-form", "jit"),
                         "--plugin-form")


def test_precisions_and_plugin_forms_are_defined_once():
    """The CLI's choices are the library's tuples, and the package spells each list out in one place only."""
    from refiner_edge.cli import build, calibrate, fuse
    from refiner_edge.engine.plugins import FORMS
    from refiner_edge.precision import CALIBRATED, PRECISIONS
    from refiner_edge.refine import plugin_form

    assert [p.value for p in build.Precision] == list(PRECISIONS)
    assert [p.value for p in calibrate.Precision] == list(CALIBRATED)
    assert [f.value for f in build.PluginForm] == list(FORMS) == [*plugin_form.FORMS, "none"]
    assert [f.value for f in fuse.PluginForm] == list(plugin_form.FORMS)
    import_check = load_import_check()
    modules = import_check.module_files(ROOT)
    for words in (("fp32", "fp16", "int8"), ("library", "aot")):
        assert words in import_check.SPELLED_ONCE
        spelled = import_check.spellings(words, modules)   # read with ast: tuples, lists, sets and Enum members
        assert len(spelled) == 1, (words, spelled)


def test_one_rule_picks_the_runtime():
    """runners/runtime.py decides which runtime runs an artifact; no command loads a runner by name itself."""
    from refiner_edge.errors import InputError
    from refiner_edge.runners.runtime import choose_runtime

    assert choose_runtime() == "torch"
    assert choose_runtime(onnx="m.onnx") == "onnxruntime" and choose_runtime(engine="m.engine") == "tensorrt"
    assert choose_runtime(onnx="m.onnx", backend="onnxruntime") == "onnxruntime"
    for kwargs in ({"required": True}, {"onnx": "m.onnx", "engine": "m.engine"}, {"engine": "e", "backend": "torch"},
                   {"onnx": "m.onnx", "checkpoint": "c.pth"}, {"backend": "tensorrt"}):
        with pytest.raises(InputError):
            choose_runtime(**kwargs)
    import_check = load_import_check()
    assert "load_runner" in import_check.NOT_IN_CLI
    cli = {name: path for name, path in import_check.module_files(ROOT).items() if ".cli" in name}
    assert cli and [name for name, path in cli.items() if "load_runner" in import_check.names_used(path)] == []


def test_calibrate_fuse_and_serve_defaults_are_the_librarys():
    """The options calibrate, fuse and serve share with the library default to None on the command line; the
    library resolves them from defaults.py, whose values the help states."""
    import inspect

    from refiner_edge import defaults
    from refiner_edge.cli.calibrate import calibrate
    from refiner_edge.cli.fuse import fuse
    from refiner_edge.cli.serve import serve
    from refiner_edge.deploy.serve import ServeOptions

    shared = {calibrate: ("precision", "num", "method", "eval_num", "batch_size", "seed", "tensorrt_version"),
              fuse: ("num",), serve: ("name", "host", "http_port", "grpc_port", "max_batch", "queue_delay_us")}
    for command, names in shared.items():
        params = inspect.signature(command).parameters
        assert [n for n in names if params[n].default is not None] == [], command.__name__
    options = ServeOptions()
    assert (options.name, options.host, options.http_port, options.grpc_port, options.max_batch,
            options.queue_delay_us) == (defaults.SERVE_NAME, defaults.SERVE_HOST, defaults.SERVE_HTTP_PORT,
                                        defaults.SERVE_GRPC_PORT, defaults.SERVE_MAX_BATCH,
                                        defaults.SERVE_QUEUE_DELAY_US)
    assert ServeOptions(max_batch=4).max_batch == 4
    assert f"[default: {defaults.FUSE_NUM}]" in " ".join(invoke("fuse", "--help").stdout.split())
    calibrate_help = " ".join(invoke("calibrate", "--help").stdout.split())
    assert f"[default: {defaults.CALIBRATE_NUM}]" in calibrate_help
    assert f"[default: {defaults.CALIBRATE_METHOD}]" in calibrate_help
