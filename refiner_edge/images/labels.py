"""ImageNet-1k class names shipped with the package (index order of the official models)."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

from ..manifest import IMAGENET_LABELS, Manifest


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    text = resources.files("refiner_edge.images").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(labels) == 1000, "imagenet_classes.txt must list 1000 classes"
    return labels


def label_for(index: int, num_classes: int) -> str:
    """The ImageNet name for 1000-class models; 'class N' for any other head."""
    return imagenet_labels()[index] if num_classes == 1000 else f"class {index}"


def labels_text(manifest: Manifest) -> str:
    """One class name a line, in index order: the package's ImageNet names, or `class N` for any other head."""
    n = manifest.model.num_classes
    if manifest.labels == IMAGENET_LABELS and n == 1000:
        names = imagenet_labels()
    else:
        names = [f"class {i}" for i in range(n)]
    return "".join(f"{name}\n" for name in names)
