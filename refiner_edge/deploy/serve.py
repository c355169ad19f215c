"""`refiner-edge serve`: a real Triton Inference Server (the `tritonserver` binary PyTriton ships) in front of the
ONNX Runtime or TensorRT runner, HTTP and gRPC, dynamic batching on.

Two models are served:
- NAME: the preprocessed tensor (the graph's input name, FP32 [B, 3, S, S]) -> logits [B, classes]; Triton batches
  concurrent requests into one runner call (dynamic batching, up to max_batch, waiting at most queue_delay_us).
- NAME_image: encoded image files (BYTES [B, 1]: JPEG, PNG, ...) -> logits, decoded and preprocessed by the code
  `refiner-edge infer` runs (images/transform.py), per request, so an undecodable image fails its own request only
  (PyTriton reports an error for every request of a call at once); the tensor then goes to NAME through the server
  and is batched there with the other requests (ImageModel).

Triton checks names, shapes and data types against the model configuration before the runner sees a request: a
malformed request gets an error response and the server keeps serving. Before the server is announced, one request
through it must give the runner's own answer (`self_check`).

Two facts of PyTriton 0.7.0's Python-backend stub (the process that bridges tritonserver and this one), checked here:
- it links libpython3.11 by name; under a Python that is not the system's (pyenv's), the system library is found
  first and the stub fails with "'_thread.RLock' object has no attribute '_recursion_count'". `stub_environment`
  puts the running interpreter's LIBDIR first on LD_LIBRARY_PATH, which tritonserver and the stub inherit.
- it is built against NumPy 1.x (pybind11 reading NumPy 1's dtype layout): with NumPy 2 every input tensor arrives
  as its first element repeated and every output comes back empty ("output tensor shape does not match size of
  output"). PyTriton declares numpy<2; `check_serving` refuses NumPy 2 in one line instead of serving wrong answers,
  and `refiner-edge serve` runs in an environment of its own with numpy<2 (serve_env.py) when this one lacks it.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import defaults
from ..defaults import default
from ..errors import InputError, MissingDependencyError, RefinerEdgeError
from ..runners.base import Runner

# Encoded-image instances: each is a Python-backend stub process of its own, about 50 MB resident (measured: 10 stubs,
# 502 MB), and they add ~5 s to a start on a 2-core machine (11 s -> 16 s for 8)
MAX_IMAGE_INSTANCES = 8
IMAGE_INPUT = "image"
# tritonserver starts (start_triton): the instances' handshake can lose a start-up race; on 2 cores with 9 stubs
# starting, a start in the test suite gave up after 3
LOAD_ATTEMPTS = 5
NUMPY2_REASON = ("PyTriton 0.7.0's Python-backend stub is built for NumPy 1.x: under NumPy {version} it receives "
                 "every tensor as its first element repeated and returns empty outputs; serve from serve's own "
                 "environment (refiner-edge serve --setup)")


def serving_unavailable() -> str | None:
    """Why serving cannot run in this environment (None: it can). Tests print this as their skip reason."""
    try:
        import pytriton.triton  # noqa: F401
        import tritonclient.grpc
        import tritonclient.http  # noqa: F401
    except ImportError as e:
        return f"serving needs PyTriton and tritonclient ({e.name} is missing): refiner-edge serve --setup makes " \
            "an environment with them"
    if int(np.__version__.split(".")[0]) >= 2:
        return NUMPY2_REASON.format(version=np.__version__)
    return None


def check_serving() -> None:
    reason = serving_unavailable()
    if reason:
        raise MissingDependencyError(reason)


def stub_environment(env: dict | None = None) -> dict:
    """Put this interpreter's shared-library folder first on LD_LIBRARY_PATH (in `env`, default os.environ), so the
    Python-backend stub loads the libpython3.11 this interpreter is, not another 3.11 build found first."""
    env = os.environ if env is None else env
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and Path(libdir).is_dir():
        parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *parts])
    return env


def check_port(host: str, port: int, option: str) -> None:
    if not 1 <= port <= 65535:
        raise InputError(f"{option} must be between 1 and 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as servers bind (tritonserver's HTTP and gRPC do): a port whose only sockets are in TIME-WAIT, as after a
        # stop, is free to listen on; one some process listens on is still refused
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise InputError(f"cannot listen on {host}:{port} ({e.strerror}): pick another {option}") from None


def decode_image(data: bytes, preprocess) -> np.ndarray:
    """Encoded image bytes -> the preprocessed [3, S, S] array: `Preprocess.load`'s code, on bytes instead of a file."""
    from ..images.preprocess import decode_bytes

    return preprocess(decode_bytes(data))


