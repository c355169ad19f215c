"""`refiner-edge serve`: a real Triton Inference Server (PyTriton's tritonserver) on loopback in front of the ONNX
Runtime runner, under concurrent load from tritonclient over HTTP and gRPC. One server per module: it answers like
`refiner-edge infer`, batches concurrent requests (its statistics say so), refuses malformed requests and keeps
serving, and stops cleanly on Ctrl-C. The server runs in serve's own environment (PyTriton with numpy<2) while the
clients here run on this one's NumPy; skips print why that environment cannot be made."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from refiner_edge.deploy.serve import wait_ready
from refiner_edge.images.preprocess import Preprocess
from refiner_edge.manifest import read_manifest

from .helpers import assert_clean_failure, default_sigint, free_port, invoke, stop

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.serve
REQUESTS, THREADS, TIMEOUT_S = 32, 8, 60.0


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def server(tiny_plain, serve_python):
    """`refiner-edge serve --onnx tiny.onnx` in its own process (under serve's environment, which it finds made by
    `serve_python`); always stopped (SIGINT, then kill) at the end."""
    http, grpc = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # a long queue delay so that concurrent requests meet in the queue even on a busy 2-core machine
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", "--onnx", str(tiny_plain), "--http-port",
                             str(http), "--grpc-port", str(grpc), "--max-batch", "8", "--queue-delay-us", "50000",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=default_sigint)
    info = {"proc": proc, "http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}", "ports": (http, grpc)}
    try:
        started = time.monotonic()
        wait_ready(info["http"], ["refiner", "refiner_image"], timeout=90, alive=lambda: proc.poll() is None)
        info["start_s"] = time.monotonic() - started
        # the ready line comes after the server's self-check, which can end well after its models are ready on a
        # busy machine: a Ctrl-C before it would find none
        info["ready_line"] = proc.stdout.readline()
        yield info
    except Exception:
        proc.kill()
        _out, err = proc.communicate(timeout=30)
        pytest.fail(f"the server did not start: {err[-3000:]}")
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def expected(tiny_plain, sample_photos):
    """What `refiner-edge infer --onnx` says about the photographs (top 5, with probabilities)."""
    result = invoke("infer", "--onnx", tiny_plain, "--topk", "5", "--json", *sample_photos)
    assert result.exit_code == 0, result.output
    return {Path(r["image"]).name: r["predictions"] for r in json.loads(result.stdout)}


def top5(logits: np.ndarray) -> list[dict]:
    from refiner_edge.runners.classify import topk

    return topk(logits[None], 5, logits.shape[-1])[0]


def same_predictions(got: list[dict], want: list[dict]) -> bool:
    return [p["index"] for p in got] == [p["index"] for p in want] and \
        np.allclose([p["prob"] for p in got], [p["prob"] for p in want], rtol=1e-4, atol=1e-6)


def tensor_request(module, image: np.ndarray, dtype=np.float32, name="input"):
    x = module.InferInput(name, list(image.shape), {np.float32: "FP32", np.float64: "FP64"}[dtype])
    x.set_data_from_numpy(image.astype(dtype))
    return [x]


def image_request(module, data: bytes):
    x = module.InferInput("image", [1, 1], "BYTES")
    x.set_data_from_numpy(np.array([[data]], dtype=object))
    return [x]


def test_concurrent_requests_answer_like_infer_and_are_batched(server, tiny_plain, sample_photos, expected):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    pre = Preprocess.from_record(read_manifest(tiny_plain).preprocess)
    tensors = {p.name: pre.load(p)[None] for p in sample_photos}
    encoded = {p.name: p.read_bytes() for p in sample_photos}
    names = [p.name for p in sample_photos]

    def one(i: int):
        """Request i: HTTP or gRPC, a preprocessed tensor or (every fourth) the encoded file."""
        module = httpclient if i % 2 else grpcclient
        url = server["http"] if i % 2 else server["grpc"]
        client = module.InferenceServerClient(url)
        try:
            name = names[i % len(names)]
            if i % 4 == 3:
                result = client.infer("refiner_image", image_request(module, encoded[name]), client_timeout=TIMEOUT_S) \
                    if module is grpcclient else client.infer("refiner_image", image_request(module, encoded[name]))
            else:
                result = client.infer("refiner", tensor_request(module, tensors[name]), client_timeout=TIMEOUT_S) \
                    if module is grpcclient else client.infer("refiner", tensor_request(module, tensors[name]))
            return name, result.as_numpy("logits")[0]
        finally:
            client.close()

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(one, range(REQUESTS), timeout=TIMEOUT_S))
    assert time.monotonic() - started < TIMEOUT_S
    assert len(answers) == REQUESTS
    for name, logits in answers:
        assert same_predictions(top5(logits), expected[name]), (name, top5(logits), expected[name])

    client = httpclient.InferenceServerClient(server["http"])
    try:
        stats = client.get_inference_statistics("refiner")["model_stats"][0]
    finally:
        client.close()
    sizes = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}
    assert sum(size * count for size, count in sizes.items()) == int(stats["inference_count"])
    assert max(sizes) > 1, f"no execution batched more than one request: {sizes}"


def test_bad_requests_get_errors_and_the_server_keeps_serving(server, sample_photos, expected):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    good = np.zeros((1, 3, 64, 64), np.float32)
    http = httpclient.InferenceServerClient(server["http"])
    grpc = grpcclient.InferenceServerClient(server["grpc"])
    try:
        bad = [
            ("wrong shape", lambda c, m: c.infer("refiner", tensor_request(m, np.zeros((1, 3, 65, 64), np.float32)))),
            ("wrong dtype", lambda c, m: c.infer("refiner", tensor_request(m, good, np.float64))),
            ("wrong input name", lambda c, m: c.infer("refiner", tensor_request(m, good, name="pixels"))),
            ("garbage image bytes", lambda c, m: c.infer("refiner_image", image_request(m, b"\x89PNG garbage"))),
            ("empty image", lambda c, m: c.infer("refiner_image", image_request(m, b""))),
            ("unknown model", lambda c, m: c.infer("nope", tensor_request(m, good))),
        ]
        for what, call in bad:
            for client, module in ((http, httpclient), (grpc, grpcclient)):
                with pytest.raises(InferenceServerException) as e:
                    call(client, module)
                assert str(e.value), what
        # the decoding error names the problem, not a traceback's last line only
        with pytest.raises(InferenceServerException, match="not an image"):
            http.infer("refiner_image", image_request(httpclient, b"garbage"))
        # and the server still answers, correctly
        photo = sample_photos[0]
        result = grpc.infer("refiner_image", image_request(grpcclient, photo.read_bytes()))
        assert same_predictions(top5(result.as_numpy("logits")[0]), expected[photo.name])
        assert http.is_server_live() and http.is_model_ready("refiner")
    finally:
        http.close()
        grpc.close()


def batch_counts(url: str, model: str) -> dict[int, int]:
    """{batch size: executions} from the server's statistics for `model`, once they have settled (Triton counts an
    execution just after its answer is sent, so a read right after the last answer may miss it)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    try:
        last, deadline = None, time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = client.get_inference_statistics(model)["model_stats"][0]
            counts = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}
            if counts == last:
                return counts
            last = counts
            time.sleep(0.3)
        return last
    finally:
        client.close()


