import numpy as np
import pytest
from PIL import Image

from refiner_edge.images import transform
from refiner_edge.errors import InputError
from refiner_edge.images.preprocess import Preprocess, find_images, load_image
from refiner_edge.models.variants import get_variant

pytestmark = pytest.mark.torch_free


@pytest.fixture
def photo(sample_photos):
    return Image.open(sample_photos[0]).convert("RGB")


def test_transform_follows_variant_config(sample_photos):
    pre = Preprocess.from_config(get_variant("refiner-vit-s"))
    assert (pre.img_size, pre.crop_pct, pre.resize_size) == (224, 0.9, 248)
    assert Preprocess.from_config(get_variant("refiner-vit-l")).resize_size == 198  # floor(224 / 1.13)
    x = pre.load(sample_photos[0])
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert -1.0 <= x.min() < 0 < x.max() <= 1.0  # mean = std = 0.5 maps [0, 1] to [-1, 1]


def test_short_side_resize_then_center_crop():
    # a horizontal gradient reveals where the crop was taken from
    w, h = 400, 200
    ramp = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
    img = Image.fromarray(np.stack([ramp] * 3, -1))
    pre = Preprocess(img_size=64, crop_pct=0.8, mean=(0.5,) * 3, std=(0.5,) * 3)
    x = pre(img)
    # resized to 160x80, crop columns 48..112 of 160: the centre column is mid-grey
    assert x.shape == (3, 64, 64)
    centre = (x[0, :, 31] + x[0, :, 32]) / 2
    assert np.allclose(centre, 0.0, atol=0.03)
    assert x[0, 0, 0] < -0.35 and x[0, 0, -1] > 0.35


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P", "CMYK", "I;16", "I", "F", "1"])
def test_odd_image_modes(tmp_path, photo, mode):
    if mode == "I;16":
        arr = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
        img = Image.fromarray(arr)
        assert img.mode == "I;16"
    elif mode == "I":
        img = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.int32) * 257, "I")
    elif mode == "F":
        img = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.float32) / 255.0, "F")
    else:
        img = photo.convert(mode)
    suffix = {"CMYK": ".jpg", "F": ".tif", "I": ".tif"}.get(mode, ".png")
    path = tmp_path / f"img{suffix}"
    img.save(path)
    rgb = load_image(path)
    assert rgb.mode == "RGB" and rgb.size == photo.size
    if mode in ("L", "I;16", "I", "F", "LA"):  # grey levels survive the bit-depth conversion
        grey = np.asarray(photo.convert("L"), dtype=np.float64)
        assert np.abs(np.asarray(rgb, dtype=np.float64)[..., 0] - grey).mean() < 1.0


def test_palette_with_transparency(tmp_path, photo):
    img = photo.convert("P")
    img.info["transparency"] = 0
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)
    assert load_image(path).mode == "RGB"


def test_exif_orientation_applied(tmp_path, photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    photo.save(path, exif=exif.tobytes())
    w, h = photo.size
    assert load_image(path).size == (h, w)


def test_truncated_and_non_images(tmp_path, sample_photos):
    data = sample_photos[0].read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="cannot decode"):
        load_image(cut)
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(InputError, match="not an image"):
        load_image(text)
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.png")


def test_decompression_bomb_refused(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(bomb)  # 100M pixels in a few kB
    assert bomb.stat().st_size < 100_000
    with pytest.raises(InputError, match="decompression bomb"):
        load_image(bomb)


def test_bomb_limit_is_ours(tmp_path, monkeypatch, sample_photos):
    monkeypatch.setattr(transform, "MAX_PIXELS", 1000)
    with pytest.raises(InputError, match="over the 1,000 limit"):
        load_image(sample_photos[0])


def test_find_images(tmp_path, sample_photos):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for i, p in enumerate(sample_photos):
        (tmp_path / "a" / ("b" if i else "") / p.name).write_bytes(p.read_bytes())
    (tmp_path / "a" / "readme.txt").write_text("x")
    found = find_images([tmp_path / "a"])
    assert [f.relative_to(tmp_path).as_posix() for f in found] == ["a/b/flower.jpg", "a/china.jpg"]
    assert find_images([found[0], found[0]]) == [found[0]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        find_images([tmp_path / "empty"])
    with pytest.raises(InputError, match="no such file"):
        find_images([tmp_path / "missing.jpg"])
