"""Latency, throughput and peak memory of any runner on one batch shape.

Timing: `warmup` untimed calls, then `iterations` timed ones (each a full call: host->device copy, run, copy back
where the runtime has a device). Memory: the peak resident set size during the timed calls, sampled by a thread
(native allocations of ONNX Runtime and torch do not show in tracemalloc), and, where the runner has a GPU, the
device memory it holds (CUDA's used memory since the runner loaded, or torch's peak allocation).
"""
from __future__ import annotations

import os
import platform
import resource
import threading
import time

import numpy as np

from .. import defaults
from ..defaults import default
from ..errors import InputError
from .base import Runner


def rss_bytes() -> int:
    """The current resident set size (Linux /proc), else the peak so far (getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if platform.system() == "Darwin" else peak * 1024


class PeakRss:
    """Samples the RSS every `interval` seconds while in the with-block."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.start = rss_bytes()
        self.peak = self.start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q, method="linear"))


def bench(runner: Runner, batch: int | None = None, iterations: int | None = None, warmup: int | None = None,
          seed: int = 0, on_iteration=lambda n: None) -> dict:
    """Time `runner` on random preprocessed-shaped input of `batch` images; figures in ms, images/s and MB. None:
    defaults.BENCH_BATCH, BENCH_ITERATIONS, BENCH_WARMUP."""
    batch = default(batch, defaults.BENCH_BATCH)
    iterations = default(iterations, defaults.BENCH_ITERATIONS)
    warmup = default(warmup, defaults.BENCH_WARMUP)
    if batch < 1 or iterations < 1 or warmup < 0:
        raise InputError(f"--batch and --iterations must be >= 1 and --warmup >= 0 (got {batch}, {iterations}, "
                         f"{warmup})")
    if runner.fixed_batch is not None and batch != runner.fixed_batch:
        raise InputError(f"the model's batch is fixed at {runner.fixed_batch}: use --batch {runner.fixed_batch}")
    if runner.max_batch is not None and batch > runner.max_batch:   # timing one batch, never chunks of it
        raise InputError(f"batch {batch} is above the engine's profile maximum {runner.max_batch}: use --batch "
                         f"{runner.max_batch} or less, or rebuild with a wider --batch MIN:OPT:MAX")
    size = runner.preprocess.img_size
    # the values do not change the work done; seeded so two runs see the same input
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size), dtype=np.float32)
    for _ in range(warmup):
        runner.run(x)
    torch_cuda = _torch_cuda_reset(runner)
    times = np.empty(iterations)
    with PeakRss() as rss:
        for i in range(iterations):
            t = time.perf_counter()
            runner.run(x)
            times[i] = time.perf_counter() - t
            on_iteration(1)
    ms = times * 1e3
    result = {
        "backend": runner.name, "model": runner.description, "batch": batch, "img_size": size,
        "iterations": iterations, "warmup": warmup,
        "latency_ms": {"mean": float(ms.mean()), "min": float(ms.min()), "p50": percentile(ms, 50),
                       "p90": percentile(ms, 90), "p99": percentile(ms, 99), "max": float(ms.max())},
        "throughput_ips": float(batch * iterations / times.sum()),
        "memory_mb": {"peak_rss": rss.peak / 1e6, "rss_growth": max(0, rss.peak - rss.start) / 1e6},
    }
    if runner.device_memory is not None:
        result["memory_mb"]["device"] = runner.device_memory() / 1e6
    elif torch_cuda is not None:
        result["memory_mb"]["device_peak"] = torch_cuda.max_memory_allocated() / 1e6
    return result


def _torch_cuda_reset(runner: Runner):
    """torch.cuda, with its peak statistic reset, when the runner is torch on a GPU (never imports torch)."""
    import sys

    torch = sys.modules.get("torch")
    if runner.name != "torch" or torch is None or not torch.cuda.is_available():
        return None
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda
