"""The precision stage keeps its memory budget on the one released model size: Refiner-ViT-L@448, calibrated at
default options in a subprocess whose peak resident memory is read from the kernel (and which is killed well before
it could take the machine)."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUDGET_L448 = 4e9    # bytes: peak resident memory of `calibrate` at default options (an Orin NX has 16 GB, shared)
KILL_AT = 6e9


def run_measured(args: list, kill_at: float) -> tuple[int, float, str]:
    """(exit code, peak resident bytes, output) of `python cli.py *args`, killed above `kill_at` bytes."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    killed, done = [], threading.Event()

    def watch():   # reads /proc only: proc.poll() here would reap the child before os.wait4 reads its peak
        page = os.sysconf("SC_PAGE_SIZE")
        while not done.is_set():
            try:
                with open(f"/proc/{proc.pid}/statm") as f:
                    rss = int(f.read().split()[1]) * page
            except OSError:
                return
            if rss > kill_at:
                killed.append(rss)
                proc.send_signal(signal.SIGKILL)
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output = proc.stdout.read().decode(errors="replace")
    done.set()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    return proc.returncode, max(usage.ru_maxrss * 1024, *killed, 0), output


@pytest.mark.slow
@pytest.mark.torch   # the export
def test_refiner_l448_calibration_stays_in_budget(tmp_path, sample_photos):
    """Export L@448 (about a minute) and calibrate it to INT8 on one photograph at default options: it used to
    pass 20 GB within 41 s (every activation of a batch held at once, 22 GB per image)."""
    onnx = tmp_path / "l448.onnx"
    code, _, output = run_measured(["export", "--variant", "refiner-vit-l", "--img-size", 448, "-o", onnx], 8e9)
    assert code == 0, output
    code, peak, output = run_measured(["calibrate", "--onnx", onnx, "--images", sample_photos[0], "--num", 1,
                                       "-o", tmp_path / "l448.int8.onnx"], KILL_AT)
    assert code == 0 and peak <= BUDGET_L448, f"peak {peak / 1e9:.2f} GB (budget {BUDGET_L448 / 1e9:g} GB)\n{output}"
