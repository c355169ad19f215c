"""Hostile values (issue 27, items 5-10, 18, 19): inputs whose numbers, not their files, are the problem. Each one
ends in one `error:` line and a documented exit code before any work, or is computed as documented."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from refiner_edge.errors import InputError
from refiner_edge.images import transform

from .helpers import invoke


# ------------------------------------------------------------------------------------------------ 5: aspect ratio

def test_extreme_aspect_ratio_is_refused_before_resampling():
    # the bound is the C++ library's (cpp/src/image.cpp): the resized image may hold 4 x MAX_PIXELS pixels
    size = transform.resize_size(224, 0.9)
    longest = 4 * transform.MAX_PIXELS // size
    assert transform.resized_shape(1, longest // size, size) == (size, longest // size * size)
    with pytest.raises(transform.ImageError):
        transform.resized_shape(1, longest // size + 1, size)
    assert transform.resized_shape(640, 480, size) == (int(size * 640 / 480), size)
    # 1 x 30000 pixels passes the decompression-bomb limit; its short-side resize to 248 would be 248 x 7.4M
    img = Image.new("RGB", (1, 30000), (10, 20, 30))
    with pytest.raises(transform.ImageError, match=r"aspect ratio \(1x30000\) cannot be resized"):
        transform.evaluate(img, 224, 0.9, (0.5,) * 3, (0.5,) * 3, "bicubic")


def test_infer_refuses_the_extreme_image_and_classifies_the_others(tiny_plain, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    # the tiny model's short side is 71: 1 x 6M pixels (a 6 kB PNG) would resize to 71 x 426M
    Image.new("L", (1, 6_000_000), 200).save(folder / "a_strip.png")
    Image.new("RGB", (80, 60), (10, 200, 10)).save(folder / "b_good.png")
    r = invoke("infer", folder, "--onnx", tiny_plain, "--json")
    assert r.exit_code == 2, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "a_strip.png" in errors[0] and "aspect ratio (1x6000000)" in errors[0], r.stderr
    results = json.loads(r.stdout)
    good = [x for x in results if x["image"].endswith("b_good.png")]
    assert good and good[0]["predictions"], results


def test_serve_refuses_the_extreme_image_with_one_line():
    import io

    from refiner_edge.deploy.serve import decode_image
    from refiner_edge.images.preprocess import Preprocess

    buf = io.BytesIO()
    Image.new("L", (1, 30000), 0).save(buf, "PNG")
    pre = Preprocess(224, 0.9, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(InputError, match=r"aspect ratio \(1x30000\) cannot be resized to a short side of 248"):
        decode_image(buf.getvalue(), pre)
