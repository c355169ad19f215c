"""`refiner-edge bench --triton URL`: latency percentiles and throughput of a model behind a Triton Inference Server
at a given concurrency, measured as perf_analyzer measures them: `concurrency` clients each keep one request in
flight (send, wait for the answer, send the next), every request timed from send to answer on the client, and
throughput = images answered / wall time of the timed window. The server's own statistics, read before and after,
say which batch sizes it executed (dynamic batching at work).

URL: `[http://|grpc://]HOST:PORT[/MODEL]` (http when no scheme; MODEL defaults to `refiner`, the name
`refiner-edge serve` and `deploy triton` use).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from .. import defaults
from ..defaults import default
from ..errors import InputError, MissingDependencyError
from ..extras import install_hint
from .bench import percentile

DEFAULT_MODEL = "refiner"
DATATYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
             "UINT8": np.uint8}


@dataclass(frozen=True)
class Endpoint:
    protocol: str   # http or grpc
    address: str    # host:port
    model: str

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        text = url if "://" in url else f"http://{url}"
        try:
            parts = urlsplit(text)
            port = parts.port   # ValueError for a port that is not a number, or not in 0..65535
        except ValueError:
            port = -1
        if port is not None and not 1 <= port <= 65535:
            raise InputError(f"--triton: the port must be a number from 1 to 65535, got {url!r}")
        if parts.scheme not in ("http", "grpc") or not parts.hostname or port is None:
            raise InputError(f"--triton wants [http://|grpc://]HOST:PORT[/MODEL], got {url!r}")
        model = parts.path.strip("/") or DEFAULT_MODEL
        if "/" in model:
            raise InputError(f"--triton: one model name after HOST:PORT, got {model!r}")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname   # an IPv6 address
        return cls(parts.scheme, f"{host}:{port}", model)

    def client(self):
        try:
            module = __import__(f"tritonclient.{self.protocol}", fromlist=["InferenceServerClient"])
        except ImportError as e:
            raise MissingDependencyError(f"bench --triton needs tritonclient ({e.name} is missing): "
                                         f"{install_hint('tritonclient')}") from None
        return module, module.InferenceServerClient(self.address)


@dataclass(frozen=True)
class Request:
    """The one request every client sends: random data of the model's input shape and type."""

    input: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    output: str


def _as_dict(endpoint: Endpoint, message) -> dict:
    """gRPC answers are protobuf messages; HTTP answers are already dicts."""
    if endpoint.protocol != "grpc":
        return message
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def _batch_counts(client, endpoint: Endpoint) -> dict[int, int]:
    model = (_as_dict(endpoint, client.get_inference_statistics(endpoint.model)).get("model_stats") or [{}])[0]
    return {int(b["batch_size"]): int(b.get("compute_infer", {}).get("count", 0)) for b in model.get("batch_stats",
                                                                                                      [])}


