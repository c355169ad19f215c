"""serve's start: a model load that loses PyTriton's start-up race is tried again (deploy/serve.start_triton).

The race itself (a model's later instances fetching their configuration from the first one's socket within a fixed
second) cannot be provoked on demand, so the failure is injected: the first load raises the exception tritonserver's
client raises for a failed load; the second load is a real one, and a real request must then get the runner's answer.
"""
from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from refiner_edge.deploy.serve import LOAD_ATTEMPTS

from .helpers import free_port

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys
    from pytriton.triton import Triton, TritonConfig
    from tritonclient.utils import InferenceServerException
    from refiner_edge.deploy import serve
    from refiner_edge.runners.runtime import open_runner

    onnx, http, grpc, fail_times, message = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    runs = []

    class FlakyTriton(Triton):
        def run(self):
            runs.append(1)
            if len(runs) <= fail_times:   # the injected failure, before any server starts
                raise InferenceServerException(message)
            return super().run()

    serve.stub_environment()
    runner = open_runner(onnx, None, required=True)
    options = serve.ServeOptions(name="flaky", host="127.0.0.1", http_port=http, grpc_port=grpc, max_batch=2)
    config = TritonConfig(http_address="127.0.0.1", http_port=http, grpc_address="127.0.0.1", grpc_port=grpc,
                          allow_metrics=False)
    try:
        triton = serve.start_triton(FlakyTriton, config, None, runner, options)
    except serve.RefinerEdgeError as e:
        print(f"refused after {len(runs)}: {e}")
        sys.exit(2)
    try:
        serve.self_check(runner, options)   # a real request through the server, compared with the runner's answer
        print(f"served after {len(runs)} loads")
    finally:
        triton.stop()
""")


def run_flaky(serve_python: Path, graph: Path, fail_times: int, message: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([str(serve_python), "-c", SCRIPT, str(graph), str(free_port()), str(free_port()),
                           str(fail_times), message], capture_output=True, text=True, env=env, timeout=300)


# What tritonserver's client raised when a Python model's initialize failed in CI (the stub's traceback follows).
TRACEBACK_LOAD = ("[400] load failed for model 'flaky_image': version 1 is at UNAVAILABLE state: Internal: "
                  "TritonModelException: Model initialize error: Traceback (most recent call last):\n"
                  '  File "/x/model.py", line 71, in initialize\n    config = get_config_from_handshake_server()\n'
                  "TimeoutError: no handshake within 1.0 s\n")


def test_a_server_error_is_one_line_without_the_stubs_traceback():
    from refiner_edge.deploy.serve import server_error

    assert server_error(Exception(TRACEBACK_LOAD)) == (
        "[400] load failed for model 'flaky_image': version 1 is at UNAVAILABLE state: Internal: TritonModelException: "
        "Model initialize error: TimeoutError: no handshake within 1.0 s")
    assert server_error(Exception("[400] unexpected datatype\nmore")) == "[400] unexpected datatype"
    assert server_error(Exception("")) == "Exception"


@pytest.mark.serve
@pytest.mark.slow
def test_a_failed_model_load_is_tried_again_and_then_serves(tiny_plain, serve_python):
    result = run_flaky(serve_python, tiny_plain, 1, TRACEBACK_LOAD)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    retries = [line for line in result.stderr.splitlines() if "could not load the models (attempt" in line]
    assert retries and f"attempt 1 of {LOAD_ATTEMPTS}" in retries[0] and "TimeoutError: no handshake" in retries[0], \
        retries
    # the injected failure, then a real load; on a loaded machine that real load may itself lose PyTriton's
    # start-up race (serve's reason to retry), which is then logged as a retry of its own and costs one more load
    assert all("Model initialize error" in line for line in retries[1:]), retries
    assert f"served after {len(retries) + 1} loads" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


@pytest.mark.serve
def test_other_failures_and_the_last_attempt_are_not_retried(tiny_plain, serve_python):
    result = run_flaky(serve_python, tiny_plain, 1, "[400] unexpected datatype")
    assert result.returncode == 2 and "refused after 1: tritonserver could not load the models: [400] unexpected" \
        in result.stdout, result.stdout + result.stderr[-3000:]
    result = run_flaky(serve_python, tiny_plain, LOAD_ATTEMPTS + 2, "[400] load failed for model 'flaky'")
    assert result.returncode == 2 and f"refused after {LOAD_ATTEMPTS}:" in result.stdout, \
        result.stdout + result.stderr[-3000:]