def test_encoded_images_reach_the_model_as_the_tensors_infer_makes(server, tiny_plain, sample_photos):
    """An encoded file sent to refiner_image, and the tensor refiner-edge's own preprocessing makes of it sent to
    refiner, each alone (batch 1): the same runner gives the same logits bit for bit, so it was given the same
    tensor (the decoding and transform are images/transform.py in both)."""
    import tritonclient.http as httpclient

    pre = Preprocess.from_record(read_manifest(tiny_plain).preprocess)
    client = httpclient.InferenceServerClient(server["http"])
    try:
        for photo in sample_photos:
            from_bytes = client.infer("refiner_image", image_request(httpclient, photo.read_bytes())).as_numpy("logits")
            local = client.infer("refiner", tensor_request(httpclient, pre.load(photo)[None])).as_numpy("logits")
            assert from_bytes.shape == local.shape == (1, 1000)
            np.testing.assert_array_equal(from_bytes, local)
    finally:
        client.close()


def test_concurrent_encoded_requests_are_batched_by_the_tensor_model(server, sample_photos):
    """16 clients sending only encoded files: each is decoded on its own, then joins the tensor model's dynamic
    batches, whose statistics show executions of more than one request."""
    import tritonclient.http as httpclient

    before = batch_counts(server["http"], "refiner")
    encoded = [p.read_bytes() for p in sample_photos]

    def one(i: int) -> np.ndarray:
        client = httpclient.InferenceServerClient(server["http"], network_timeout=TIMEOUT_S)
        try:
            return client.infer("refiner_image", image_request(httpclient, encoded[i % len(encoded)])) \
                .as_numpy("logits")
        finally:
            client.close()

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(REQUESTS), timeout=TIMEOUT_S))
    assert time.monotonic() - started < TIMEOUT_S
    assert len(answers) == REQUESTS and all(a.shape == (1, 1000) for a in answers)
    after = batch_counts(server["http"], "refiner")
    ran = {size: after[size] - before.get(size, 0) for size in after if after[size] > before.get(size, 0)}
    print(f"{REQUESTS} encoded requests from 16 clients in {time.monotonic() - started:.2f} s; executions of the "
          f"tensor model per batch size: {dict(sorted(ran.items()))}")
    assert sum(size * count for size, count in ran.items()) == REQUESTS, ran   # each request ran there once
    assert max(ran) > 1, f"no execution of encoded requests batched more than one: {ran}"