def model_request(client, endpoint: Endpoint, batch: int, seed: int) -> Request:
    """Ask the server for the model's input and output, and make a request of `batch` random inputs for it."""
    try:
        meta = _as_dict(endpoint, client.get_model_metadata(endpoint.model))
        config = _as_dict(endpoint, client.get_model_config(endpoint.model))
    except Exception as e:   # connection refused, unknown model: the client's own message says which
        raise InputError(f"{endpoint.address}: cannot query model '{endpoint.model}' "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if endpoint.protocol == "grpc":
        config = config.get("config", {})
    max_batch = int(config.get("max_batch_size", 0))
    if max_batch and batch > max_batch:
        raise InputError(f"--batch {batch} is over the model's max_batch_size {max_batch}")
    (inp,), out_name = meta["inputs"], meta["outputs"][0]["name"]
    dims = [int(d) for d in inp["shape"]]
    if inp["datatype"] not in DATATYPES or any(d < 0 for d in dims[1 if max_batch else 0:]):
        raise InputError(f"model '{endpoint.model}': input {inp['name']} {inp['datatype']} {dims} is not a "
                         "fixed-shape tensor this benchmark can fill")
    shape = [batch, *dims[1:]] if max_batch else dims
    x = np.random.default_rng(seed).standard_normal(shape).astype(DATATYPES[inp["datatype"]])
    return Request(inp["name"], inp["datatype"], shape, x, out_name)


def run_clients(endpoint: Endpoint, module, request: Request, concurrency: int, warmup: int, iterations: int,
                timeout_s: float, on_iteration) -> tuple[list[float], float]:
    """`concurrency` clients, each with one request in flight, until `warmup` then `iterations` requests are
    answered; returns the timed requests' latencies (s) and the wall time of the timed window."""
    remaining = {"warmup": warmup, "timed": iterations}
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    window = {}

    def take() -> str | None:
        with lock:
            if remaining["warmup"]:
                remaining["warmup"] -= 1
                return "warmup"
            if remaining["timed"]:
                remaining["timed"] -= 1
                window.setdefault("start", time.perf_counter())
                return "timed"
            return None

    def worker():
        _, client = endpoint.client()
        tensor = module.InferInput(request.input, request.shape, request.datatype)
        tensor.set_data_from_numpy(request.data)
        outputs = [module.InferRequestedOutput(request.output)]
        kwargs = {"client_timeout": timeout_s} if endpoint.protocol == "grpc" else {}
        try:
            while (kind := take()) is not None:
                t = time.perf_counter()
                try:
                    client.infer(endpoint.model, [tensor], outputs=outputs, **kwargs)
                except Exception as e:
                    with lock:
                        errors.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
                    return
                done = time.perf_counter()
                if kind == "timed":
                    with lock:
                        latencies.append(done - t)
                        window["end"] = done
                    on_iteration(1)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s + 5 * (warmup + iterations)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        raise InputError(f"{endpoint.address}: requests still unanswered after the time limit")
    if errors:
        raise InputError(f"{endpoint.address}: a request failed: {errors[0]}")
    return latencies, window["end"] - window["start"]


def bench_triton(url: str, concurrency: int | None = None, batch: int | None = None, iterations: int | None = None,
                 warmup: int | None = None, seed: int = 0, timeout_s: float = 60.0,
                 on_iteration=lambda n: None) -> dict:
    """Time `iterations` requests of `batch` random inputs, `concurrency` in flight at once, after `warmup` (None:
    defaults.BENCH_*)."""
    concurrency = default(concurrency, defaults.BENCH_CONCURRENCY)
    batch = default(batch, defaults.BENCH_BATCH)
    iterations = default(iterations, defaults.BENCH_ITERATIONS)
    warmup = default(warmup, defaults.BENCH_WARMUP)
    if concurrency < 1 or batch < 1 or iterations < 1 or warmup < 0:
        raise InputError(f"--concurrency, --batch and --iterations must be >= 1 and --warmup >= 0 (got "
                         f"{concurrency}, {batch}, {iterations}, {warmup})")
    endpoint = Endpoint.parse(url)
    module, probe = endpoint.client()
    try:
        request = model_request(probe, endpoint, batch, seed)
        before = _batch_counts(probe, endpoint)
    finally:
        probe.close()
    latencies, wall = run_clients(endpoint, module, request, concurrency, warmup, iterations, timeout_s,
                                  on_iteration)
    _, probe = endpoint.client()
    try:
        after = _batch_counts(probe, endpoint)
    finally:
        probe.close()
    executed = {size: n - before.get(size, 0) for size, n in sorted(after.items()) if n - before.get(size, 0)}
    ms = np.array(latencies) * 1e3
    return {
        "backend": "triton", "url": f"{endpoint.protocol}://{endpoint.address}", "model": endpoint.model,
        "batch": batch, "concurrency": concurrency, "iterations": iterations, "warmup": warmup,
        "latency_ms": {"mean": float(ms.mean()), "min": float(ms.min()), "p50": percentile(ms, 50),
                       "p90": percentile(ms, 90), "p95": percentile(ms, 95), "p99": percentile(ms, 99),
                       "max": float(ms.max())},
        "throughput_ips": float(batch * len(latencies) / wall) if wall > 0 else float("nan"),
        # executions per batch size the server ran during the run (warmup included): dynamic batching at work
        "server_batches": {str(k): v for k, v in executed.items()},
    }
