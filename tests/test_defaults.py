"""Each default written once, in defaults.py: the command line's options default to None, the library resolves
them, and the help states the library's value."""
import inspect

from refiner_edge import defaults
from refiner_edge.compare import THRESHOLDS

from .helpers import invoke


def help_text(*command) -> str:
    return " ".join(invoke(*command, "--help").stdout.split())


def test_the_commands_leave_these_defaults_to_the_library():
    from refiner_edge.cli.deploy import triton
    from refiner_edge.cli.export import export
    from refiner_edge.cli.fuse import fuse
    from refiner_edge.cli.infer import infer
    from refiner_edge.cli.validate import validate

    shared = {triton: ("name", "max_batch", "queue_delay_us", "instances"), export: ("opset", "batch"),
              fuse: ("plugin_form",), infer: ("topk", "batch_size"), validate: ("batch_size", "reference")}
    for command, names in shared.items():
        params = inspect.signature(command).parameters
        assert [n for n in names if params[n].default is not None] == [], command.__name__


def test_the_library_resolves_them():
    from refiner_edge.deploy.triton import RepositoryOptions
    from refiner_edge.refine import fuse, plugin_form
    from refiner_edge.runners import classify, validate

    options = RepositoryOptions()
    assert (options.name, options.queue_delay_us, options.instances) == (
        defaults.TRITON_NAME, defaults.TRITON_QUEUE_DELAY_US, defaults.TRITON_INSTANCES)
    assert RepositoryOptions(queue_delay_us=0).queue_delay_us == 0
    assert defaults.FUSE_FORM in plugin_form.FORMS
    for function in (fuse.fuse_onnx, fuse.export_fused, classify.classify, validate.validate_onnx):
        params = inspect.signature(function).parameters
        assert [n for n in ("form", "opset", "batch", "k", "batch_size", "reference")
                if n in params and params[n].default is not None] == [], function.__name__


def test_the_help_states_the_librarys_values():
    triton = help_text("deploy", "triton")
    for value in (defaults.TRITON_NAME, defaults.TRITON_MAX_BATCH, defaults.TRITON_QUEUE_DELAY_US,
                  defaults.TRITON_INSTANCES):
        assert f"[default: {value}" in triton, value
    export = help_text("export")
    assert f"[default: {defaults.EXPORT_OPSET}]" in export and f"[default: {defaults.EXPORT_BATCH}]" in export
    assert f"[default: {defaults.FUSE_FORM}]" in help_text("fuse")
    infer = help_text("infer")
    assert f"[default: {defaults.INFER_TOPK}]. [x>=1]" in infer
    assert f"[default: {defaults.RUN_BATCH_SIZE}]. [x>=1]" in infer
    validate = help_text("validate")
    assert f"[default: {defaults.RUN_BATCH_SIZE}]. [x>=1]" in validate
    for threshold in ("min_agreement", "min_cosine", "min_sqnr_db", "max_accuracy_drop"):
        stated = ", ".join(f"{values[threshold]:g} {p}" for p, values in THRESHOLDS.items())
        assert f"[default: per precision: {stated}]" in validate, threshold
