"""Image folders for calibration and validation: a deterministic sample, decoded and preprocessed exactly as at
inference, unreadable files skipped and counted, and optional labels (a folder per class, or a labels file)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import InputError
from .preprocess import Preprocess, find_images

IMAGENET_FOLDER = "imagenet-folder"


@dataclass
class ImageSet:
    paths: list[Path]                 # the images that decoded, in sample order
    arrays: np.ndarray                # [n, 3, S, S] float32, preprocessed
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, reason) of unreadable files
    found: int = 0                    # image files found under the inputs

    def __len__(self) -> int:
        return len(self.paths)

    def summary(self) -> dict:
        return {"found": self.found, "used": len(self.paths), "skipped": len(self.skipped),
                "skipped_files": [{"image": p, "reason": r} for p, r in self.skipped[:20]]}


def sample(paths: list[Path], seed: int = 0) -> list[Path]:
    """The sorted paths in a seeded random order: the same folder gives the same sample on every machine."""
    ordered = sorted(paths, key=lambda p: p.as_posix())
    return [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]


def read_listing(listing: str | Path, root: Path) -> list[Path]:
    """The images a calibration list names, one a line ('#' starts a comment): a path relative to `root`, or a
    bare file name found anywhere below it (so one list serves a flat ImageNet-val folder and one sorted into
    class folders). Every file must exist: a list is a recipe, and a silently shorter sample is not the recipe."""
    listing = Path(listing)
    if not listing.is_file():
        raise InputError(f"calibration list not found: {listing}")
    if not root.is_dir():
        raise InputError(f"--list names files inside a folder: --images {root} is not a folder")
    try:
        text = listing.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{listing}: not UTF-8 text (byte {e.start}): a calibration list is a text file of "
                         "image names") from None
    names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    names = [n for n in names if n]
    if not names:
        raise InputError(f"{listing} names no images")
    for name in names:   # a recipe names images inside --images, never elsewhere
        if Path(name).is_absolute() or ".." in Path(name).parts or "\0" in name:
            raise InputError(f"{listing}: '{name}' is not a name relative to --images (no absolute paths, no '..')")
    by_name: dict[str, Path] | None = None
    paths, missing = [], []
    for name in names:
        path = root / name
        if not path.is_file() and "/" not in name:
            if by_name is None:
                by_name = {p.name: p for p in find_images([root])}
            path = by_name.get(name, path)
        (paths if path.is_file() else missing).append(path)
    if missing:
        raise InputError(f"{len(missing)} of the {len(names)} images in {listing.name} are not in {root}, "
                         f"e.g. {missing[0].relative_to(root)}")
    return paths


def load_image_set(inputs: list[str | Path], preprocess: Preprocess, num: int | None = None, seed: int = 0,
                   on_image: Callable[[int], None] | None = None, listing: str | Path | None = None) -> ImageSet:
    """Decode up to `num` images (all when None) from files/folders (searched recursively) in sample order.

    listing: only the images a calibration list names, inside the one folder `inputs` gives.
    A file that cannot be decoded is skipped and recorded; the next one in the sample takes its place.
    """
    images, decoded = stream_image_set(inputs, preprocess, num, seed, on_image, listing)
    images.arrays = np.stack(list(decoded)).astype(np.float32)
    return images


def stream_image_set(inputs: list[str | Path], preprocess: Preprocess, num: int | None = None, seed: int = 0,
                     on_image: Callable[[int], None] | None = None, listing: str | Path | None = None
                     ) -> tuple[ImageSet, Iterator[np.ndarray]]:
    """load_image_set's images, decoded one at a time as the iterator is consumed, so only what the caller keeps
    stays in memory (512 images at 448 are 1.2 GB). The ImageSet's paths and skipped files fill in as the iterator
    runs (its arrays stay empty); the iterator raises InputError at its end when no image was readable."""
    if num is not None and num < 1:
        raise InputError(f"--num must be at least 1, got {num}")
    if listing is not None:
        if len(inputs) != 1:
            raise InputError("a calibration list needs exactly one image folder")
        paths = read_listing(listing, Path(inputs[0]))
    else:
        paths = find_images(list(inputs))
    order = sample(paths, seed) if num is not None and num < len(paths) else paths
    want = len(order) if num is None else min(num, len(order))
    images = ImageSet([], np.empty((0, 3, preprocess.img_size, preprocess.img_size), np.float32), [], len(paths))

    def decode() -> Iterator[np.ndarray]:
        for path in order:
            if len(images.paths) == want:
                break
            try:
                array = preprocess.load(path)
            except InputError as e:
                images.skipped.append((str(path), str(e)))
                array = None
            else:
                images.paths.append(path)
            if on_image:
                on_image(1)
            if array is not None:
                yield array
        if not images.paths:
            where = ", ".join(str(i) for i in inputs)
            raise InputError(f"no readable images in {where} ({len(images.skipped)} files could not be decoded)")

    return images, decode()


def load_labels(spec: str | Path, images: ImageSet, root: Path) -> np.ndarray:
    """Class indices of `images`: `imagenet-folder` (the sorted class folders under `root`, as torchvision's
    ImageFolder and the ImageNet validation layout number them) or a text file of `relative/path index` lines."""
    if str(spec) == IMAGENET_FOLDER:
        if not root.is_dir():
            raise InputError(f"--labels {IMAGENET_FOLDER} needs --images to be a folder of class folders")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        index = {name: i for i, name in enumerate(classes)}
        labels = []
        for path in images.paths:
            rel = path.relative_to(root).parts
            if len(rel) < 2:
                raise InputError(f"{path}: with --labels {IMAGENET_FOLDER} every image must sit in a class folder")
            labels.append(index[rel[0]])
        return np.asarray(labels, np.int64)
    return _labels_from_file(Path(spec), images, root)


# A labels-file line: the image's path, then separators (blanks, tabs, commas), then its class index, last. The name
# is everything before the last separator run, so it may hold blanks, tabs and commas ("beach, day 1.jpg 3",
# "a b.jpg\t3", "x.jpg,3" as CSV writes it). A name in double quotes is taken as it is, "" standing for one quote
# (CSV's quoting): "odd, .jpg",3 for one that ends in a separator.
_UNQUOTED = re.compile(r"\s*(.*?)[\s,]+([+-]?\d+)\s*")
_QUOTED = re.compile(r'\s*"((?:[^"]|"")*)"[\s,]+([+-]?\d+)\s*')


def labels_line(line: str) -> tuple[str, int] | None:
    """(path, class index) of one labels-file line; None when it is not one."""
    if line.lstrip().startswith('"'):
        match = _QUOTED.fullmatch(line)
        return (match.group(1).replace('""', '"'), int(match.group(2))) if match else None
    match = _UNQUOTED.fullmatch(line)
    return (match.group(1), int(match.group(2))) if match and match.group(1) else None


def _labels_from_file(path: Path, images: ImageSet, root: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"labels file not found: {path} (or use --labels {IMAGENET_FOLDER})")
    table: dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entry = labels_line(line)
        if entry is None:
            raise InputError(f"{path}:{n}: expected 'relative/path class_index' (a name with a leading or trailing "
                             f"blank or comma in double quotes, \"\" for a quote), got {line[:80]!r}")
        table[entry[0]] = entry[1]
    labels, missing = [], []
    for image in images.paths:
        rel = image.relative_to(root).as_posix() if root.is_dir() and image.is_relative_to(root) else image.name
        value = table.get(rel, table.get(image.name))
        if value is None:
            missing.append(rel)
        labels.append(-1 if value is None else value)
    if missing:
        raise InputError(f"{path} has no label for {len(missing)} image(s), e.g. {missing[0]}")
    return np.asarray(labels, np.int64)
