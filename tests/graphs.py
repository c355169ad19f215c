"""The graphs the torch-free tests run, written where torch is installed: `python -m tests.graphs DIR`.

The tiny model's plain graph, as the `tiny_plain` fixture makes it (randomized weights, seed 1): `make test` writes
it in its Python 3.11 leg for the leg without torch (REFINER_EDGE_TEST_GRAPHS=DIR)."""
import sys
from pathlib import Path

TINY = "tiny.onnx"


def write_graphs(folder: Path) -> Path:
    from refiner_edge.models.factory import create_model
    from refiner_edge.onnx.export import export_onnx

    from .helpers import randomize

    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(randomize(create_model("refiner-vit-tiny"), seed=1), folder / TINY)
    return folder / TINY


if __name__ == "__main__":
    print(write_graphs(Path(sys.argv[1])))
