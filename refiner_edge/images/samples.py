"""Real photographs that ship inside a PyPI package (scikit-learn), for demos and tests with no download.

`python -m refiner_edge.images.samples` prints their folder.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import MissingDependencyError
from ..extras import install_hint


def sample_image_dir() -> Path:
    try:
        import sklearn.datasets
    except ImportError:
        raise MissingDependencyError(f"the sample photographs come with scikit-learn: {install_hint('sklearn')}") \
            from None
    return Path(sklearn.datasets.__file__).parent / "images"


if __name__ == "__main__":
    print(sample_image_dir())
