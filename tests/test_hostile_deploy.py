"""Deploy, serve and the CLI's printing against hostile but realistic input: engines swapped behind their
manifests, fixed-batch graphs, links, names that would inject config fields, file names that look like Rich markup,
graphs of another interface, labels files with commas and tabs, and `serve` stopped by SIGTERM. The configs Triton
must accept are loaded by a real tritonserver (PyTriton's binary, serve's environment) on loopback."""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from refiner_edge.deploy.serve import wait_ready
from refiner_edge.errors import RefinerEdgeError
from refiner_edge.manifest import manifest_path, read_manifest

from .helpers import assert_clean_failure, free_port, invoke, needs_pb, parse_config, stop

ROOT = Path(__file__).resolve().parents[1]
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


def engine_with(folder: Path, tiny_engine: Path, name: str = "tiny.engine", **engine_fields) -> Path:
    """A copy of the tiny engine whose manifest says `engine_fields` (the file itself is unchanged)."""
    folder.mkdir(parents=True, exist_ok=True)
    engine = folder / name
    shutil.copyfile(tiny_engine, engine)
    data = json.loads(manifest_path(tiny_engine).read_text())
    data["engine"].update(engine_fields)
    manifest_path(engine).write_text(json.dumps(data))
    return engine


def library_engine(folder: Path, tiny_engine: Path, library_name: str = "libRefinerDLA.so",
                   **engine_fields) -> tuple[Path, Path]:
    """(engine, library): a copy of the tiny engine whose manifest names a stand-in plugin library in `folder`."""
    library = folder / library_name
    folder.mkdir(parents=True)
    library.write_bytes(b"\x7fELF stand-in for the plugin library")
    engine = engine_with(folder, tiny_engine, plugin_form="library", plugin_library=str(library),
                         plugin_sha256=None, **engine_fields)
    return engine, library


# --- 11: deploy deepstream checks the engine against its manifest ----------------------------------------------

def test_deepstream_refuses_an_engine_its_manifest_does_not_describe(tmp_path, tiny_engine):
    """An engine swapped behind its manifest (fp16, profile up to 4 in the manifest; another file): the config would
    carry the manifest's network-mode and batch-size for an engine they do not describe. Refused with the rebuild
    line, as deploy triton and the C++ library refuse it; nothing is written."""
    engine = engine_with(tmp_path / "e", tiny_engine, precision="fp16")
    with open(engine, "ab") as f:
        f.write(b"swapped")
    out = tmp_path / "ds"
    result = invoke("deploy", "deepstream", "--engine", engine, "-o", out)
    assert_clean_failure(result, "tiny.engine is not the engine its manifest describes (SHA-256 differs)",
                         "rebuild with: ")
    assert result.exit_code == 2 and not out.exists()
    assert_clean_failure(invoke("deploy", "triton", "--engine", engine, "-o", tmp_path / "r"), "SHA-256 differs")


# --- 12: a fixed-batch graph --------------------------------------------------------------------------------------

def test_deploy_never_deletes_its_input_inside_the_folder_it_replaces(tmp_path, tiny_engine, tiny_plain):
    """An engine (or graph) kept in the model folder a repository would replace: publishing moves that folder aside
    and deletes it, taking the input and its manifest along. Refused in one line, both kept; an engine already in its
    DeepStream folder is published onto itself, which loses nothing."""
    for flag, source in (("--engine", tiny_engine), ("--onnx", tiny_plain)):
        repo = tmp_path / f"repo{flag}"
        kept = repo / "refiner" / source.name
        kept.parent.mkdir(parents=True)
        shutil.copyfile(source, kept)
        shutil.copyfile(manifest_path(source), manifest_path(kept))
        result = invoke("deploy", "triton", flag, kept, "-o", repo)
        assert_clean_failure(result, f"{kept} lies in {repo / 'refiner'}, which this run replaces")
        assert kept.read_bytes() == source.read_bytes() and manifest_path(kept).is_file()
        assert sorted(p.name for p in repo.iterdir()) == ["refiner"]
    ds = tmp_path / "ds"
    engine = engine_with(ds, tiny_engine)
    result = invoke("deploy", "deepstream", "--engine", engine, "-o", ds)
    assert result.exit_code == 0, result.output
    assert engine.read_bytes() == tiny_engine.read_bytes() and manifest_path(engine).is_file()