@dataclass
class ServeOptions:
    """What `serve` serves and how; None for an option: its default (defaults.py)."""

    name: str | None = None
    host: str | None = None
    http_port: int | None = None
    grpc_port: int | None = None
    max_batch: int | None = None
    queue_delay_us: int | None = None
    preferred_batch: tuple[int, ...] = ()
    # how long tritonserver waits on shutdown for in-flight requests and for its models to unload. Unloading is what
    # removes the copy of each model Triton made in the temporary folder (folderXXXXXX), and the encoded-image
    # model's instances unload one after another (~15 s for 8 on a 2-core machine): a shorter limit ended the server
    # "with failure", its Python stubs reporting "Non-graceful termination", and left the copies behind. PyTriton
    # kills the server 30 s after its stop, so this stays below that.
    exit_timeout_s: int = 25

    def __post_init__(self):
        self.name = default(self.name, defaults.SERVE_NAME)
        self.host = default(self.host, defaults.SERVE_HOST)
        self.http_port = default(self.http_port, defaults.SERVE_HTTP_PORT)
        self.grpc_port = default(self.grpc_port, defaults.SERVE_GRPC_PORT)
        self.max_batch = default(self.max_batch, defaults.SERVE_MAX_BATCH)
        self.queue_delay_us = default(self.queue_delay_us, defaults.SERVE_QUEUE_DELAY_US)
        self.preferred_batch = tuple(self.preferred_batch or ())

    @property
    def image_name(self) -> str:
        return f"{self.name}_image"

    @property
    def image_instances(self) -> int:
        """How many encoded-image requests are decoded, and wait in the tensor model's queue, at once: a full batch,
        at most MAX_IMAGE_INSTANCES (each instance is a Python-backend process of its own)."""
        return min(self.max_batch, MAX_IMAGE_INSTANCES)


def io_names(runner: Runner) -> tuple[str, str]:
    """The graph's input and output tensor names (from the manifest; `input`/`logits` without one)."""
    m = runner.manifest
    return (m.graph.input, m.graph.output) if m is not None else ("input", "logits")


def max_engine_batch(manifest) -> int | None:
    engine = getattr(manifest, "engine", None)
    return max(p.max[0] for p in engine.profiles) if engine is not None and engine.profiles else None


def check_options(manifest, options: ServeOptions) -> None:
    """Refuse options that cannot serve the model of `manifest` (None: no manifest), before a server starts."""
    from .triton import INT32_MAX, QUEUE_DELAY_MAX_US, check_model_name, check_range

    check_model_name(options.name)   # PyTriton's own rule, refused here in one line before it starts
    check_range(options.max_batch, 1, INT32_MAX, "--max-batch")
    check_range(options.queue_delay_us, 0, QUEUE_DELAY_MAX_US, "--queue-delay-us")
    bad = [b for b in options.preferred_batch if not 1 <= b <= options.max_batch]
    if bad:
        raise InputError(f"--preferred-batch sizes must be between 1 and --max-batch {options.max_batch}, got {bad}")
    top = max_engine_batch(manifest)
    if top is not None and options.max_batch > top:
        raise InputError(f"--max-batch {options.max_batch} is over the engine's profile maximum ({top}): use "
                         f"--max-batch {top} or rebuild with a larger --batch")
    if options.http_port == options.grpc_port:
        raise InputError("--http-port and --grpc-port must differ")
    check_port(options.host, options.http_port, "--http-port")
    check_port(options.host, options.grpc_port, "--grpc-port")


def bind_models(triton, runner: Runner, options: ServeOptions) -> None:
    """Bind the tensor model (dynamically batched) and the encoded-image model to `triton`."""
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    in_name, out_name = io_names(runner)
    size = runner.preprocess.img_size
    lock = threading.Lock()   # one runner call at a time: a TensorRT execution context is not thread-safe

    @batch
    def infer_tensor(**inputs):
        with lock:
            return {out_name: runner.logits(np.ascontiguousarray(inputs[in_name], dtype=np.float32),
                                            batch_size=options.max_batch)}

    output = [Tensor(name=out_name, dtype=np.float32, shape=(runner.num_classes,))]
    batcher = DynamicBatcher(max_queue_delay_microseconds=options.queue_delay_us,
                             preferred_batch_size=list(options.preferred_batch) or None)
    triton.bind(model_name=options.name, infer_func=infer_tensor,
                inputs=[Tensor(name=in_name, dtype=np.float32, shape=(3, size, size))], outputs=output,
                config=ModelConfig(max_batch_size=options.max_batch, batcher=batcher), strict=True)
    triton.bind(model_name=options.image_name,
                infer_func=[ImageModel(runner, options) for _ in range(options.image_instances)],
                inputs=[Tensor(name=IMAGE_INPUT, dtype=np.bytes_, shape=(1,))], outputs=output,
                config=ModelConfig(max_batch_size=options.max_batch, batcher=None), strict=True)


