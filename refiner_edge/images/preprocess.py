"""Image decoding and the official evaluation transform, with the parameters read from the variant's config."""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from ..models.variants import VariantConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit; larger images are refused, never decoded
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST}


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
        return math.floor(self.img_size / self.crop_pct)

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
        """RGB PIL image -> float32 array [3, img_size, img_size]."""
        if self.interpolation not in _RESAMPLE:
            raise InputError(f"unknown interpolation '{self.interpolation}'; use one of {', '.join(_RESAMPLE)}")
        w, h = img.size
        size = self.resize_size
        new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        img = img.resize((new_w, new_h), _RESAMPLE[self.interpolation])
        top = int(round((new_h - self.img_size) / 2.0))
        left = int(round((new_w - self.img_size) / 2.0))
        img = img.crop((left, top, left + self.img_size, top + self.img_size))
        x = np.asarray(img, dtype=np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def load(self, path: str | Path) -> np.ndarray:
        return self(load_image(path))


def load_image(path: str | Path) -> Image.Image:
    """Decode any common image file into an upright 8-bit RGB image, or raise InputError with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise InputError(f"{path}: {img.width}x{img.height} pixels is over the {MAX_PIXELS:,} limit "
                                     "(possible decompression bomb)")
                img.load()
                img = ImageOps.exif_transpose(img)
                return to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path}: image is too large (possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: cannot decode image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode: 16/32-bit integer and float images are scaled, not clipped."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = arr / 257.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else arr
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    # Like the official evaluation (timm's loader): alpha is dropped, not composited.
    return img.convert("RGB") if img.mode != "RGB" else img


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