@pytest.fixture(scope="module")
def fixed_graph(tmp_path_factory, tiny_model) -> Path:
    """The tiny model exported with a fixed batch of 2 (`export --batch 2`)."""
    from refiner_edge.onnx.export import export_onnx

    out = tmp_path_factory.mktemp("fixed") / "fixed.onnx"
    export_onnx(tiny_model, out, batch=2)
    assert read_manifest(out).graph.batch == 2
    return out


@needs_pb
def test_fixed_batch_repository_writes_full_shapes_everywhere(tmp_path, fixed_graph):
    """max_batch_size 0 (Triton does not batch), so every dim is the full shape: the batch of 2 leads the model's,
    the preprocessing model's and the ensemble's tensors alike (the ensemble's steps must agree: tritonserver
    refuses "inconsistent shape" otherwise)."""
    repo = tmp_path / "repo"
    result = invoke("deploy", "triton", "--onnx", fixed_graph, "-o", repo, "--kind", "cpu")
    assert result.exit_code == 0, result.output
    m = read_manifest(fixed_graph)
    model, pre, ens = (parse_config(repo / n / "config.pbtxt") for n in ("refiner", "refiner_preprocess",
                                                                         "refiner_ensemble"))
    assert model.max_batch_size == pre.max_batch_size == ens.max_batch_size == 0
    assert list(model.input[0].dims) == list(pre.output[0].dims) == [2, 3, 64, 64]
    assert list(model.output[0].dims) == list(ens.output[0].dims) == [2, m.model.num_classes]
    assert list(pre.input[0].dims) == list(ens.input[0].dims) == [2]
    assert not model.HasField("dynamic_batching") and not pre.HasField("dynamic_batching")


# --- 13: links keep their manifest ------------------------------------------------------------------------------

