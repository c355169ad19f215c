"""`refiner-edge deploy triton` and `deploy deepstream`: repositories and configurations generated from manifests,
parsed with Triton's own model-config protobuf (tritonclient.grpc.model_config_pb2) and an INI parser; the
generated Python-backend preprocessing model run by a real tritonserver (PyTriton's binary) on loopback."""
import configparser
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refiner_edge.deploy.serve import decode_image, wait_ready
from refiner_edge.images.labels import imagenet_labels
from refiner_edge.images.preprocess import Preprocess
from refiner_edge.manifest import manifest_path, read_manifest

from .helpers import assert_clean_failure, default_sigint, free_port, invoke, needs_pb, parse_config, stop

pytestmark = pytest.mark.torch_free

ROOT = Path(__file__).resolve().parents[1]

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


@needs_pb
def test_onnx_repository_is_what_triton_parses(tmp_path, tiny_plain):
    from tritonclient.grpc import model_config_pb2 as pb

    repo = tmp_path / "repo"
    result = invoke("deploy", "triton", "--onnx", tiny_plain, "-o", repo, "--max-batch", "4", "--preferred-batch",
                    "2", "--preferred-batch", "4", "--queue-delay-us", "500", "--instances", "2", "--kind", "cpu",
                    "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    m = read_manifest(tiny_plain)
    cfg = parse_config(repo / "refiner" / "config.pbtxt")
    assert cfg.name == "refiner" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 4
    assert cfg.default_model_filename == "model.onnx"
    (inp,), (out,) = cfg.input, cfg.output
    assert (inp.name, inp.data_type, list(inp.dims)) == (m.graph.input, pb.TYPE_FP32, [3, 64, 64])
    assert (out.name, out.data_type, list(out.dims)) == (m.graph.output, pb.TYPE_FP32, [m.model.num_classes])
    assert out.label_filename == "labels.txt"
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    (group,) = cfg.instance_group
    assert group.count == 2 and group.kind == pb.ModelInstanceGroup.KIND_CPU
    assert (repo / "refiner" / "1" / "model.onnx").read_bytes() == tiny_plain.read_bytes()
    labels = (repo / "refiner" / "labels.txt").read_text().splitlines()
    assert labels == list(imagenet_labels())

    pre = parse_config(repo / "refiner_preprocess" / "config.pbtxt")
    assert pre.backend == "python" and pre.max_batch_size == 4
    assert pre.input[0].data_type == pb.TYPE_STRING and list(pre.output[0].dims) == [3, 64, 64]
    params = json.loads(pre.parameters["preprocess"].string_value)
    assert params == {k: getattr(m.preprocess, k) for k in params} and len(params) == 6
    ens = parse_config(repo / "refiner_ensemble" / "config.pbtxt")
    assert ens.platform == "ensemble" and (repo / "refiner_ensemble" / "1").is_dir()
    first, second = ens.ensemble_scheduling.step
    assert first.model_name == "refiner_preprocess" and second.model_name == "refiner"
    assert second.input_map[m.graph.input] == first.output_map["preprocessed"]
    assert second.output_map[m.graph.output] == ens.output[0].name
    assert summary["platform"] == "onnxruntime_onnx" and summary["plugin_library"] is None
    assert "--backend-config" not in summary["server_command"]
    # no temporary folder left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


@needs_pb
def test_engine_repository_takes_the_profile_and_plugin_from_the_manifest(tmp_path, tiny_engine):
    from tritonclient.grpc import model_config_pb2 as pb

    repo = tmp_path / "repo"
    result = invoke("deploy", "triton", "--engine", tiny_engine, "-o", repo, "--name", "tiny", "--json")
    assert result.exit_code == 0, result.output
    cfg = parse_config(repo / "tiny" / "config.pbtxt")
    m = read_manifest(tiny_engine)
    assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
    assert cfg.max_batch_size == m.engine.profiles[0].max[0] == 8
    assert list(cfg.input[0].dims) == m.engine.profiles[0].max[1:]
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert (repo / "tiny" / "1" / "model.plan").read_bytes() == tiny_engine.read_bytes()   # raw, no header
    assert "--backend-config" not in json.loads(result.stdout)["server_command"]   # plugin_form none
    assert any("built by tensorrt-rtx" in n for n in json.loads(result.stdout)["notes"])

    assert_clean_failure(invoke("deploy", "triton", "--engine", tiny_engine, "-o", repo, "--max-batch", "16"),
                         "profile maximum (8)")
    assert_clean_failure(invoke("deploy", "triton", "--engine", tiny_engine, "-o", repo, "--kind", "cpu"),
                         "GPU only")

    # a library-form engine: the same engine file with a manifest that says so, and a library beside it
    lib_engine = tmp_path / "lib" / "tiny.engine"
    lib_engine.parent.mkdir()
    shutil.copyfile(tiny_engine, lib_engine)
    library = tmp_path / "lib" / "libRefinerDLA.so"
    library.write_bytes(b"\x7fELF stand-in for the plugin library")
    data = json.loads(manifest_path(tiny_engine).read_text())
    data["engine"].update(plugin_form="library", plugin_library=str(library))
    manifest_path(lib_engine).write_text(json.dumps(data))
    result = invoke("deploy", "triton", "--engine", lib_engine, "-o", tmp_path / "repo2", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["plugin_library"] == "refiner/plugins/libRefinerDLA.so"
    assert (tmp_path / "repo2" / summary["plugin_library"]).read_bytes() == library.read_bytes()
    assert "--backend-config=tensorrt,plugins=/models/refiner/plugins/libRefinerDLA.so" in summary["server_command"]
    library.unlink()
    assert_clean_failure(invoke("deploy", "triton", "--engine", lib_engine, "-o", tmp_path / "repo3"),
                         "plugin library")


def test_deploy_triton_refusals_are_one_line(tmp_path, tiny_plain):
    assert_clean_failure(invoke("deploy", "triton", "-o", tmp_path / "r"), "give one of --engine and --onnx")
    assert_clean_failure(invoke("deploy", "triton", "--onnx", tmp_path / "none.onnx", "-o", tmp_path / "r"),
                         "not found")
    bare = tmp_path / "bare.onnx"
    shutil.copyfile(tiny_plain, bare)
    assert_clean_failure(invoke("deploy", "triton", "--onnx", bare, "-o", tmp_path / "r"), "no manifest")
    assert_clean_failure(invoke("deploy", "triton", "--onnx", tiny_plain, "-o", tmp_path / "r", "--max-batch",
                                "4", "--preferred-batch", "8"), "--preferred-batch")
    fused = tmp_path / "fused.onnx"
    shutil.copyfile(tiny_plain, fused)
    data = json.loads(manifest_path(tiny_plain).read_text())
    data["graph"]["fused"] = True
    manifest_path(fused).write_text(json.dumps(data))
    assert_clean_failure(invoke("deploy", "triton", "--onnx", fused, "-o", tmp_path / "r"), "fused graph")
    assert not (tmp_path / "r").exists()


@pytest.mark.serve
def test_generated_preprocessing_model_runs_in_a_real_tritonserver(tmp_path, tiny_plain, sample_photos, serve_python):
    """The repository as written, served by PyTriton's tritonserver binary (which has only the Python backend, so
    only NAME_preprocess is loaded): its tensors are refiner-edge's preprocessing bit for bit (it runs the package's
    images/transform.py, copied beside it), a garbage image gets an error of its own, and the server keeps serving.
    The binary and the stub come from serve's environment."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    where = subprocess.run([str(serve_python), "-c", SERVER_PATHS], capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert where.returncode == 0, where.stderr[-2000:]
    pytriton_dir, libs, libdir, version = where.stdout.split()
    repo = tmp_path / "repo"
    assert invoke("deploy", "triton", "--onnx", tiny_plain, "-o", repo).exit_code == 0
    shipped = repo / "refiner_preprocess" / "1" / "refiner_edge_transform.py"
    assert shipped.read_bytes() == (ROOT / "refiner_edge" / "images" / "transform.py").read_bytes()
    server = Path(pytriton_dir) / "tritonserver"
    backends = tmp_path / "backends"
    shutil.copytree(server / "backends", backends)
    shutil.copy2(server / "python_backend_stubs" / version / "triton_python_backend_stub", backends / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # the stub loads the libpython of serve's interpreter (DESIGN.md), then the model's imports from its packages
    env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, libs, env.get("LD_LIBRARY_PATH", "")])
    env["PATH"] = os.pathsep.join([str(Path(serve_python).parent), env.get("PATH", "")])
    http = free_port()
    cmd = [str(server / "bin" / "tritonserver"), f"--model-repository={repo}", f"--backend-directory={backends}",
           "--model-control-mode=explicit", "--load-model=refiner_preprocess", "--http-address=127.0.0.1",
           f"--http-port={http}", "--allow-grpc=false", "--allow-metrics=false", "--exit-timeout-secs=20"]
    # the exit timeout covers the HTTP connections' grace second and the Python model's unload, which took more
    # than the 2 s this once allowed on a loaded 2-core machine (then "Exit timeout expired", exit 1)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=default_sigint)   # stop() ends it with SIGINT
    url = f"127.0.0.1:{http}"
    try:
        wait_ready(url, ["refiner_preprocess"], timeout=60, alive=lambda: proc.poll() is None)
        client = httpclient.InferenceServerClient(url)
        pre = Preprocess.from_record(read_manifest(tiny_plain).preprocess)

        def request(data: bytes):
            x = httpclient.InferInput("image", [1, 1], "BYTES")
            x.set_data_from_numpy(np.array([[data]], dtype=object))
            return client.infer("refiner_preprocess", [x])

        for photo in sample_photos:   # the very tensors of `infer` (a file) and of `serve` (bytes)
            got = request(photo.read_bytes()).as_numpy("preprocessed")[0]
            np.testing.assert_array_equal(got, pre.load(photo))
            np.testing.assert_array_equal(got, decode_image(photo.read_bytes(), pre))
        with pytest.raises(InferenceServerException, match="not a decodable image: not an image file"):
            request(b"garbage")
        assert request(sample_photos[0].read_bytes()).as_numpy("preprocessed").shape == (1, 3, 64, 64)
        client.close()
    except Exception:
        if proc.poll() is not None:
            pytest.fail(f"tritonserver exited: {proc.stdout.read()[-3000:]}")
        raise
    finally:
        stop(proc)
    assert proc.returncode == 0, proc.stdout.read()[-3000:]


# Where serve's interpreter has PyTriton's tritonserver, its libraries, its libpython and its version.
SERVER_PATHS = ("import sys, sysconfig, pytriton\nfrom pathlib import Path\nfrom pytriton.utils.distribution import "
                "get_libs_path\nprint(Path(pytriton.__file__).parent, get_libs_path(), sysconfig.get_config_var('LIBDIR'), "
                "f'{sys.version_info.major}.{sys.version_info.minor}')")


# --- DeepStream -----------------------------------------------------------------------------------------------

def read_nvinfer(path: Path) -> dict[str, str]:
    """nvinfer's key file (GLib key-file syntax: [group], key=value, # comments), read with configparser."""
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",), delimiters=("=",))
    parser.optionxform = str   # keys are case-sensitive
    parser.read_string(path.read_text())
    assert parser.sections() == ["property"]
    return dict(parser["property"])


def nvinfer_input(props: dict[str, str], pixel: np.ndarray) -> np.ndarray:
    """What nvinfer feeds the network for one RGB pixel: net-scale-factor * (pixel - offsets)."""
    offsets = np.array([float(v) for v in props["offsets"].split(";")])
    return float(props["net-scale-factor"]) * (pixel - offsets)


def test_deepstream_config_reproduces_the_manifest(tmp_path, tiny_engine):
    out = tmp_path / "ds"
    result = invoke("deploy", "deepstream", "--engine", tiny_engine, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    m = read_manifest(tiny_engine)
    props = read_nvinfer(out / "config_infer_refiner.txt")
    assert props["network-type"] == "1" and props["model-color-format"] == "0" and props["process-mode"] == "1"
    assert props["model-engine-file"] == tiny_engine.name
    assert (out / props["model-engine-file"]).read_bytes() == tiny_engine.read_bytes()
    assert (out / props["labelfile-path"]).read_text().splitlines() == list(imagenet_labels())
    assert props["batch-size"] == str(m.engine.profiles[0].max[0])
    assert props["infer-dims"] == "3;64;64" and props["output-blob-names"] == m.graph.output
    assert props["network-mode"] == "0"            # fp32
    assert "custom-lib-path" not in props and "enable-dla" not in props   # plain engine on a GPU
    assert summary["preprocessing_exact"] is True
    # the normalisation, on test pixels, against the package's own preprocessing arithmetic
    mean, std = np.array(m.preprocess.mean), np.array(m.preprocess.std)
    for pixel in (np.array([0.0, 0.0, 0.0]), np.array([255.0, 255.0, 255.0]), np.array([200.0, 17.0, 93.0])):
        np.testing.assert_allclose(nvinfer_input(props, pixel), (pixel / 255.0 - mean) / std, rtol=1e-12,
                                   atol=1e-12)
    readme = (out / "README.md").read_text()
    assert "gst-launch-1.0" in readme and "nvinfer config-file-path=config_infer_refiner.txt" in readme
    assert "Only on a Jetson" in readme
    assert_clean_failure(invoke("deploy", "deepstream", "--engine", tiny_engine, "-o", out, "--batch-size", "9"),
                         "outside the engine's profile")


def test_deepstream_library_engine_on_dla_and_unequal_std(tmp_path, tiny_engine):
    """The same engine file with a manifest that says: library-form plugin, DLA core 1, ImageNet mean/std."""
    engine = tmp_path / "orin" / "tiny.engine"
    engine.parent.mkdir()
    shutil.copyfile(tiny_engine, engine)
    library = tmp_path / "orin" / "libRefinerDLA.so"
    library.write_bytes(b"\x7fELF stand-in for the plugin library")
    data = json.loads(manifest_path(tiny_engine).read_text())
    data["engine"].update(plugin_form="library", plugin_library=str(library), dla_core=1, precision="fp16")
    data["preprocess"].update(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    manifest_path(engine).write_text(json.dumps(data))
    out = tmp_path / "ds"
    result = invoke("deploy", "deepstream", "--engine", engine, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    props = read_nvinfer(out / "config_infer_refiner.txt")
    assert props["custom-lib-path"] == "plugins/libRefinerDLA.so"
    assert (out / props["custom-lib-path"]).read_bytes() == library.read_bytes()
    assert props["enable-dla"] == "1" and props["use-dla-core"] == "1" and props["network-mode"] == "2"
    summary = json.loads(result.stdout)
    assert summary["preprocessing_exact"] is False
    assert any("APPROXIMATE" in n for n in summary["notes"])
    assert "APPROXIMATE" in (out / "config_infer_refiner.txt").read_text()
    # the offsets still subtract the per-channel mean exactly; only the scale is shared
    pixel = np.array([200.0, 17.0, 93.0])
    mean, std = np.array(data["preprocess"]["mean"]), np.array(data["preprocess"]["std"])
    got, want = nvinfer_input(props, pixel), (pixel / 255.0 - mean) / std
    assert not np.allclose(got, want, rtol=1e-6) and np.allclose(got, want, rtol=0.03)


def test_help_of_the_serving_commands_imports_nothing_heavy():
    """`--help` of the root, `serve`, `deploy` and `bench` loads no pytriton, tritonclient, torch or tensorrt."""
    probe = ("import sys\nfrom refiner_edge.cli import run\nsys.argv = ['refiner-edge', *sys.argv[1:]]\n"
             "try:\n    run()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
             "print('HEAVY:' + ','.join(m for m in ('pytriton', 'tritonclient', 'torch', 'tensorrt', 'tensorrt_rtx') "
             "if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (["--help"], ["serve", "--help"], ["deploy", "--help"], ["deploy", "triton", "--help"],
                 ["deploy", "deepstream", "--help"], ["bench", "--help"]):
        result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env,
                                timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.splitlines()[-1] == "HEAVY:", (args, result.stdout.splitlines()[-1])
        if len(args) > 1 and args[-2] in ("serve", "triton", "deepstream", "bench"):
            assert "[default:" in result.stdout


def test_deploying_into_an_existing_repository_keeps_its_other_models(tmp_path, tiny_plain):
    """A model repository holds many models: deploying one replaces its own folders only, each once complete."""
    repo = tmp_path / "repo"
    (repo / "other_model" / "1").mkdir(parents=True)
    (repo / "other_model" / "config.pbtxt").write_text('name: "other_model"\n')
    (repo / "refiner" / "1").mkdir(parents=True)
    (repo / "refiner" / "1" / "stale.bin").write_bytes(b"from an earlier deploy")
    for _ in range(2):
        assert invoke("deploy", "triton", "--onnx", tiny_plain, "-o", repo).exit_code == 0
    assert (repo / "other_model" / "config.pbtxt").read_text() == 'name: "other_model"\n'
    assert not (repo / "refiner" / "1" / "stale.bin").exists() and (repo / "refiner" / "1" / "model.onnx").is_file()
    assert sorted(p.name for p in repo.iterdir()) == ["other_model", "refiner", "refiner_ensemble",
                                                      "refiner_preprocess"]  # nothing temporary left
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]