class ImageModel:
    """One instance of the encoded-image model. It decodes each request's images itself, so an undecodable image
    fails its own request only (PyTriton answers every request of a call with the call's error, so this model is
    not dynamically batched), then sends the tensor to the tensor model through the server, where Triton's dynamic
    batcher joins it with the other requests, as the ensemble `deploy triton` writes does. A Python-backend instance
    takes one call at a time: `image_instances` of them decode and wait for a batch concurrently."""

    def __init__(self, runner: Runner, options: ServeOptions):
        self.preprocess = runner.preprocess
        self.input, self.output = io_names(runner)
        self.model = options.name
        self.url = f"{local_host(options.host)}:{options.http_port}"

    def __call__(self, requests):
        import tritonclient.http as httpclient

        out = []
        for request in requests:
            encoded = np.asarray(request[IMAGE_INPUT]).reshape(-1)
            x = np.stack([decode_image(bytes(b), self.preprocess) for b in encoded])
            tensor = httpclient.InferInput(self.input, list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            # a connection per request, closed by this side: a kept-alive one would be closed by the server as it
            # stops, leaving its port in TIME_WAIT (not bindable for a minute) after Ctrl-C
            client = httpclient.InferenceServerClient(self.url)
            try:
                out.append({self.output: client.infer(self.model, [tensor]).as_numpy(self.output)})
            finally:
                client.close()
        return out


def local_host(host: str) -> str:
    """The address this machine reaches a server listening on `host` at."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def serve(runner: Runner, options: ServeOptions, on_ready: Callable[[dict], None] | None = None,
          stop: threading.Event | None = None) -> None:
    """Serve `runner` until interrupted (Ctrl-C, SIGTERM) or `stop` is set; the server is always stopped."""
    check_serving()
    check_options(runner.manifest, options)
    stub_environment()
    from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

    # tritonserver's own log goes to a file (PyTriton would print it on stdout, where --json puts the endpoints)
    log_file = Path(tempfile.mkdtemp(prefix="refiner-edge-serve-")) / "tritonserver.log"
    config = TritonConfig(http_address=options.host, http_port=options.http_port, grpc_address=options.host,
                          grpc_port=options.grpc_port, allow_metrics=False, exit_timeout_secs=options.exit_timeout_s,
                          log_file=log_file)
    # PyTriton guards the statistics endpoint with a token by default; it is read-only and is how a client sees the
    # batches Triton formed, so it stays open. Loading/unloading models (model-repository) stays guarded.
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    # PyTriton's shared-memory blocks are released when it stops; the resource tracker's "leaked" warning at exit
    # would be the last line after Ctrl-C
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:multiprocessing.resource_tracker")
    stop = stop or threading.Event()
    main = threading.current_thread() is threading.main_thread()
    previous = (signal.signal(signal.SIGTERM, _interrupt), signal.getsignal(signal.SIGINT)) if main else None
    if not logging.getLogger("refiner_edge").isEnabledFor(logging.DEBUG):
        logging.getLogger("pytriton.proxy.inference").addFilter(RejectedRequests())
    failed = False
    triton = None
    try:
        triton = start_triton(Triton, config, security, runner, options)
        self_check(runner, options)
        if on_ready:
            on_ready(endpoints(runner, options))
        while not stop.is_set():
            if not triton.is_alive():
                failed = True
                raise RefinerEdgeError(f"tritonserver exited unexpectedly: {last_line(log_file)} (log: {log_file})")
            stop.wait(0.5)
    finally:
        if main:
            signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C must not interrupt the shutdown
        if triton is not None:
            triton.stop()
        if not failed:
            shutil.rmtree(log_file.parent, ignore_errors=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])


def start_triton(triton_class, config, security, runner: Runner, options: ServeOptions):
    """Start tritonserver with both models loaded; returns the running PyTriton Triton.

    A model's instances after its first fetch their configuration from the first one's handshake socket within a
    fixed second (PyTriton 0.7.0, proxy/communication.py get_config_from_handshake_server), and Triton starts the
    instances in parallel: on a loaded machine the first instance is not listening yet, and the load fails with
    "Model initialize error" (seen on 2 cores with 9 stubs starting). The load is a start-up race, not a fault of
    the model, so it is tried again, at most LOAD_ATTEMPTS times in all; anything else fails at once."""
    from tritonclient.utils import InferenceServerException

    for attempt in range(1, LOAD_ATTEMPTS + 1):
        triton = triton_class(config=config, security_config=security)
        try:
            bind_models(triton, runner, options)
            triton.run()
            return triton
        except InferenceServerException as e:
            triton.stop()
            if attempt == LOAD_ATTEMPTS or "load failed" not in str(e):
                raise RefinerEdgeError(f"tritonserver could not load the models: {server_error(e)}") from e
            logging.getLogger("refiner_edge").warning("tritonserver could not load the models (attempt %d of %d), "
                                                      "starting it again: %s", attempt, LOAD_ATTEMPTS, server_error(e))
        except BaseException:
            triton.stop()
            raise


def server_error(error: BaseException) -> str:
    """tritonserver's error in one line. A Python model's failed initialize comes back as "...: Model initialize
    error: Traceback (most recent call last):" and the stub's traceback: the first line keeps where it failed, the
    traceback's last line (the exception itself) replaces the traceback, which a user is never shown."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    head, marker, _ = lines[0].partition("Traceback (most recent call last):")
    if not marker:
        return lines[0]
    cause = lines[-1] if len(lines) > 1 else "no exception given"
    return f"{head.rstrip().rstrip(':')}: {cause}"


def reserve_stdout() -> Callable[[str], None]:
    """For the command line's ready line: stdout is kept for that one line, the command's result. From this call on,
    whatever this process and the server it starts print (tritonserver's "Signal (2) received." on Ctrl-C, or on
    a start that fails before the server is ready) goes to stderr, so stdout holds the ready line or nothing, however
    soon the Ctrl-C comes. Returns the function that prints the line (once)."""
    sys.stdout.flush()
    result = os.dup(1)
    os.dup2(2, 1)

    def print_line(text: str) -> None:
        with os.fdopen(result, "w") as out:
            out.write(text + "\n")

    return print_line


class RejectedRequests(logging.Filter):
    """PyTriton logs every exception of an inference call with its traceback; a request this package refused
    (an InputError: an undecodable image) becomes one line instead, unless --verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith("Exception while performing inference") and "refiner_edge.errors." in text:
            reason = [line for line in text.splitlines() if "refiner_edge.errors." in line][-1]
            record.msg, record.args = f"rejected a request: {reason.split(': ', 1)[-1]}", ()
        return True


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def self_check(runner: Runner, options: ServeOptions, seed: int = 0) -> None:
    """One request through the server (HTTP, to itself) must give what the runner gives directly: a broken bridge
    between tritonserver and this process (as PyTriton's stub under NumPy 2 was) is refused, not served."""
    import tritonclient.http as httpclient

    in_name, out_name = io_names(runner)
    size = runner.preprocess.img_size
    x = np.random.default_rng(seed).standard_normal((1, 3, size, size), dtype=np.float32)
    client = httpclient.InferenceServerClient(f"{local_host(options.host)}:{options.http_port}")
    broken = "the bridge between tritonserver and this process is broken"
    try:
        request = httpclient.InferInput(in_name, list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        served = client.infer(options.name, [request]).as_numpy(out_name)
    except Exception as e:   # an empty or malformed answer fails in the client's decoding
        raise RefinerEdgeError(f"the server's answer to a test request is unreadable ({e}): {broken}") from None
    finally:
        client.close()
    direct = runner.logits(x, batch_size=1)
    scale = float(np.abs(direct).max()) or 1.0
    if served is None or served.shape != direct.shape or float(np.abs(served - direct).max()) > 1e-4 * scale:
        raise RefinerEdgeError(f"the server's answer to a test request differs from the runner's: {broken}")


def endpoints(runner: Runner, options: ServeOptions) -> dict:
    in_name, out_name = io_names(runner)
    size = runner.preprocess.img_size
    return {
        "http": f"{options.host}:{options.http_port}", "grpc": f"{options.host}:{options.grpc_port}",
        "backend": runner.name, "model": runner.description,
        "models": {
            options.name: {"input": {in_name: ["B", 3, size, size], "datatype": "FP32"},
                           "output": {out_name: ["B", runner.num_classes]},
                           "dynamic_batching": {"max_batch": options.max_batch,
                                                "queue_delay_us": options.queue_delay_us,
                                                "preferred_batch": list(options.preferred_batch)}},
            options.image_name: {"input": {IMAGE_INPUT: ["B", 1], "datatype": "BYTES (encoded image file)"},
                                 "output": {out_name: ["B", runner.num_classes]},
                                 "instances": options.image_instances, "batched_by": options.name},
        },
    }


def wait_ready(url: str, models: list[str], timeout: float = 60.0, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll a server over HTTP until `models` are ready (used by clients and tests): RefinerEdgeError when the
    server exits first, TimeoutError when it is not ready in `timeout` seconds."""
    import tritonclient.http as httpclient

    deadline = time.monotonic() + timeout
    client = httpclient.InferenceServerClient(url, connection_timeout=2.0, network_timeout=2.0)
    try:
        while time.monotonic() < deadline:
            if not alive():
                raise RefinerEdgeError("the server exited before it was ready")
            try:
                if all(client.is_model_ready(m) for m in models):
                    return
            except Exception:   # connection refused while it starts
                pass
            time.sleep(0.25)
    finally:
        client.close()
    raise TimeoutError(f"{url}: {', '.join(models)} not ready after {timeout:.0f} s")