def test_a_linked_graph_and_engine_keep_their_manifest(tmp_path, tiny_plain, tiny_engine, sample_photos):
    """current.onnx -> tiny.onnx: preprocess, infer and deploy read tiny.onnx's manifest (its 64-pixel crop, its
    names), not the defaults of another variant, and do not say "has no manifest"."""
    link = tmp_path / "current.onnx"
    link.symlink_to(tiny_plain)
    assert read_manifest(link) == read_manifest(tiny_plain)
    from refiner_edge.images.preprocess import Preprocess
    from refiner_edge.images.tensor_file import read_tensor

    out = tmp_path / "x.rfet"
    result = invoke("preprocess", sample_photos[0], "--onnx", link, "-o", out)
    assert result.exit_code == 0, result.output
    want = Preprocess.from_record(read_manifest(tiny_plain).preprocess).load(sample_photos[0])
    np.testing.assert_array_equal(read_tensor(out), want)
    result = invoke("deploy", "triton", "--onnx", link, "-o", tmp_path / "repo", "--json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "repo" / "refiner" / "1" / "model.onnx").read_bytes() == tiny_plain.read_bytes()

    engine_link = tmp_path / "current.engine"
    engine_link.symlink_to(tiny_engine)
    result = invoke("deploy", "deepstream", "--engine", engine_link, "-o", tmp_path / "ds")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ds" / "current.engine").read_bytes() == tiny_engine.read_bytes()
    # a link whose target has no manifest still says so
    bare = tmp_path / "bare.onnx"
    shutil.copyfile(tiny_plain, bare)
    (tmp_path / "bare-link.onnx").symlink_to(bare)
    assert_clean_failure(invoke("deploy", "triton", "--onnx", tmp_path / "bare-link.onnx", "-o", tmp_path / "r"),
                         "has no manifest")


# --- 14: names and ranges as Triton takes them --------------------------------------------------------------------

@pytest.mark.parametrize("name", ['my"model', "a\nb", "a/b", "a b", ".hidden", "x" * 201, "", "a\\b", "modèle"])
def test_deploy_triton_refuses_names_triton_cannot_take(tmp_path, tiny_plain, name):
    result = invoke("deploy", "triton", "--onnx", tiny_plain, "-o", tmp_path / "r", "--name", name)
    assert_clean_failure(result, "--name must be")
    assert result.exit_code == 2 and not (tmp_path / "r").exists()


@pytest.mark.parametrize("option,value", [("--queue-delay-us", str(2**64)), ("--instances", str(2**31)),
                                          ("--max-batch", str(2**31))])
def test_deploy_triton_refuses_numbers_out_of_their_field(tmp_path, tiny_plain, option, value):
    result = invoke("deploy", "triton", "--onnx", tiny_plain, "-o", tmp_path / "r", option, value)
    assert_clean_failure(result, f"{option} must be between")
    assert result.exit_code == 2 and not (tmp_path / "r").exists()


@needs_pb
def test_graph_tensor_names_are_escaped_not_injected(tmp_path, tiny_plain):
    """A manifest naming the output 'logits" max_batch_size: 99 x: "' (hand-edited): the config still parses, with
    the name as it is and no field of its own."""
    graph = tmp_path / "g.onnx"
    shutil.copyfile(tiny_plain, graph)
    data = json.loads(manifest_path(tiny_plain).read_text())
    data["graph"]["output"] = 'logits" }\n] max_batch_size: 99 #'
    data["artifact"] = "g.onnx\nmax_batch_size: 99"
    manifest_path(graph).write_text(json.dumps(data))
    assert invoke("deploy", "triton", "--onnx", graph, "-o", tmp_path / "repo", "--max-batch", "4").exit_code == 0
    for name in ("refiner", "refiner_ensemble"):
        cfg = parse_config(tmp_path / "repo" / name / "config.pbtxt")
        assert cfg.max_batch_size == 4 and cfg.output[0].name == data["graph"]["output"]


def test_deepstream_refuses_an_engine_name_with_a_newline(tmp_path, tiny_engine):
    engine = engine_with(tmp_path / "e", tiny_engine, name="tiny\nbatch-size=64.engine")
    result = invoke("deploy", "deepstream", "--engine", engine, "-o", tmp_path / "ds")
    assert_clean_failure(result, "control character")
    assert result.exit_code == 2 and not (tmp_path / "ds").exists()


def test_deepstream_refuses_a_gpu_id_out_of_its_field(tmp_path, tiny_engine):
    result = invoke("deploy", "deepstream", "--engine", tiny_engine, "-o", tmp_path / "ds", "--gpu-id", str(2**31))
    assert_clean_failure(result, "--gpu-id must be between 0 and 2147483647")
    assert result.exit_code == 2 and not (tmp_path / "ds").exists()


def test_deepstream_escapes_a_backslash_in_the_engine_name(tmp_path, tiny_engine):
    """GLib's key files read a backslash as an escape: nvinfer would look for another file."""
    engine = engine_with(tmp_path / "e", tiny_engine, name="tiny\\v2.engine")
    assert invoke("deploy", "deepstream", "--engine", engine, "-o", tmp_path / "ds").exit_code == 0
    text = (tmp_path / "ds" / "config_infer_refiner.txt").read_text()
    assert "model-engine-file=tiny\\\\v2.engine\n" in text and (tmp_path / "ds" / "tiny\\v2.engine").is_file()


def run_cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in a process of its own: `serve` replaces its process with serve's environment's interpreter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("name", ["a/b", 'my"model', "a b"])
def test_serve_refuses_a_model_name_in_one_line(tiny_plain, name):
    """PyTriton's rule, checked before any server or environment: not "unexpected PyTritonValidationError"."""
    result = run_cli("serve", "--onnx", tiny_plain, "--name", name, "--host", "127.0.0.1", "--http-port",
                     free_port(), "--grpc-port", free_port())
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and lines[-1].startswith("error: --name must be"), result.stderr[-2000:]
    assert len([line for line in lines if line.startswith("error:")]) == 1 and "Traceback" not in result.stderr


def test_server_command_quotes_a_repository_path_with_blanks(tmp_path, tiny_plain):
    import shlex

    repo = tmp_path / "my models [v2]"
    result = invoke("deploy", "triton", "--onnx", tiny_plain, "-o", repo, "--json")
    assert result.exit_code == 0, result.output
    words = shlex.split(json.loads(result.stdout)["server_command"])
    assert words[words.index("-v") + 1] == f"{repo.resolve()}:/models"


# --- issue 24 item 3: what a library-form or version-compatible engine needs, in the files written ---------------

@needs_pb
def test_repository_says_how_to_load_a_version_compatible_library_engine(tmp_path, tiny_engine):
    engine, library = library_engine(tmp_path / "e", tiny_engine, version_compatible=True)
    repo = tmp_path / "repo"
    result = invoke("deploy", "triton", "--engine", engine, "-o", repo, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    plugins = "--backend-config=tensorrt,plugins=/models/refiner/plugins/libRefinerDLA.so"
    compatible = "--backend-config=tensorrt,version-compatible=true"
    assert summary["backend_config"] == [plugins, compatible]
    assert plugins in summary["server_command"] and compatible in summary["server_command"]
    text = (repo / "refiner" / "config.pbtxt").read_text()
    assert f"# Load it with: tritonserver --model-repository=/models {plugins} {compatible}\n" in text
    assert (repo / "refiner" / "plugins" / "libRefinerDLA.so").read_bytes() == library.read_bytes()
    assert parse_config(repo / "refiner" / "config.pbtxt").platform == "tensorrt_plan"
    # printed too, without --json
    result = invoke("deploy", "triton", "--engine", engine, "-o", repo)
    assert result.exit_code == 0 and compatible in result.stdout and plugins in result.stdout

    # a plain engine needs neither
    result = invoke("deploy", "triton", "--engine", tiny_engine, "-o", tmp_path / "plain", "--json")
    assert json.loads(result.stdout)["backend_config"] == []
    assert "Load it with" not in (tmp_path / "plain" / "refiner" / "config.pbtxt").read_text()


def test_the_plugin_library_in_the_launch_line_survives_the_shell_and_triton(tmp_path, tiny_engine):
    """The printed launch line is pasted into a shell: a library name with a blank is quoted there (one argument
    still); a ';' is refused, as Triton's plugins= reads it as the separator between libraries."""
    import shlex

    for name in ("lib Refiner DLA.so", "lib;DLA.so"):
        engine, _library = library_engine(tmp_path / name, tiny_engine, name)
        result = invoke("deploy", "triton", "--engine", engine, "-o", tmp_path / f"repo {name}", "--json")
        if ";" in name:
            assert_clean_failure(result, "holds a ';', which Triton's plugins= option reads as a separator")
            continue
        assert result.exit_code == 0, result.output
        words = shlex.split(json.loads(result.stdout)["server_command"])
        assert f"--backend-config=tensorrt,plugins=/models/refiner/plugins/{name}" in words


def test_deepstream_points_custom_lib_path_at_the_manifests_library(tmp_path, tiny_engine):
    engine, library = library_engine(tmp_path / "e", tiny_engine, version_compatible=True)
    out = tmp_path / "ds"
    result = invoke("deploy", "deepstream", "--engine", engine, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    text = (out / "config_infer_refiner.txt").read_text()
    assert "\ncustom-lib-path=plugins/libRefinerDLA.so\n" in text
    assert (out / "plugins" / "libRefinerDLA.so").read_bytes() == library.read_bytes()
    assert any("version-compatible" in n for n in json.loads(result.stdout)["notes"])


# --- 15: file names are never Rich markup ------------------------------------------------------------------------

def test_file_names_that_look_like_markup_print_as_they_are(tmp_path, tiny_plain, sample_photos):
    folder = tmp_path / "old [/archive]"   # the folder "archive]" inside "old ["
    folder.mkdir(parents=True)
    photo = folder / "holiday [draft].jpg"
    shutil.copyfile(sample_photos[0], photo)
    result = invoke("infer", "--onnx", tiny_plain, folder)
    assert result.exit_code == 0, result.output
    assert str(photo) in result.stdout


def test_spinner_and_progress_take_file_names_as_text(monkeypatch, capsys):
    """On a terminal (FORCE_COLOR makes Rich treat stderr as one) the spinner and progress labels hold names."""
    from refiner_edge.cli.common import phases, status

    monkeypatch.setenv("FORCE_COLOR", "1")
    with status("exporting to x [/y]/c.onnx and [bold]b.onnx ..."):
        pass
    with phases() as phase:
        phase("classifying old [/archive] and holiday [draft].jpg", 2)(2)
    err = capsys.readouterr().err
    # the names as they are: not dropped as tags, not turned into styling (Rich markup would eat the brackets)
    for name in ("x [/y]/c.onnx", "[bold]b.onnx", "old [/archive]", "holiday [draft].jpg"):
        assert name in err, err[-2000:]


# --- 12 and 14 in a real tritonserver -------------------------------------------------------------------------------

# Where serve's interpreter has PyTriton's tritonserver, its libraries, its libpython and its version.
SERVER_PATHS = ("import sys, sysconfig, pytriton\nfrom pathlib import Path\nfrom pytriton.utils.distribution import "
                "get_libs_path\nprint(Path(pytriton.__file__).parent, get_libs_path(), sysconfig.get_config_var('LIBDIR'), "
                "f'{sys.version_info.major}.{sys.version_info.minor}')")

# The model's stand-in: PyTriton's tritonserver has the Python backend only (no onnxruntime or tensorrt backend),
# so the graph's model is served by this, under the very config deploy wrote (its platform swapped for the Python
# backend; names, dims, max_batch_size, batching and instances as written). It answers zeros of the output's shape.
STAND_IN = '''import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.output = config["output"][0]
        self.batched = config["max_batch_size"] > 0

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, self.input_name(request)).as_numpy()
            dims = [int(d) for d in self.output["dims"]]
            shape = [x.shape[0], *dims] if self.batched else dims
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(self.output["name"], np.zeros(shape, np.float32))]))
        return responses

    @staticmethod
    def input_name(request):
        return request.inputs()[0].name()
'''


def stand_in(repo: Path, name: str) -> None:
    """Serve model `name` of `repo` by the Python stand-in, keeping the rest of its config.pbtxt as deploy wrote it."""
    from google.protobuf import text_format

    cfg = parse_config(repo / name / "config.pbtxt")
    cfg.ClearField("platform")
    cfg.ClearField("default_model_filename")
    cfg.backend = "python"
    for group in cfg.instance_group:
        group.kind = group.KIND_CPU
    (repo / name / "config.pbtxt").write_text(text_format.MessageToString(cfg))
    for f in (repo / name / "1").iterdir():
        f.unlink()
    (repo / name / "1" / "model.py").write_text(STAND_IN)


@pytest.fixture(scope="module")
def tritonserver(serve_python, tmp_path_factory):
    """start(repo, models) -> (url, process): PyTriton's tritonserver on loopback loading `models` of `repo`
    (explicit model control), with serve's environment's Python-backend stub; stopped at the end of the test."""
    where = subprocess.run([str(serve_python), "-c", SERVER_PATHS], capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert where.returncode == 0, where.stderr[-2000:]
    pytriton_dir, libs, libdir, version = where.stdout.split()
    server = Path(pytriton_dir) / "tritonserver"
    backends = tmp_path_factory.mktemp("backends") / "backends"
    shutil.copytree(server / "backends", backends)
    shutil.copy2(server / "python_backend_stubs" / version / "triton_python_backend_stub", backends / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, libs, env.get("LD_LIBRARY_PATH", "")])
    env["PATH"] = os.pathsep.join([str(Path(serve_python).parent), env.get("PATH", "")])
    started = []

    def start(repo: Path, models: list[str]):
        http = free_port()
        cmd = [str(server / "bin" / "tritonserver"), f"--model-repository={repo}", f"--backend-directory={backends}",
               "--model-control-mode=explicit", *[f"--load-model={m}" for m in models],
               "--http-address=127.0.0.1", f"--http-port={http}", "--allow-grpc=false", "--allow-metrics=false",
               "--exit-timeout-secs=20", "--exit-on-error=true"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        started.append(proc)
        url = f"127.0.0.1:{http}"
        try:
            wait_ready(url, models, timeout=90, alive=lambda: proc.poll() is None)
        except (RefinerEdgeError, TimeoutError):
            stop(proc)
            pytest.fail(f"tritonserver did not load {models}: {proc.stdout.read()[-4000:]}")
        return url, proc

    yield start
    for proc in started:
        stop(proc)


@pytest.mark.serve
@pytest.mark.slow
@needs_pb
def test_fixed_batch_ensemble_loads_and_answers_in_a_real_tritonserver(tmp_path, fixed_graph, sample_photos,
                                                                     tritonserver):
    """`export --batch 2` then `deploy triton`: tritonserver loads the ensemble (it refused it before with
    "inconsistent shape") and answers two encoded images with [2, classes]."""
    import tritonclient.http as httpclient

    repo = tmp_path / "repo"
    assert invoke("deploy", "triton", "--onnx", fixed_graph, "-o", repo, "--kind", "cpu").exit_code == 0
    stand_in(repo, "refiner")
    url, _proc = tritonserver(repo, ["refiner", "refiner_preprocess", "refiner_ensemble"])
    client = httpclient.InferenceServerClient(url)
    try:
        x = httpclient.InferInput("image", [2], "BYTES")
        x.set_data_from_numpy(np.array([p.read_bytes() for p in sample_photos], dtype=object))
        logits = client.infer("refiner_ensemble", [x]).as_numpy(read_manifest(fixed_graph).graph.output)
    finally:
        client.close()
    assert logits.shape == (2, read_manifest(fixed_graph).model.num_classes)
    # the project's own example client asks the model's config, so a fixed-batch repository is no surprise to it
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "triton_client.py"), *map(str, sample_photos),
                             "--url", url, "--protocol", "http", "--topk", "2"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if not line.startswith(" ")] == list(map(str, sample_photos))


@pytest.mark.serve
@pytest.mark.slow
@needs_pb
def test_names_and_ranges_deploy_accepts_load_in_a_real_tritonserver(tmp_path, tiny_plain, tritonserver):
    """The edges of what deploy triton accepts load: a name of every allowed kind of character, the longest queue
    delay, two instances, preferred batches; and a graph output name with a quote and a newline, escaped."""
    import tritonclient.http as httpclient

    from refiner_edge.deploy.triton import QUEUE_DELAY_MAX_US

    graph = tmp_path / "g.onnx"
    shutil.copyfile(tiny_plain, graph)
    data = json.loads(manifest_path(tiny_plain).read_text())
    data["graph"]["output"] = 'log"its\n2'
    manifest_path(graph).write_text(json.dumps(data))
    name = "Refiner-v2.1_x"
    repo = tmp_path / "repo"
    result = invoke("deploy", "triton", "--onnx", graph, "-o", repo, "--name", name, "--kind", "cpu",
                    "--queue-delay-us", QUEUE_DELAY_MAX_US, "--instances", "2", "--max-batch", "4",
                    "--preferred-batch", "2", "--preferred-batch", "4")
    assert result.exit_code == 0, result.output
    stand_in(repo, name)
    models = [name, f"{name}_preprocess", f"{name}_ensemble"]
    url, _proc = tritonserver(repo, models)
    client = httpclient.InferenceServerClient(url)
    try:
        for model in models:
            assert client.get_model_config(model)["name"] == model
        assert client.get_model_config(name)["output"][0]["name"] == 'log"its\n2'
    finally:
        client.close()


# --- 20: labels files name files with commas, tabs and quotes ----------------------------------------------------

def test_labels_file_names_files_with_commas_tabs_and_quotes(tmp_path, sample_photos):
    """The path is everything before the last run of blanks/tabs/commas; a quoted name is taken as it is."""
    from refiner_edge.errors import InputError
    from refiner_edge.images.imageset import ImageSet, labels_line, load_labels

    root = tmp_path / "imgs"
    names = ["beach, day 1.jpg", "a\tb.jpg", "sub/plain.jpg", 'odd, ".jpg', "trailing,.jpg"]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample_photos[0], root / name)
    images = ImageSet(paths=[root / n for n in names], arrays=np.zeros((len(names), 3, 8, 8), np.float32))
    table = tmp_path / "labels.txt"
    table.write_text("# path index\nbeach, day 1.jpg 3\na\tb.jpg\t4\nsub/plain.jpg,5\n\"odd, \"\".jpg\",6\n"
                     "\"trailing,.jpg\" 7\n")
    assert list(load_labels(table, images, root)) == [3, 4, 5, 6, 7]
    assert labels_line("x.jpg, 3 ") == ("x.jpg", 3) and labels_line("  sub/a b.jpg   12") == ("sub/a b.jpg", 12)
    for bad in ("x.jpg", "3", "x.jpg three", '"unterminated.jpg 3'):
        assert labels_line(bad) is None
    table.write_text('"unterminated.jpg 3\n')
    with pytest.raises(InputError, match=r"labels.txt:1: expected .*double quotes"):
        load_labels(table, images, root)


def triton_model_copies(name: str) -> list[Path]:
    """The copies tritonserver makes of models loaded through its API (PyTriton's), folderXXXXXX in /tmp, of model
    `name` or NAME_image."""
    found = []
    places = {Path("/tmp"), Path(tempfile.gettempdir())}   # tritonserver writes them to /tmp whatever TMPDIR says
    for folder in (f for place in places for f in place.glob("folder*")):
        try:
            text = (folder / "config.pbtxt").read_text(errors="replace")
        except OSError:
            continue
        if f'"{name}"' in text or f'"{name}_image"' in text:
            found.append(folder)
    return found


@pytest.mark.serve
@pytest.mark.slow
def test_sigterm_stops_serve_gracefully_and_leaves_no_model_copies(tiny_plain, serve_python):
    """`timeout`/`docker stop` send SIGTERM: tritonserver is stopped with its models unloaded (no "exited with
    failure", no "Non-graceful termination"), its temporary model copies are gone, one `error: interrupted` line."""
    name = f"sigterm_{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", "--onnx", str(tiny_plain), "--name",
                             name, "--host", "127.0.0.1", "--http-port", str(free_port()), "--grpc-port",
                             str(free_port()), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        ready = json.loads(proc.stdout.readline() or "null")
        assert ready is not None, proc.stderr.read()[-3000:] if proc.poll() is not None else "no ready line"
        assert triton_model_copies(name), "the server made no model copies to check for"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=90)
    finally:
        stop(proc)
    assert proc.returncode == 130, err[-3000:]
    assert "exited with failure" not in err and "Non-graceful termination" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in err, err[-3000:]
    assert triton_model_copies(name) == []


