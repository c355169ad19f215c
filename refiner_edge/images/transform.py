"""Decoding and the official evaluation transform, with Pillow and NumPy only.

The one definition of what a served or local model sees: `Preprocess` (preprocess.py) calls it for files, `serve`
for encoded bytes, and `deploy triton` copies this file, as it is, beside the generated Python-backend model, which
imports it (the server has no refiner-edge). So it imports nothing from refiner_edge, and raises ImageError, which
the package turns into its own InputError.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit; larger images are refused, never decoded
# The resized image (before the crop) may hold at most this many pixels: a tiny file of 1 x 30000 pixels passes
# MAX_PIXELS, yet its short-side resize would be 248 x 7.4M. The C++ library applies the same bound
# (cpp/src/image.cpp, preprocess), so both languages refuse the same images.
MAX_RESIZED_PIXELS = 4 * MAX_PIXELS
RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST}


class ImageError(ValueError):
    """Bytes that are not a decodable image, or one over MAX_PIXELS."""


def decode(source) -> Image.Image:
    """A path or a binary file object -> an upright 8-bit RGB image (EXIF orientation applied), or ImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(f"{img.width}x{img.height} pixels is over the {MAX_PIXELS:,} limit "
                                     "(possible decompression bomb)")
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image is too large (possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise ImageError("not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"cannot decode image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
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


def resize_size(img_size: int, crop_pct: float) -> int:
    """The short side before the center crop."""
    return math.floor(img_size / crop_pct)


def resized_shape(w: int, h: int, size: int) -> tuple[int, int]:
    """(width, height) with the short side resized to `size`, aspect kept; ImageError when that image would hold
    more than MAX_RESIZED_PIXELS (an extreme aspect ratio), before any pixel is resampled."""
    new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    if new_w < 1 or new_h < 1 or new_w * new_h > MAX_RESIZED_PIXELS:
        raise ImageError(f"the image's aspect ratio ({w}x{h}) cannot be resized to a short side of {size}")
    return new_w, new_h


def evaluate(img: Image.Image, img_size: int, crop_pct: float, mean, std, interpolation: str) -> np.ndarray:
    """RGB image -> float32 [3, img_size, img_size]: resize the short side to resize_size (aspect kept, `interpolation`
    one of RESAMPLE), center-crop img_size, scale to [0, 1], (x - mean) / std."""
    if interpolation not in RESAMPLE:
        raise ImageError(f"unknown interpolation '{interpolation}'; use one of {', '.join(RESAMPLE)}")
    w, h = img.size
    size = resize_size(img_size, crop_pct)
    new_w, new_h = resized_shape(w, h, size)
    img = img.resize((new_w, new_h), RESAMPLE[interpolation])
    top = int(round((new_h - img_size) / 2.0))
    left = int(round((new_w - img_size) / 2.0))
    img = img.crop((left, top, left + img_size, top + img_size))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))
