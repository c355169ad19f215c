"""Image decoding and the official evaluation transform, with the parameters read from the variant's config."""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..models.variants import VariantConfig
from . import transform

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side to floor(img_size / crop_pct), center-crop img_size, scale to [0, 1], normalize."""

    img_size: int
    crop_pct: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    @classmethod
    def from_config(cls, cfg: VariantConfig, img_size: int | None = None, crop_pct: float | None = None,
                    interpolation: str | None = None) -> "Preprocess":
        return cls(img_size=img_size or cfg.img_size, crop_pct=crop_pct or cfg.crop_pct, mean=tuple(cfg.mean),
                   std=tuple(cfg.std), interpolation=interpolation or cfg.interpolation)

    @property
    def resize_size(self) -> int:
        return transform.resize_size(self.img_size, self.crop_pct)

    def to_dict(self) -> dict:
        return {**asdict(self), "resize_size": self.resize_size}

    def record(self):
        """The manifest's record of this preprocessing (what C++ and servers read)."""
        from ..manifest import Preprocessing

        return Preprocessing(img_size=self.img_size, crop_pct=self.crop_pct, resize_size=self.resize_size,
                             mean=list(self.mean), std=list(self.std), interpolation=self.interpolation)

    @classmethod
    def from_record(cls, rec) -> "Preprocess":
        pre = cls(img_size=rec.img_size, crop_pct=rec.crop_pct, mean=tuple(rec.mean), std=tuple(rec.std),
                  interpolation=rec.interpolation)
        if pre.resize_size != rec.resize_size:
            raise InputError(f"manifest preprocessing is inconsistent: resize_size {rec.resize_size} but "
                             f"floor(img_size / crop_pct) = {pre.resize_size}")
        return pre

    def __call__(self, img: Image.Image) -> np.ndarray:
        """RGB PIL image -> float32 array [3, img_size, img_size] (transform.evaluate, the served models' code)."""
        try:
            return transform.evaluate(img, self.img_size, self.crop_pct, self.mean, self.std, self.interpolation)
        except transform.ImageError as e:
            raise InputError(str(e)) from None

    def load(self, path: str | Path) -> np.ndarray:
        img = load_image(path)
        try:
            return self(img)
        except InputError as e:   # an image the transform refuses (an extreme aspect ratio): name the file
            raise InputError(f"{path}: {e}") from None


def load_image(path: str | Path) -> Image.Image:
    """Decode any common image file into an upright 8-bit RGB image, or raise InputError with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        return transform.decode(path)
    except transform.ImageError as e:
        raise InputError(f"{path}: {e}") from None


def decode_bytes(data: bytes) -> Image.Image:
    """load_image for an encoded file's bytes (what a server receives)."""
    if not data:
        raise InputError("empty image")
    try:
        return transform.decode(io.BytesIO(data))
    except transform.ImageError as e:
        raise InputError(str(e)) from None


def find_images(inputs: list[str | Path], recursive: bool = True) -> list[Path]:
    """Expand files and directories into a sorted, de-duplicated list of image paths."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            walker = p.rglob("*") if recursive else p.glob("*")
            files = sorted(f for f in walker if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputError(f"{p}: directory holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found.extend(files)
        elif p.is_file():
            found.append(p)
        else:
            raise InputError(f"no such file or directory: {p}")
    seen: set[Path] = set()
    return [f for f in found if not (f in seen or seen.add(f))]