# --- 17: graphs of another interface -------------------------------------------------------------------------------

def small_graph(path: Path, kind: str) -> Path:
    """A 64x64 classifier of 10 classes (GlobalAveragePool, MatMul) with the interface `kind` names: ok (FP32 NCHW,
    [B, 10]), fp16 or uint8 input, nhwc, two inputs, rank1 (output [10]), seven (7 classes)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    classes = 7 if kind == "seven" else 10
    dtype = {"fp16": T.FLOAT16, "uint8": T.UINT8}.get(kind, T.FLOAT)
    shape = ["N", 64, 64, 3] if kind == "nhwc" else [1 if kind == "rank1" else "N", 3, 64, 64]
    inputs = [h.make_tensor_value_info("input", dtype, shape)]
    nodes, x = [], "input"
    if kind in ("fp16", "uint8"):
        nodes.append(h.make_node("Cast", [x], ["cast"], to=T.FLOAT))
        x = "cast"
    if kind == "nhwc":
        nodes.append(h.make_node("Transpose", [x], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    if kind == "two":
        inputs.append(h.make_tensor_value_info("second", T.FLOAT, shape))
        nodes.append(h.make_node("Add", [x, "second"], ["sum"]))
        x = "sum"
    inits = [nh.from_array(np.random.default_rng(0).standard_normal((3, classes)).astype(np.float32), "w")]
    nodes += [h.make_node("GlobalAveragePool", [x], ["pool"]), h.make_node("Flatten", ["pool"], ["flat"]),
              h.make_node("MatMul", ["flat", "w"], ["logits2d" if kind == "rank1" else "logits"])]
    if kind == "rank1":
        nodes.append(h.make_node("Reshape", ["logits2d", "shape"], ["logits"]))
        inits.append(nh.from_array(np.array([classes], np.int64), "shape"))
    out_shape = [classes] if kind == "rank1" else ["N", classes]
    graph = h.make_graph(nodes, kind, inputs, [h.make_tensor_value_info("logits", T.FLOAT, out_shape)], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


OTHER_INTERFACES = {"fp16": "is float16, not float32", "uint8": "is uint8, not float32",
                    "nhwc": "(channels last, NHWC?)", "two": "it has 2 inputs ('input', 'second')",
                    "rank1": "has shape [10], not [B, classes]"}


@pytest.mark.parametrize("kind", sorted(OTHER_INTERFACES))
def test_graphs_of_another_interface_end_in_one_line(tmp_path, kind, sample_photos):
    graph = small_graph(tmp_path / f"{kind}.onnx", kind)
    why = OTHER_INTERFACES[kind]
    for args in (["infer", "--onnx", graph, "--variant", "refiner-vit-tiny", sample_photos[0]],
                 ["bench", "--onnx", graph, "--iterations", "1"],
                 ["calibrate", "--onnx", graph, "--images", sample_photos[0].parent, "--precision", "fp16", "-o",
                  tmp_path / "c.onnx"],
                 ["fuse", graph, "-o", tmp_path / "f.onnx"],
                 ["validate", "--onnx", small_graph(tmp_path / "ok.onnx", "ok"), "--reference", graph, "--images",
                  sample_photos[0].parent, "--variant", "refiner-vit-tiny"]):
        result = invoke(*args)
        assert_clean_failure(result, f"{graph.name}: ", why, "refiner-edge runs graphs with one FP32 input")
        assert result.exit_code == 2, (args[0], result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({graph.name, "ok.onnx"})


def test_reference_with_another_class_count_and_nothing_to_fuse_are_one_line(tmp_path, sample_photos):
    ok, seven = small_graph(tmp_path / "ok.onnx", "ok"), small_graph(tmp_path / "seven.onnx", "seven")
    result = invoke("validate", "--onnx", ok, "--reference", seven, "--images", sample_photos[0].parent,
                    "--variant", "refiner-vit-tiny")
    assert_clean_failure(result, "has 7 classes and ok.onnx 10")
    assert result.exit_code == 2
    result = invoke("fuse", ok, "-o", tmp_path / "fused.onnx")
    assert_clean_failure(result, "nothing to fuse: the graph has no attention-refinement subgraph")
    assert result.exit_code == 2 and not (tmp_path / "fused.onnx").exists()
