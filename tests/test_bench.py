"""`refiner-edge bench` on PyTorch and ONNX Runtime: real timed runs, sensible figures, clean refusals."""
import json

import pytest

from refiner_edge.errors import InputError
from refiner_edge.runners.runtime import load_runner
from refiner_edge.runners.bench import PeakRss, bench, rss_bytes

from .helpers import assert_clean_failure, invoke

pytestmark = pytest.mark.torch_free


def check_figures(report: dict, backend: str, batch: int, iterations: int) -> None:
    lat = report["latency_ms"]
    assert report["backend"] == backend and report["batch"] == batch and report["iterations"] == iterations
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"]
    # images per second lie between what the slowest and the fastest call would give
    assert batch * 1e3 / lat["max"] <= report["throughput_ips"] <= batch * 1e3 / lat["min"]
    assert report["memory_mb"]["peak_rss"] > 50 and report["memory_mb"]["rss_growth"] >= 0


@pytest.fixture(scope="module")
def tiny_onnx_path(tmp_path_factory, tiny_model):
    from refiner_edge.onnx.export import export_onnx

    path = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    export_onnx(tiny_model, path)
    return path


@pytest.mark.parametrize("batch", [1, 8])
def test_bench_torch_and_onnxruntime(tiny_onnx_path, batch):
    for runner in (load_runner("torch", variant="refiner-vit-tiny"), load_runner("onnxruntime", onnx=tiny_onnx_path)):
        report = bench(runner, batch=batch, iterations=20, warmup=2)
        print(f"{runner.name} batch {batch}: p50 {report['latency_ms']['p50']:.2f} ms, "
              f"{report['throughput_ips']:.0f} images/s")
        check_figures(report, runner.name, batch, 20)


def test_cli_bench_json(tiny_onnx_path):
    result = invoke("bench", "--onnx", tiny_onnx_path, "--batch", "2", "--iterations", "10", "--warmup", "1",
                    "--json")
    assert result.exit_code == 0, result.output
    check_figures(json.loads(result.stdout), "onnxruntime", 2, 10)
    result = invoke("bench", "--variant", "refiner-vit-tiny", "--iterations", "5", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    check_figures(report, "torch", 1, 5)
    assert "PyTorch refiner-vit-tiny" in report["model"]
    text = invoke("bench", "--onnx", tiny_onnx_path, "--iterations", "3")
    assert text.exit_code == 0 and "p50" in text.stdout and "images/s" in text.stdout


def test_bench_refusals(tmp_path, tiny_onnx_path):
    assert_clean_failure(invoke("bench", "--onnx", tiny_onnx_path, "--engine", tmp_path / "m.engine"),
                         "one of --engine and --onnx")
    assert_clean_failure(invoke("bench", "--onnx", tiny_onnx_path, "--cuda-graph"), "--cuda-graph applies")
    assert_clean_failure(invoke("bench", "--onnx", tiny_onnx_path, "--checkpoint", tiny_onnx_path),
                         "--checkpoint")
    assert_clean_failure(invoke("bench", "--onnx", tiny_onnx_path, "--variant", "refiner-vit-s"),
                         "describe a graph without a manifest")
    assert_clean_failure(invoke("bench", "--engine", tmp_path / "missing.engine"), "engine not found")
    with pytest.raises(InputError, match="--batch and --iterations"):
        bench(load_runner("onnxruntime", onnx=tiny_onnx_path), iterations=0)


def test_bench_times_the_calls_it_makes():
    """A runner whose call takes a known 20 ms: bench reports that latency and the throughput it implies, times only
    the timed calls (warm-up excluded), and reads the device memory the runner states."""
    import time

    import numpy as np

    from refiner_edge.images.preprocess import Preprocess
    from refiner_edge.runners.base import Runner

    calls, closed = [], []

    def run(x):
        calls.append(len(x))
        time.sleep(0.020)
        return np.zeros((len(x), 10), np.float32)

    pre = Preprocess(img_size=32, crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    with Runner("sleep", run, pre, 10, True, "20 ms per call", device_memory=lambda: 123_000_000,
                close=lambda: closed.append(True)) as runner:
        report = bench(runner, batch=4, iterations=6, warmup=3)
    assert calls == [4] * 9 and closed == [True]
    lat = report["latency_ms"]
    assert 20 <= lat["min"] <= lat["p50"] < 40, lat
    assert 4 / 0.040 < report["throughput_ips"] <= 4 / 0.020, report["throughput_ips"]
    assert report["memory_mb"]["device"] == pytest.approx(123) and report["img_size"] == 32


def test_peak_rss_sees_a_native_allocation():
    import numpy as np

    with PeakRss() as rss:
        block = np.ones(64 << 20, dtype=np.uint8)   # 64 MB touched outside the Python heap's accounting
    del block
    assert rss_bytes() > 0 and rss.peak - rss.start > 32e6