@pytest.mark.parametrize("protocol,concurrency", [("http", 1), ("grpc", 8)])
def test_bench_triton_reports_percentiles_throughput_and_server_batches(server, protocol, concurrency):
    url = f"{protocol}://{server[protocol]}/refiner"
    result = invoke("bench", "--triton", url, "--concurrency", concurrency, "--iterations", 24, "--warmup", 2,
                    "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    lat = report["latency_ms"]
    assert report["concurrency"] == concurrency and report["iterations"] == 24 and report["model"] == "refiner"
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["throughput_ips"] > 0
    executed = {int(k): v for k, v in report["server_batches"].items()}
    assert sum(k * v for k, v in executed.items()) == 24 + 2   # every request, warmup included, ran once
    if concurrency > 1:
        assert max(executed) > 1, executed


def test_bench_triton_refusals(server):
    assert_clean_failure(invoke("bench", "--triton", "ftp://x:1"), "--triton wants")
    assert_clean_failure(invoke("bench", "--triton", f"{server['http']}/nope", "--iterations", 1),
                         "cannot query model 'nope'")
    assert_clean_failure(invoke("bench", "--triton", server["http"], "--onnx", "x.onnx"), "drop --engine/--onnx")
    assert_clean_failure(invoke("bench", "--concurrency", 2), "--concurrency applies to --triton")


def test_client_example_prints_the_top_k_of_infer(server, sample_photos, expected):
    """examples/triton_client.py sends the encoded files; its top-k are refiner-edge infer's."""
    for protocol in ("grpc", "http"):
        result = subprocess.run([sys.executable, str(ROOT / "examples" / "triton_client.py"), *map(str, sample_photos),
                                 "--url", server[protocol], "--protocol", protocol, "--model", "refiner_image",
                                 "--topk", "3"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        printed: dict[str, list[int]] = {}
        current = ""
        for line in result.stdout.splitlines():
            if line.startswith("  "):
                printed[current].append(int(line.split()[1]))
            else:
                current = Path(line).name
                printed[current] = []
        assert printed == {p.name: [q["index"] for q in expected[p.name][:3]] for p in sample_photos}, result.stdout
    garbage = ROOT / "pyproject.toml"   # not an image: an error line, exit 1, the other images still answered
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "triton_client.py"), str(garbage),
                             str(sample_photos[0]), "--url", server["grpc"], "--model", "refiner_image"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "error: " in result.stderr and str(sample_photos[0]) in result.stdout


def test_zz_ctrl_c_stops_the_server_cleanly(server):
    """Runs last in the module (name order): SIGINT, one `error: interrupted` line, exit 130, both ports free."""
    proc = server["proc"]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == "error: interrupted", err[-2000:]
    assert "Traceback" not in err
    ready = json.loads(server["ready_line"])
    assert out == "", out   # stdout holds the ready line only
    assert ready["http"] == server["http"] and set(ready["models"]) == {"refiner", "refiner_image"}
    deadline = time.monotonic() + 20
    while not all(port_is_free(p) for p in server["ports"]) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert all(port_is_free(p) for p in server["ports"])


def test_serve_setup_finds_its_environment_again(serve_python):
    """Made once (by the fixture, or here), then found again: --setup prints its interpreter and makes nothing."""
    result = invoke("serve", "--setup")
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()) == Path(serve_python) and "making" not in result.stderr
    probe = subprocess.run([result.stdout.strip(), "-c", "import numpy, pytriton; print(numpy.__version__)"],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert probe.returncode == 0 and probe.stdout.split(".")[0] == "1", probe.stderr[-2000:]


def test_serve_environment_that_cannot_be_made_is_one_line(tmp_path, monkeypatch):
    from refiner_edge.deploy.serve import serving_unavailable

    if serving_unavailable() is None:
        pytest.skip("this environment serves in-process (PyTriton with numpy<2): no environment of its own to make")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("REFINER_EDGE_SERVE_ENV", str(blocker / "serve-env"))
    result = invoke("serve", "--setup")
    assert result.exit_code == 3
    assert_clean_failure(result, "could not make serve's environment", "REFINER_EDGE_SERVE_ENV")


def test_serve_refusals_are_one_line(tmp_path, tiny_plain):
    assert_clean_failure(invoke("serve"), "give one of --engine and --onnx")
    assert_clean_failure(invoke("serve", "--onnx", tmp_path / "missing.onnx"), "not found")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert_clean_failure(invoke("serve", "--onnx", tiny_plain, "--http-port", busy, "--grpc-port",
                                    free_port()), "--http-port")
    assert_clean_failure(invoke("serve", "--onnx", tiny_plain, "--max-batch", "4", "--preferred-batch", "6",
                                "--http-port", free_port(), "--grpc-port", free_port()), "--preferred-batch")


def test_json_stdout_stays_json_after_ctrl_c_and_a_restart_takes_the_same_ports_at_once(tiny_plain, serve_python):
    """stdout holds the ready line only (tritonserver's "Signal (2) received." went there on Ctrl-C), and a server
    started again straight after the stop listens on the same ports (the port check refused TIME-WAIT for ~60 s)."""
    http, grpc = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(ROOT / "cli.py"), "serve", "--onnx", str(tiny_plain), "--http-port", str(http),
               "--grpc-port", str(grpc), "--json"]
    for attempt in range(2):
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                preexec_fn=default_sigint)
        try:
            line = proc.stdout.readline()
            assert line.startswith("{"), (attempt, line, proc.stderr.read()[-3000:] if not line else "")
            ready = json.loads(line)
            assert ready and ready["http"] == f"127.0.0.1:{http}", (attempt, proc.stderr.read() if ready is None
                                                                    else ready)
            proc.send_signal(signal.SIGINT)
            rest, err = proc.communicate(timeout=90)
        finally:
            stop(proc)
        assert proc.returncode == 130 and rest == "", (attempt, rest, err[-2000:])
        assert err.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in err, err[-2000:]
