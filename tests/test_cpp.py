"""The C++ library and app (cpp/): built once per session with cmake and g++ WITHOUT TensorRT (what CI can build),
then checked against the Python side it mirrors:

- preprocessing parity: the C++ tensor equals refiner_edge.images.preprocess on images made here with Pillow
  (odd sizes, extreme aspect ratios, grayscale, 16-bit grayscale and 16-bit RGB PNG, palette with and without
  transparency, RGBA, gray+alpha, all eight EXIF orientations in JPEG and PNG, CMYK JPEG, 4:2:0 JPEG) for the
  bicubic, bilinear and nearest filters and for crop_pct > 1 (the crop then reaches past the resized image).
  Lossless images (PNG, GIF) are bit-identical: the C++ resampler is Pillow's fixed-point convolution step for
  step, the normalisation the same float32 arithmetic, and a GIF's transparent index keeps its palette colour.
- decoders: JPEG with libjpeg-turbo (the decoder inside Pillow, called with Pillow's settings) is bit-identical,
  decoded pixels and tensors at S@224 and L@448, on the images users have where decoders disagree (decoder_images:
  4:2:2, 4:2:0, 4:4:0, 4:1:1 at odd and even widths with the edge column inside the crop, every size from 1x1
  to 5x5, progressive, restart markers, 4:2:2 in all EXIF orientations, CMYK, gray, RGB-coded; BMP, 1-bit PNG;
  GIFs with a transparent index, also on a canvas larger than the frame). Measured 2026-11-29: libjpeg-turbo
  2.1.5 (Debian 12) against Pillow 13.0's bundled 3.2.0: 0 levels on all of them. The stb_image fallback (a
  second build, -DREFINER_EDGE_WITH_LIBJPEG=OFF) is held to STB_JPEG_BOUNDS, which state its two deviations.
  (OpenCV's JPEG path is not built here: with libjpeg-turbo found, JPEG never reaches it; cpp/README.md.)
- `refiner-edge preprocess` tensor files are read back by the C++ library unchanged;
- the manifest reader refuses malformed manifests with Python's own messages;
- the engine checks give Python's exact "rebuild with: refiner-edge build ..." lines;
- refiner_classify's error paths that need no TensorRT; top-k JSON of the same shape as `refiner-edge infer`;
- an installed package found with find_package(refiner_edge) by a separate project;
- where TensorRT headers exist (TensorRT_ROOT), the library and the app compile against them with the plugin
  target configured; where TensorRT, libnvinfer and a GPU exist, refiner_classify prints what
  `refiner-edge infer --engine --json` prints (both skip here, with the reason).

Fuzzing (test_fuzz_readers_never_crash), a Python-driven loop, bounded to 1000 cases and 20 s, seeded: PNG, JPEG,
16-bit, palette, EXIF and CMYK files and a tensor file with random byte flips, truncations at random offsets,
inserted and deleted byte runs, and corrupted dimensions/lengths in their headers; manifests truncated, with
characters replaced, nested thousands deep, with values swapped for other JSON types and with huge or negative
sizes. The check: the process exits 0 or 1 with one `error:` line, never by a signal (a crash) and never hangs.
The same loop also runs on a build with -fsanitize=address,undefined (REFINER_EDGE_FUZZ_ASAN=1; 647 cases in its
20 s here) and was run by hand for 8,000 more (seeds 1, 7 and 11, GIF and BMP seeds added). It found that
stb_image 2.27 (Debian 12's libstb-dev) writes past its Huffman tables on a JPEG whose DHT segment declares more
than 256 codes; the library now refuses such a file before stb_image reads it (decode_stb.cpp). The reruns
reported nothing else but a harmless UBSan note inside stb_image (memcpy of zero bytes from a null pointer),
which the sanitized loop ignores by its line number.
"""
from __future__ import annotations

import copy
import json
import os
import random
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from refiner_edge.cli import app
from refiner_edge.images.tensor_file import read_tensor, write_tensor
from refiner_edge.engine.checks import Runtime, check_engine
from refiner_edge.errors import InputError
from refiner_edge.images.preprocess import Preprocess, load_image
from refiner_edge import manifest as manifest_module
from refiner_edge.manifest import EngineInfo, GraphInfo, Manifest, ModelInfo, parse_manifest, read_manifest, write_manifest

from .helpers import tensorrt_header_sets

pytestmark = pytest.mark.torch_free

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "cpp"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# JPEG through stb_image (the fallback when libjpeg-turbo is absent), measured on the images below with stb_image
# 2.27 (the module docstring): most kinds within 3 levels of 255, two kinds far off. Levels on any decoded pixel.
STB_JPEG_BOUNDS = {
    "4:2:2": 255,        # no bound: the last (odd width) or next-to-last (even) column takes the wrong chroma
                         # sample, off by the chroma step there (here 29-131 levels) ...
    "4:2:2 off the edge": 4,   # ... and only that column: elsewhere within 3 levels
    "narrow": 255,       # no bound: 4:2:2 or 4:2:0 at most 4 pixels wide (chroma width <= 2, where libjpeg-turbo
                         # stops smoothing chroma and stb_image does not), here 20-104 levels
    "other": 4,          # 4:4:4, 4:2:0, 4:4:0, 4:1:1, progressive, restart markers, gray, CMYK: 1-3
}
STB_JPEG_MEAN_LEVELS = 1.0   # on the other kinds; the existing images: 0.10

cli = CliRunner()


def _tools() -> None:
    missing = [t for t in ("cmake", "g++") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: the C++ library cannot be built here")


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=False, capture_output=True, text=True,
                          timeout=kw.pop("timeout", 300), **kw)


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> dict:
    """cpp/ configured with REFINER_EDGE_WITH_TENSORRT=OFF and -Werror, built, and installed to a prefix."""
    _tools()
    base = tmp_path_factory.mktemp("cpp")
    out, prefix = base / "build", base / "prefix"
    configure = _run(["cmake", "-S", CPP, "-B", out, "-DREFINER_EDGE_WITH_TENSORRT=OFF", "-DREFINER_EDGE_WERROR=ON",
                      "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_INSTALL_PREFIX={prefix}"])
    assert configure.returncode == 0, configure.stdout[-2000:] + configure.stderr[-2000:]
    built = _run(["cmake", "--build", out, "-j2"], timeout=600)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    installed = _run(["cmake", "--install", out])
    assert installed.returncode == 0, installed.stderr
    decoder = _run([out / "refiner_edge_probe", "decoder"]).stdout.strip()
    return {"dir": out, "prefix": prefix, "probe": out / "refiner_edge_probe", "app": out / "refiner_classify",
            "decoder": decoder, "log": built.stdout + built.stderr}


def _need_decoder(build) -> None:
    if build["decoder"] == "none":
        pytest.skip("neither OpenCV nor stb_image headers were found (apt-get install libstb-dev): only tensor "
                    "files can be decoded by this build")


def _jpeg_is_exact(decoder: str) -> bool:
    """libjpeg-turbo decodes JPEG bit-identically to Pillow; stb_image and OpenCV without it within bounds."""
    return decoder.startswith("libjpeg-turbo")


# ------------------------------------------------------------------------------------------------ test images

def _pattern(h: int, w: int, c: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise: resampling errors show, and JPEG keeps it close."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    planes = [x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), ((x + y) * 7) % 256, (x * 3 + y) % 256]
    base = np.stack(planes[:c], -1) + rng.integers(-40, 40, (h, w, c))
    return np.clip(base, 0, 255).astype(np.uint8)


def _png16_rgb(path: Path, arr: np.ndarray) -> None:
    """A 16-bit RGB PNG (Pillow cannot write one), written by hand."""
    h, w, _ = arr.shape
    raw = b"".join(b"\0" + arr[r].astype(">u2").tobytes() for r in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("images")
    made: dict[str, Path] = {}

    def save(name, img, **kw):
        made[name] = d / name
        img.save(made[name], **kw)

    save("rgb_odd.png", Image.fromarray(_pattern(301, 233, 3, 1)))
    save("wide.png", Image.fromarray(_pattern(97, 411, 3, 2)))
    save("tall_thin.png", Image.fromarray(_pattern(200, 3, 3, 3)))
    save("one_pixel.png", Image.fromarray(_pattern(1, 1, 3, 4)))
    save("small.png", Image.fromarray(_pattern(7, 5, 3, 5)))
    save("short_side_248.png", Image.fromarray(_pattern(300, 248, 3, 16)))   # S@224: only the vertical pass runs
    save("square_64.png", Image.fromarray(_pattern(64, 64, 3, 17)))          # bilinear@64, crop 1.0: no resize
    save("gray.png", Image.fromarray(_pattern(200, 150, 1, 6)[..., 0]))
    save("gray_alpha.png", Image.fromarray(_pattern(64, 80, 2, 7), "LA"))
    save("rgba.png", Image.fromarray(_pattern(130, 170, 4, 8), "RGBA"))
    save("palette.png", Image.fromarray(_pattern(130, 170, 3, 9)).convert("P", palette=Image.Palette.ADAPTIVE))
    pal = Image.fromarray(_pattern(90, 60, 3, 10)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save("palette_transparent.png", pal, transparency=3)
    rng = np.random.default_rng(11)
    save("gray16.png", Image.fromarray(rng.integers(0, 65535, (77, 99)).astype(np.uint16)))
    made["rgb16.png"] = d / "rgb16.png"
    _png16_rgb(made["rgb16.png"], rng.integers(0, 65535, (61, 83, 3)).astype(np.uint16))
    save("q90.jpg", Image.fromarray(_pattern(120, 90, 3, 12)), quality=90)
    save("q75_420.jpg", Image.fromarray(_pattern(123, 257, 3, 13)), quality=75, subsampling=2)
    save("gray.jpg", Image.fromarray(_pattern(100, 140, 1, 14)[..., 0]), quality=90)
    save("cmyk.jpg", Image.fromarray(_pattern(150, 100, 3, 15)).convert("CMYK"), quality=95)
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        img = Image.fromarray(_pattern(90, 140, 3, 20 + o))
        save(f"exif{o}.jpg", img, exif=exif.tobytes(), quality=95)
        save(f"exif{o}.png", img, exif=exif.tobytes())
    return made


def _jpeg_sampled(arr: np.ndarray, sampling: tuple[tuple[int, int], ...], restart: int = 0, rgb: bool = False) \
        -> bytes:
    """A baseline YCbCr JPEG with any sampling factors per component ((h, v) for Y, Cb, Cr), for the layouts
    Pillow's encoder does not write (4:4:0, 4:1:1), or with rgb=True an RGB one (components named R, G, B, no
    JFIF or Adobe marker: decoders must tell it from YCbCr by those names). Fixed-length Huffman codes keep it
    short: every DC category is a 4-bit code, every AC symbol an 8-bit one."""
    h, w, _ = arr.shape
    x = arr.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    planes = [r, g, b] if rgb else [0.299 * r + 0.587 * g + 0.114 * b, 128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
                                    128 + 0.5 * r - 0.418688 * g - 0.081312 * b]
    ids = b"RGB" if rgb else bytes([1, 2, 3])
    hmax, vmax = max(s[0] for s in sampling), max(s[1] for s in sampling)
    mx, my = -(-w // (8 * hmax)), -(-h // (8 * vmax))
    n = np.arange(8)
    dct = np.sqrt(np.where(n == 0, 1, 2) / 8)[:, None] * np.cos((2 * n[None, :] + 1) * n[:, None] * np.pi / 16)
    quant = 4 + 2 * (n[:, None] + n[None, :])
    zigzag = sorted(range(64), key=lambda k: (k // 8 + k % 8, k // 8 if (k // 8 + k % 8) % 2 else k % 8))
    coefs = []
    for plane, (hs, vs) in zip(planes, sampling):
        full = np.pad(plane, ((0, my * 8 * vmax - h), (0, mx * 8 * hmax - w)), mode="edge")
        fy, fx = vmax // vs, hmax // hs
        small = full.reshape(full.shape[0] // fy, fy, full.shape[1] // fx, fx).mean(axis=(1, 3)) - 128
        blocks = small.reshape(small.shape[0] // 8, 8, small.shape[1] // 8, 8).transpose(0, 2, 1, 3)
        q = np.rint(np.einsum("ui,abij,vj->abuv", dct, blocks, dct) / quant).astype(int)
        coefs.append(q.reshape(q.shape[0], q.shape[1], 64)[..., zigzag])
    ac_symbols = [0x00, 0xF0] + [run << 4 | size for run in range(16) for size in range(1, 11)]
    ac_code = {s: i for i, s in enumerate(ac_symbols)}
    out, acc, nbits = bytearray(), 0, 0

    def put(value, length):
        nonlocal acc, nbits
        acc, nbits = acc << length | value, nbits + length
        while nbits >= 8:
            byte = acc >> (nbits - 8) & 0xFF
            out.extend(b"\xff\x00" if byte == 0xFF else bytes([byte]))
            nbits -= 8
        acc &= (1 << nbits) - 1

    def put_value(v):
        size = abs(int(v)).bit_length()
        return size, (v if v >= 0 else v + (1 << size) - 1)

    pred = [0, 0, 0]
    for m in range(mx * my):
        if restart and m and m % restart == 0:
            if nbits:
                put((1 << (8 - nbits)) - 1, 8 - nbits)
            out.extend(bytes([0xFF, 0xD0 + (m // restart - 1) % 8]))
            pred = [0, 0, 0]
        my_, mx_ = divmod(m, mx)
        for c, (hs, vs) in enumerate(sampling):
            for by in range(vs):
                for bx in range(hs):
                    blk = coefs[c][my_ * vs + by, mx_ * hs + bx]
                    size, bits = put_value(blk[0] - pred[c])
                    pred[c] = blk[0]
                    put(size, 4)
                    put(bits, size)
                    run = 0
                    last = max([k for k in range(1, 64) if blk[k]], default=0)
                    for k in range(1, last + 1):
                        if blk[k] == 0:
                            run += 1
                            continue
                        while run > 15:
                            put(ac_code[0xF0], 8)
                            run -= 16
                        size, bits = put_value(blk[k])
                        put(ac_code[run << 4 | size], 8)
                        put(bits, size)
                        run = 0
                    if last < 63:
                        put(ac_code[0x00], 8)
    if nbits:
        put((1 << (8 - nbits)) - 1, 8 - nbits)

    def segment(marker, payload):
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    dqt = bytes([0]) + bytes(int(quant.reshape(64)[k]) for k in zigzag)
    sof = struct.pack(">BHHB", 8, h, w, 3) + b"".join(bytes([ids[i], hs << 4 | vs, 0])
                                                      for i, (hs, vs) in enumerate(sampling))
    dht = bytes([0x00]) + bytes([0, 0, 0, 12] + [0] * 12) + bytes(range(12))
    dht += bytes([0x10]) + bytes([0] * 7 + [162] + [0] * 8) + bytes(ac_symbols)
    sos = bytes([3, ids[0], 0x00, ids[1], 0x00, ids[2], 0x00, 0, 63, 0])
    dri = segment(0xDD, struct.pack(">H", restart)) if restart else b""
    return (b"\xff\xd8" + segment(0xDB, dqt) + segment(0xC0, sof) + segment(0xC4, dht) + dri + segment(0xDA, sos)
            + bytes(out) + b"\xff\xd9")


@pytest.fixture(scope="module")
def decoder_images(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """The images users have on which decoders disagree: name -> (path, kind of STB_JPEG_BOUNDS, or "exact").
    Widths odd and even around 258 (S@224 and L@448 keep the last column), and 19-20 pixels narrow (even S@224's
    crop then keeps the edge); 4:4:0 and 4:1:1 come from _jpeg_sampled, the rest from Pillow's encoder."""
    d = tmp_path_factory.mktemp("decoders")
    made: dict[str, tuple[Path, str]] = {}
    pillow_sampling = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
    ours = {"4:4:0": ((1, 2), (1, 1), (1, 1)), "4:1:1": ((4, 1), (1, 1), (1, 1))}

    def jpeg(name, arr, sampling, kind=None, **kw):
        path = d / name
        if sampling in ours:
            path.write_bytes(_jpeg_sampled(arr, ours[sampling], restart=kw.get("restart", 0)))
        else:
            Image.fromarray(arr).save(path, quality=kw.pop("quality", 90), subsampling=pillow_sampling[sampling],
                                      **kw)
        narrow = sampling in ("4:2:2", "4:2:0") and arr.shape[1] <= 4
        made[name] = path, kind or ("narrow" if narrow else "4:2:2" if sampling == "4:2:2" else "other")

    seed = 100
    for sampling in ("4:2:2", "4:2:0", "4:4:0", "4:1:1"):
        for w, h in ((259, 317), (258, 316), (19, 50), (20, 51), (50, 19), (51, 20)):
            seed += 1
            jpeg(f"{sampling.replace(':', '')}_{w}x{h}.jpg", _pattern(h, w, 3, seed), sampling)
    for w in range(1, 6):
        for h in range(1, 6):
            for sampling in ("4:4:4", "4:2:2", "4:2:0", "4:4:0"):
                seed += 1
                jpeg(f"tiny{sampling.replace(':', '')}_{w}x{h}.jpg", _pattern(h, w, 3, seed), sampling)
    photo = _pattern(233, 301, 3, 7)
    jpeg("progressive_420.jpg", photo, "4:2:0", progressive=True)
    jpeg("progressive_422.jpg", photo, "4:2:2", progressive=True)
    jpeg("restart_420.jpg", photo, "4:2:0", restart_marker_blocks=3)
    jpeg("restart_440.jpg", _pattern(45, 61, 3, 8), "4:4:0", restart=5)
    made["rgb_components.jpg"] = d / "rgb_components.jpg", "other"
    made["rgb_components.jpg"][0].write_bytes(_jpeg_sampled(_pattern(37, 53, 3, 9), ((1, 1),) * 3, rgb=True))
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        jpeg(f"exif{o}_422.jpg", _pattern(71, 99, 3, 30 + o), "4:2:2", exif=exif.tobytes(), quality=95)
    made["cmyk.jpg"] = d / "cmyk.jpg", "other"
    Image.fromarray(_pattern(150, 101, 3, 15)).convert("CMYK").save(made["cmyk.jpg"][0], quality=95)
    made["gray.jpg"] = d / "gray.jpg", "other"
    Image.fromarray(_pattern(100, 141, 1, 14)[..., 0]).save(made["gray.jpg"][0], quality=90)
    for name, img in (("rgb.bmp", Image.fromarray(_pattern(33, 47, 3, 11))),
                      ("one_bit.png", Image.fromarray(_pattern(33, 47, 1, 12)[..., 0]).convert("1"))):
        made[name] = d / name, "exact"
        img.save(made[name][0])
    # GIF: a transparent index keeps its palette colour in Python (P -> RGBA -> RGB), whatever the decoder
    pal = Image.fromarray(_pattern(90, 61, 3, 10)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    for name, kw in (("transparent.gif", {"transparency": 3}), ("opaque.gif", {})):
        made[name] = d / name, "exact"
        pal.save(made[name][0], **kw)
        # the same frame on a larger canvas (the logical screen's size in bytes 6-9): Pillow fills the outside
        # with the transparent index, else index 0
        big = bytearray(made[name][0].read_bytes())
        big[6:10] = struct.pack("<HH", 70, 100)
        made["canvas_" + name] = d / ("canvas_" + name), "exact"
        made["canvas_" + name][0].write_bytes(bytes(big))
    return made


def _probe_many(probe: Path, command: list, images: dict[str, tuple[Path, str]], out: Path) -> dict[str, np.ndarray]:
    """One probe run for all images (`decode` or `preprocess MANIFEST`): name -> its tensor."""
    out.mkdir(exist_ok=True)
    args = [probe, *command]
    for name, (path, _) in images.items():
        args += [path, out / f"{name}.rfet"]
    r = _run(args, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return {name: read_tensor(out / f"{name}.rfet") for name in images}


def _levels_by_kind(ours: dict[str, np.ndarray], theirs, images, scale=1.0) -> dict[str, tuple[float, float, str]]:
    """kind -> (max levels, largest mean levels, the image with the max)."""
    worst: dict[str, tuple[float, float, str]] = {}
    for name, (_, kind) in images.items():
        ref = theirs(name)
        assert ours[name].shape == ref.shape, name
        levels = np.abs(ours[name] - ref) * scale
        parts = [(kind, levels)]
        if kind == "4:2:2" and levels.ndim == 3 and not name.startswith("exif"):   # decoded, upright as stored
            parts.append(("4:2:2 off the edge", levels[:, :-2]))
        for part, values in parts:
            top, mean, at = worst.get(part, (0.0, 0.0, ""))
            worst[part] = (max(top, float(values.max(initial=0))),
                           max(mean, float(values.mean()) if part == "other" else 0.0),
                           name if values.max(initial=0) > top else at)
    return worst


def _assert_within_bounds(worst, decoder: str, what: str) -> None:
    exact = _jpeg_is_exact(decoder)
    for kind, (top, mean, at) in worst.items():
        bound = 0 if exact or kind == "exact" else STB_JPEG_BOUNDS[kind]
        assert top <= bound, f"{decoder}, {what}: {kind} images up to {top:.2f} levels ({at}), bound {bound}"
        if not exact:
            assert mean <= STB_JPEG_MEAN_LEVELS, f"{decoder}, {what}: {kind} mean {mean:.3f} levels"
    print(f"\n{decoder}, {what}: " + "; ".join(f"{k} max {v[0]:.1f} levels" for k, v in sorted(worst.items())))


def _manifest_dict(img_size=224, crop_pct=0.9, interpolation="bicubic", stage="export") -> dict:
    pre = Preprocess(img_size, crop_pct, MEAN, STD, interpolation)
    m = Manifest(stage=stage, artifact="model.onnx", labels="imagenet-1k",
                 model=ModelInfo("refiner-vit-s", img_size, 1000, 12, 8, False, None),
                 preprocess=pre.record(),
                 graph=GraphInfo(input="input", output="logits", batch="dynamic", opset=19, precision="fp32",
                                 fused=False))
    return m.to_dict()


def _cpp_tensor(build, manifest: Path, image: Path, out: Path) -> tuple[np.ndarray | None, str]:
    r = _run([build["probe"], "preprocess", manifest, image, out], timeout=60)
    assert r.returncode in (0, 1), r.stderr
    return (read_tensor(out) if r.returncode == 0 else None), r.stderr.strip()


# ------------------------------------------------------------------------------------------------ the build

def test_library_builds_without_tensorrt_and_without_warnings(build):
    assert build["probe"].is_file() and build["app"].is_file()
    # libjpeg-turbo's headers on the compiler's default paths (Debian/Ubuntu's libjpeg-dev): CMake must find them,
    # or the parity tests below would fall back to stb_image's bounds without saying why
    headers = [*Path("/usr/include").glob("jconfig.h"), *Path("/usr/include").glob("*/jconfig.h")]
    turbo = [p for p in headers if "LIBJPEG_TURBO_VERSION" in p.read_text(errors="replace")]
    assert not turbo or _jpeg_is_exact(build["decoder"]), (build["decoder"], turbo)
    warnings = [line for line in build["log"].splitlines() if "warning:" in line]
    assert not warnings, warnings   # -Werror would have failed the build; this names them if flags change
    for path in ("include/refiner_edge/refiner_edge.h", "lib/cmake/refiner_edge/refiner_edgeConfig.cmake",
                 "bin/refiner_classify"):
        assert (build["prefix"] / path).is_file(), path


# ------------------------------------------------------------------------------------------------ parity

PARITY_CASES = [  # (interpolation, crop_pct, img_size)
    ("bicubic", 0.9, 224),    # Refiner-ViT-S
    ("bicubic", 1.13, 224),   # Refiner-ViT-L: resize 198 < crop 224, the crop reaches past the image (black)
    ("bilinear", 1.0, 64),
    ("nearest", 0.875, 48),
]


@pytest.mark.parametrize("interpolation,crop_pct,img_size", PARITY_CASES)
def test_preprocessing_matches_python(build, images, tmp_path, interpolation, crop_pct, img_size):
    _need_decoder(build)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(_manifest_dict(img_size, crop_pct, interpolation)))
    pre = Preprocess(img_size, crop_pct, MEAN, STD, interpolation)
    scale = np.asarray(STD, np.float32)[:, None, None] * 255.0   # tensor difference -> 8-bit levels
    measured = {}
    for name, path in images.items():
        ours, err = _cpp_tensor(build, manifest, path, tmp_path / "x.rfet")
        assert ours is not None, f"{name}: {err}"
        ref = pre.load(path)
        assert ours.shape == ref.shape == (3, img_size, img_size)
        levels = np.abs(ours - ref) * scale
        measured[name] = (float(levels.max()), float(levels.mean()))
        if path.suffix == ".png" or _jpeg_is_exact(build["decoder"]):
            assert np.array_equal(ours, ref), f"{name}: {measured[name]} levels from Pillow's tensor"
        else:   # these images hold no 4:2:2 and nothing narrow: decoder_images has those
            assert levels.max() <= STB_JPEG_BOUNDS["other"] and levels.mean() <= STB_JPEG_MEAN_LEVELS, \
                (name, measured[name])
    jpeg = [v for k, v in measured.items() if k.endswith(".jpg")]
    print(f"\n{interpolation} crop_pct {crop_pct}: PNG bit-identical ({sum(k.endswith('.png') for k in measured)} "
          f"images); JPEG ({build['decoder']}) max {max(v[0] for v in jpeg):.2f} levels, "
          f"mean {max(v[1] for v in jpeg):.3f}")


PRESET_CASES = [(224, 0.9), (448, 1.13)]   # Refiner-ViT-S@224 and Refiner-ViT-L@448, bicubic


def test_decoded_pixels_match_pillow(build, decoder_images, tmp_path):
    """Before any resize: the C++ decoder's upright RGB against load_image's, on every kind of decoder_images."""
    _need_decoder(build)
    ours = _probe_many(build["probe"], ["decode"], decoder_images, tmp_path)
    worst = _levels_by_kind(ours, lambda n: np.asarray(load_image(decoder_images[n][0]), np.float32),
                            decoder_images)
    _assert_within_bounds(worst, build["decoder"], "decoded pixels")


@pytest.mark.parametrize("img_size,crop_pct", PRESET_CASES)
def test_tensors_match_python_on_every_decoder_image(build, decoder_images, tmp_path, img_size, crop_pct):
    _need_decoder(build)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(_manifest_dict(img_size, crop_pct)))
    ours = _probe_many(build["probe"], ["preprocess", manifest], decoder_images, tmp_path / "t")
    pre = Preprocess(img_size, crop_pct, MEAN, STD)
    scale = np.asarray(STD, np.float32)[:, None, None] * 255.0
    worst = _levels_by_kind(ours, lambda n: pre.load(decoder_images[n][0]), decoder_images, scale)
    _assert_within_bounds(worst, build["decoder"], f"tensors at {img_size}, crop_pct {crop_pct}")


def test_stb_image_fallback_stays_within_its_stated_bounds(build, decoder_images, tmp_path):
    """The build without libjpeg-turbo (-DREFINER_EDGE_WITH_LIBJPEG=OFF): stb_image decodes JPEG within
    STB_JPEG_BOUNDS, the two known deviations are still there (else cpp/README.md must say so), and reach the
    tensor at S@224; GIF transparency is exact with it too."""
    _tools()
    out = tmp_path / "build"
    configure = _run(["cmake", "-S", CPP, "-B", out, "-DREFINER_EDGE_WITH_TENSORRT=OFF", "-DREFINER_EDGE_WERROR=ON",
                      "-DREFINER_EDGE_WITH_OPENCV=OFF", "-DREFINER_EDGE_WITH_LIBJPEG=OFF"])
    assert configure.returncode == 0, configure.stdout[-2000:] + configure.stderr[-2000:]
    if "image decoder: stb_image" not in configure.stdout:
        pytest.skip("stb_image.h not found (apt-get install libstb-dev): the fallback decoder cannot be built")
    built = _run(["cmake", "--build", out, "-j2", "--target", "refiner_edge_probe"], timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    probe = out / "refiner_edge_probe"
    decoder = _run([probe, "decoder"]).stdout.strip()
    assert decoder == "stb_image"
    ours = _probe_many(probe, ["decode"], decoder_images, tmp_path / "d")
    worst = _levels_by_kind(ours, lambda n: np.asarray(load_image(decoder_images[n][0]), np.float32),
                            decoder_images)
    _assert_within_bounds(worst, decoder, "decoded pixels")
    assert worst["4:2:2"][0] > 64 and worst["narrow"][0] > 64, worst   # the deviations cpp/README.md states
    # The edge column inside S@224's crop: a narrow 4:2:2 image is off in the tensor too.
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(_manifest_dict(224, 0.9)))
    narrow = {n: decoder_images[n] for n in ("422_19x50.jpg", "422_20x51.jpg")}
    tensors = _probe_many(probe, ["preprocess", manifest], narrow, tmp_path / "t")
    pre = Preprocess(224, 0.9, MEAN, STD)
    scale = np.asarray(STD, np.float32)[:, None, None] * 255.0
    assert all((np.abs(tensors[n] - pre.load(p)) * scale).max() > 16 for n, (p, _) in narrow.items())


def test_unreadable_images_are_one_clear_line(build, tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(_manifest_dict()))
    cases = {"missing.png": None, "empty.png": b"", "text.jpg": b"not an image at all",
             "truncated.png": None, "truncated.jpg": None, "no_end.jpg": None}
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    png, jpg = tmp_path / "full.png", tmp_path / "full.jpg"
    Image.fromarray(_pattern(64, 64, 3, 0)).save(png)
    Image.fromarray(_pattern(64, 64, 3, 0)).save(jpg)
    (tmp_path / "truncated.png").write_bytes(png.read_bytes()[:100])
    (tmp_path / "truncated.jpg").write_bytes(jpg.read_bytes()[:len(jpg.read_bytes()) // 2])
    (tmp_path / "no_end.jpg").write_bytes(jpg.read_bytes()[:-2])   # Pillow refuses it too ("truncated")
    for name in ("truncated.jpg", "no_end.jpg"):
        with pytest.raises(InputError, match="truncated"):
            load_image(tmp_path / name)
    for name in cases:
        ours, err = _cpp_tensor(build, manifest, tmp_path / name, tmp_path / "x.rfet")
        assert ours is None and err.startswith("error: ") and len(err.splitlines()) == 1, err
        assert name in err, err
    assert "image not found" in _cpp_tensor(build, manifest, tmp_path / "missing.png", tmp_path / "x.rfet")[1]


def test_tensor_files_from_refiner_edge_preprocess(build, images, tmp_path):
    """`refiner-edge preprocess` writes what the C++ library reads (its fallback when it has no decoder)."""
    sources = [images["rgb_odd.png"], images["q90.jpg"]]
    result = cli.invoke(app, ["preprocess", *map(str, sources), "-o", str(tmp_path / "t"), "--variant",
                              "refiner-vit-s"])
    assert result.exit_code == 0, result.output
    pre = Preprocess(224, 0.9, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))   # refiner-vit-s's own
    manifest = tmp_path / "m.json"
    data = _manifest_dict()
    data["preprocess"].update(mean=[0.5] * 3, std=[0.5] * 3)
    manifest.write_text(json.dumps(data))
    for src in sources:
        tensor = tmp_path / "t" / f"{src.stem}.rfet"
        assert np.array_equal(read_tensor(tensor), pre.load(src))
        ours, err = _cpp_tensor(build, manifest, tensor, tmp_path / "back.rfet")
        assert ours is not None, err
        assert np.array_equal(ours, read_tensor(tensor))
    # one image to one file; a tensor of another size is refused by the C++ reader
    single = tmp_path / "one.rfet"
    assert cli.invoke(app, ["preprocess", str(sources[0]), "-o", str(single), "--img-size", "64"]).exit_code == 0
    assert read_tensor(single).shape == (3, 64, 64)
    ours, err = _cpp_tensor(build, manifest, single, tmp_path / "back.rfet")
    assert ours is None and "does not match the model's input [3, 224, 224]" in err
    bad = cli.invoke(app, ["preprocess", str(tmp_path / "nope.png"), "-o", str(single)])
    assert bad.exit_code == 2 and "no such file or directory" in bad.output
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    partial = cli.invoke(app, ["preprocess", str(sources[0]), str(tmp_path / "broken.png"), "-o", str(tmp_path / "p")])
    assert partial.exit_code == 2 and (tmp_path / "p" / f"{sources[0].stem}.rfet").is_file()
    assert [line for line in partial.stderr.splitlines() if line.startswith("error:")] == \
        [f"error: {tmp_path / 'broken.png'}: not an image file (or a format Pillow cannot read)"]
    # the engine's manifest gives the parameters; --variant cannot contradict it; an engine needs its manifest
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    write_manifest(engine, _engine_manifest(tmp_path))
    ok = cli.invoke(app, ["preprocess", str(sources[0]), "-o", str(tmp_path / "e.rfet"), "--engine", str(engine)])
    assert ok.exit_code == 0, ok.output
    assert np.array_equal(read_tensor(tmp_path / "e.rfet"), Preprocess(224, 0.9, MEAN, STD).load(sources[0]))
    clash = cli.invoke(app, ["preprocess", str(sources[0]), "-o", str(single), "--engine", str(engine),
                             "--variant", "refiner-vit-l"])
    assert clash.exit_code == 2 and "--variant describe a graph without a manifest" in clash.output
    (tmp_path / "model.engine.json").unlink()
    missing = cli.invoke(app, ["preprocess", str(sources[0]), "-o", str(single), "--engine", str(engine)])
    assert missing.exit_code == 2 and "has no manifest" in missing.output


def test_build_without_a_decoder_reads_tensor_files(build, images, tmp_path):
    """No OpenCV, stb_image or libjpeg-turbo (a machine without libstb-dev and libjpeg-turbo's headers): images are
    refused with the way out, tensor files from `refiner-edge preprocess` still work."""
    out = tmp_path / "build"
    configure = _run(["cmake", "-S", CPP, "-B", out, "-DREFINER_EDGE_WITH_TENSORRT=OFF", "-DREFINER_EDGE_WERROR=ON",
                      "-DREFINER_EDGE_WITH_OPENCV=OFF", "-DREFINER_EDGE_WITH_STB=OFF",
                      "-DREFINER_EDGE_WITH_LIBJPEG=OFF"])
    assert configure.returncode == 0 and "image decoder: none" in configure.stdout, configure.stderr[-2000:]
    built = _run(["cmake", "--build", out, "-j2", "--target", "refiner_edge_probe"], timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    probe = {**build, "probe": out / "refiner_edge_probe"}
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(_manifest_dict()))
    ours, err = _cpp_tensor(probe, manifest, images["rgb_odd.png"], tmp_path / "x.rfet")
    assert ours is None and "no image decoder" in err and "refiner-edge preprocess" in err, err
    tensor = tmp_path / "in.rfet"
    write_tensor(tensor, Preprocess(224, 0.9, MEAN, STD).load(images["rgb_odd.png"]))
    ours, err = _cpp_tensor(probe, manifest, tensor, tmp_path / "x.rfet")
    assert ours is not None and np.array_equal(ours, read_tensor(tensor)), err


# ------------------------------------------------------------------------------------------------ manifests

def _python_error(data) -> str | None:
    try:
        parse_manifest(data, "M")
    except InputError as e:
        return str(e)
    return None


def _cpp_manifest(build, tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "M"
    path.write_text(text)
    return _run([build["probe"], "manifest", "M"], timeout=30, cwd=tmp_path)


def test_manifest_reader_accepts_what_python_writes(build, tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    write_manifest(engine, _engine_manifest(tmp_path))
    r = _run([build["probe"], "manifest", tmp_path / "model.engine.json"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "build", "refiner-vit-s@224", "resize", "248", "bicubic", "classes", "1000",
                                "engine", "10.3.0"]


def test_manifest_reader_refuses_malformed_manifests_as_python_does(build, tmp_path):
    good = _manifest_dict()

    def changed(path, value):
        data = copy.deepcopy(good)
        *parents, last = path
        node = data
        for p in parents:
            node = node[p]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
        return data

    cases = {
        "newer schema": changed(["schema_version"], manifest_module.SCHEMA_VERSION + 1),
        "no schema": changed(["schema_version"], KeyError),
        "schema as text": changed(["schema_version"], "1"),
        "missing top field": changed(["labels"], KeyError),
        "missing nested field": changed(["model", "num_classes"], KeyError),
        "int as text": changed(["preprocess", "img_size"], "224"),
        "bool as int": changed(["model", "aux_head"], 1),
        "int as bool": changed(["model", "heads"], True),
        "float as text": changed(["preprocess", "crop_pct"], "0.9"),
        "list item": changed(["preprocess", "mean"], [0.5, "x", 0.5]),
        "null not allowed": changed(["graph", "input"], None),
        "object as list": changed(["model"], [1, 2]),
        "inconsistent resize": changed(["preprocess", "resize_size"], 250),
        "not an object": [1, 2, 3],
    }
    for name, data in cases.items():
        expected = _python_error(data)
        if name == "inconsistent resize":   # Python refuses it where the preprocessing is built (from_record)
            with pytest.raises(InputError) as e:
                Preprocess.from_record(parse_manifest(data).preprocess)
            expected = str(e.value)
        assert expected, name
        r = _cpp_manifest(build, tmp_path, json.dumps(data))
        assert r.returncode == 1, (name, r.stdout)
        assert r.stderr.strip() == f"error: {expected}", name
    # an engine's manifest: the typed `engine` record (Python's messages where it refuses the same way)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    write_manifest(engine, _engine_manifest(tmp_path))
    good = json.loads((tmp_path / "model.engine.json").read_text())   # changed() now edits this one
    engine_cases = {
        "missing rebuild": (changed(["engine", "rebuild"], KeyError), "engine: missing field 'rebuild'"),
        "bool as text": (changed(["engine", "version_compatible"], "yes"), "engine: version_compatible should be bool"),
        "cc as number": (changed(["engine", "compute_capability"], 8.7), "engine: compute_capability should be str"),
        "engine as list": (changed(["engine"], []), "engine: expected an object, got list"),
        "profiles as dict": (changed(["engine", "profiles"], {}), "engine: profiles should be list, got dict"),
        "profile without max": (changed(["engine", "profiles", 0, "max"], KeyError),
                                "engine: profiles[0]: missing field 'max'"),
        "profile shape item": (changed(["engine", "profiles", 0, "min", 1], "3"),
                               "engine: profiles[0]: min[1] should be int, got str"),
        "profile not object": (changed(["engine", "profiles", 0], 7),
                               "engine: profiles[0]: expected an object, got int"),
    }
    for name, (data, needle) in engine_cases.items():
        r = _cpp_manifest(build, tmp_path, json.dumps(data))
        assert r.returncode == 1 and r.stderr.strip().startswith(f"error: M: {needle}"), (name, r.stderr)
        # Python's words too, where its schema types the profiles (refiner_edge.manifest.Profile) as C++ does
        if hasattr(manifest_module, "Profile") or "profile" not in name:
            assert r.stderr.strip() == f"error: {_python_error(data)}", name
    # not JSON, and C++-only refusals (Python defers these to the preprocessing)
    for text, needle in [("{\"schema_version\": 1,", "not a readable manifest (line 1 column"),
                         ("", "not a readable manifest"), ("[" * 10000, "nested deeper than 64"),
                         (json.dumps(changed(["preprocess", "std"], [0.5, 0.5])), "std should hold 3 values"),
                         (json.dumps(changed(["preprocess", "img_size"], 10 ** 9)), "out of range")]:
        r = _cpp_manifest(build, tmp_path, text)
        assert r.returncode == 1 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_manifest_reader_refuses_out_of_range_fields_as_python_does(build, tmp_path):
    # one table of hand-edited manifests (tests/manifest_cases.py) for both readers: the same line from each
    from .manifest_cases import CASES, edited, good_manifest, text

    r = _cpp_manifest(build, tmp_path, json.dumps(good_manifest()))
    assert r.returncode == 0, r.stderr
    for name, path, value, message in CASES:
        manifest = text(edited(path, value))
        assert _python_error(json.loads(manifest)) == f"M: {message}", name
        r = _cpp_manifest(build, tmp_path, manifest)
        assert r.returncode == 1 and r.stderr.strip() == f"error: M: {message}", (name, r.stderr)


def test_manifest_reader_reads_non_finite_metrics_as_python_writes_them(build, tmp_path):
    # strict JSON (refiner_edge/strict_json.py): an exact match's infinite SQNR is the string "Infinity"
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    m = _engine_manifest(tmp_path)
    m.verification = [manifest_module.Verification("build", "tensorrt", "onnxruntime", "2 images",
                                                   {"sqnr_db": float("inf"), "cosine": float("nan")}, {})]
    write_manifest(engine, m)
    text = (tmp_path / "model.engine.json").read_text()
    assert '"sqnr_db": "Infinity"' in text and '"cosine": "NaN"' in text
    r = _run([build["probe"], "manifest", tmp_path / "model.engine.json"])
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------------------------------ engine checks

def _engine_manifest(tmp_path, **engine) -> Manifest:
    m = parse_manifest(_manifest_dict(stage="build"))
    m.engine = EngineInfo(flavour="tensorrt", tensorrt_version="10.3.0", target="orin-agx-jp6",
                          compute_capability="8.7", device="Jetson AGX Orin", precision="fp16", typing="strong",
                          profiles=[{"input": "input", "min": [1, 3, 224, 224], "opt": [4, 3, 224, 224],
                                     "max": [8, 3, 224, 224]}],
                          plugin_form="none", plugin_library=None, plugin_sha256=None, dla_core=None,
                          workspace=1 << 30, builder_optimization_level=3, hardware_compatibility="none",
                          version_compatible=False, timing_cache=None, build_seconds=1.0,
                          rebuild="refiner-edge build --onnx model.onnx --target orin-agx-jp6 -o model.engine")
    for k, v in engine.items():
        setattr(m.engine, k, v)
    return m


def test_engine_checks_give_pythons_rebuild_line(build, tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00plan bytes")
    library = tmp_path / "librefiner_edge_plugin.so"
    library.write_bytes(b"built once")
    runtimes = [Runtime("tensorrt", "10.3.0", "8.7", "Orin"), Runtime("tensorrt", "10.3.0.26", "8.7", "Orin"),
                Runtime("tensorrt", "10.13.3", "8.7", "Orin"), Runtime("tensorrt-rtx", "1.7.0", "8.7"),
                Runtime("tensorrt", "10.3.0", "9.0", "H100"), Runtime("tensorrt", "10.3.0", None)]
    variants = [{}, {"plugin_form": "library", "plugin_library": str(library), "plugin_sha256": "0" * 64},
                {"plugin_form": "library", "plugin_library": str(tmp_path / "gone.so"), "plugin_sha256": None},
                {"hardware_compatibility": "ampere+"}, {"version_compatible": True}]
    seen = set()
    for variant in variants:
        write_manifest(engine, _engine_manifest(tmp_path, **variant))
        m = parse_manifest(json.loads((tmp_path / "model.engine.json").read_text()))
        for rt in runtimes:
            try:
                check_engine(engine, m, rt)
                expected = "ok"
            except InputError as e:
                expected = f"error: {e}"
            r = _run([build["probe"], "check-engine", engine, rt.flavour, rt.version, rt.compute_capability or "none",
                      rt.gpu])
            got = r.stdout.strip() or r.stderr.strip()
            assert got == expected, (variant, rt)
            seen.add(expected.split(": rebuild with")[0])
    # ok, and the refusals: version, flavour, compute capability, plugin changed, plugin missing, no GPU
    assert len(seen) >= 7, seen
    # a truncated or replaced engine: its hash no longer matches the manifest
    write_manifest(engine, _engine_manifest(tmp_path))
    engine.write_bytes(engine.read_bytes()[:3])
    r = _run([build["probe"], "check-engine", engine, "tensorrt", "10.3.0", "8.7", "Orin"])
    assert r.returncode == 1 and "SHA-256 differs): rebuild with: refiner-edge build --onnx" in r.stderr


def test_engine_checks_follow_a_link_to_the_engines_manifest(build, tmp_path):
    """A link (current.engine -> model.engine) keeps the engine's manifest in C++ as in Python (read_manifest)."""
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00plan bytes")
    write_manifest(engine, _engine_manifest(tmp_path))
    (tmp_path / "links").mkdir()
    link = tmp_path / "links" / "current.engine"
    link.symlink_to(engine)
    assert read_manifest(link) is not None
    r = _run([build["probe"], "check-engine", link, "tensorrt", "10.3.0", "8.7", "Orin"])
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    # a link with a manifest of its own keeps that one
    (tmp_path / "links" / "current.engine.json").write_text("{}")
    r = _run([build["probe"], "check-engine", link, "tensorrt", "10.3.0", "8.7", "Orin"])
    assert r.returncode == 1 and "current.engine.json" in r.stderr, r.stderr


# ------------------------------------------------------------------------------------------------ the app

def test_refiner_classify_error_paths(build, images, tmp_path):
    appx = build["app"]
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"onnx")
    write_manifest(graph, parse_manifest(_manifest_dict()))
    image = str(images["rgb_odd.png"])
    cases = [
        ([], 2, "missing argument 'MODEL.engine'"),
        ([engine], 2, "missing argument 'IMAGE...'"),
        ([engine, image, "--topk", "0"], 2, "invalid value for '--topk'"),
        ([engine, image, "--topk"], 2, "option '--topk' requires an argument"),
        ([engine, image, "--bogus"], 2, "no such option: --bogus"),
        ([tmp_path / "none.engine", image], 2, "engine not found"),
        ([engine, tmp_path / "none.jpg"], 2, "no such file or directory"),
        ([engine, image], 2, "model.engine has no manifest (model.engine.json): make it with refiner-edge"),
        ([graph, image], 2, "model.onnx's manifest is a export manifest, not an engine's"),
    ]
    for args, code, needle in cases:
        r = _run([appx, *args])
        lines = r.stderr.strip().splitlines()
        assert r.returncode == code and len(lines) == 1 and needle in lines[0], (args, r.returncode, r.stderr)
    (tmp_path / "model.engine.json").write_text('{"schema_version": 3}')
    r = _run([appx, engine, image])
    assert r.returncode == 2 and "manifest schema 3 is newer" in r.stderr
    write_manifest(engine, _engine_manifest(tmp_path))
    r = _run([appx, engine, image, "--json"])
    assert r.returncode == 3 and "built without TensorRT" in r.stderr and r.stdout == ""
    assert _run([appx, "--help"]).returncode == 0


def test_topk_json_has_the_shape_of_refiner_edge_infer(build, tmp_path):
    from refiner_edge.runners.classify import ImageResult, topk

    logits = np.random.default_rng(0).normal(size=(3, 1000)).astype(np.float32)
    logits[1, 7] = logits[1, 9] = 40.0   # a tie: the lower index first, as numpy's stable argsort
    write_tensor(tmp_path / "logits.rfet", logits)
    r = _run([build["probe"], "topk", tmp_path / "logits.rfet", "5"])
    assert r.returncode == 0, r.stderr
    ours = json.loads(r.stdout)
    theirs = [ImageResult(f"row{i}", preds).to_dict() for i, preds in enumerate(topk(logits, 5, 1000))]
    assert [[(p["index"], p["label"]) for p in x["predictions"]] for x in ours] == \
        [[(p["index"], p["label"]) for p in x["predictions"]] for x in theirs]
    for a, b in zip(ours, theirs):
        assert set(a) == set(b) == {"image", "predictions"}
        assert all(set(p) == {"index", "label", "prob"} for p in a["predictions"])
        assert np.allclose([p["prob"] for p in a["predictions"]], [p["prob"] for p in b["predictions"]],
                           rtol=1e-12, atol=1e-15)
    assert ours[1]["predictions"][0]["index"] == 7 and ours[1]["predictions"][1]["index"] == 9


def test_topk_json_is_strict_for_nan_logits(build, tmp_path):
    # a broken engine's NaN logits: the probabilities are the string "NaN", as `refiner-edge infer --json` writes
    from refiner_edge import strict_json
    from refiner_edge.runners.classify import ImageResult, topk

    logits = np.full((1, 10), np.nan, np.float32)
    write_tensor(tmp_path / "logits.rfet", logits)
    r = _run([build["probe"], "topk", tmp_path / "logits.rfet", "2"])
    assert r.returncode == 0, r.stderr

    def refuse(token):
        raise AssertionError(f"{token} in JSON output")

    ours = json.loads(r.stdout, parse_constant=refuse)
    theirs = json.loads(strict_json.dumps([ImageResult("row0", p).to_dict() for p in topk(logits, 2, 10)]))
    assert [p["prob"] for p in ours[0]["predictions"]] == [p["prob"] for p in theirs[0]["predictions"]] == \
        ["NaN", "NaN"]


def test_installed_package_is_found_by_another_project(build, images, tmp_path):
    """find_package(refiner_edge) + refiner_edge::refiner_edge, as cpp/README.md shows a user."""
    project = tmp_path / "consumer"
    project.mkdir()
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(consumer CXX)\nfind_package(refiner_edge 0.1 REQUIRED)\n"
        "add_executable(consumer main.cpp)\ntarget_link_libraries(consumer PRIVATE refiner_edge::refiner_edge)\n")
    readme = (CPP / "README.md").read_text()
    snippet = readme.split("```cpp\n", 1)[1].split("```", 1)[0]   # the "ten lines" example, as published
    (project / "main.cpp").write_text(snippet)
    configure = _run(["cmake", "-S", project, "-B", project / "build", f"-DCMAKE_PREFIX_PATH={build['prefix']}"])
    assert configure.returncode == 0, configure.stdout[-2000:] + configure.stderr[-2000:]
    built = _run(["cmake", "--build", project / "build"])
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    write_manifest(engine, _engine_manifest(tmp_path))
    r = _run([project / "build" / "consumer", engine, images["rgb_odd.png"]])
    assert r.returncode == 1 and "built without TensorRT" in r.stderr, r.stderr   # this build has no TensorRT
    r = _run([project / "build" / "consumer", tmp_path / "none.engine", images["rgb_odd.png"]])
    assert r.returncode == 1 and r.stderr.startswith("error: engine not found"), r.stderr


# ------------------------------------------------------------------------------------------------ TensorRT

def _tensorrt_root() -> Path | None:
    # a TensorRT install, else the public headers kept beside the checkout for machines without one (CI too)
    roots = [os.environ.get("TensorRT_ROOT"), "/usr", "/usr/local/tensorrt", "/usr/local/TensorRT",
             tensorrt_header_sets() / "10.13.3"]
    for root in filter(None, roots):
        for sub in ("include", "include/x86_64-linux-gnu", "include/aarch64-linux-gnu"):
            if (Path(root) / sub / "NvInferRuntime.h").is_file():
                return Path(root)
    return None


def test_compiles_against_tensorrt_headers(tmp_path):
    _tools()
    root = _tensorrt_root()
    if root is None:
        pytest.skip("TensorRT headers (NvInferRuntime.h) not found: set TensorRT_ROOT to compile the TensorRT path")
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).exists():
        pytest.skip("nvcc / the CUDA toolkit not found: the TensorRT path needs the CUDA runtime headers")
    out = tmp_path / "build"
    configure = _run(["cmake", "-S", CPP, "-B", out, f"-DTensorRT_ROOT={root}", "-DREFINER_EDGE_WERROR=ON",
                      f"-DCMAKE_CUDA_COMPILER={nvcc}", "-DCMAKE_CUDA_ARCHITECTURES=87",
                      "-DREFINER_EDGE_BUILD_PLUGIN=ON"])
    assert configure.returncode == 0, configure.stdout[-2000:] + configure.stderr[-2000:]
    # The plugin target comes from plugins/refiner_dla (add_subdirectory); test_native_build.py compiles it, so
    # only the library and the app are compiled here (the plugin's nvcc pass would double this test's time).
    targets = _run(["cmake", "--build", out, "--target", "help"]).stdout
    assert "refiner_edge_plugin" in targets
    app_target = "refiner_classify" if "refiner_classify_objects" not in targets else "refiner_classify_objects"
    built = _run(["cmake", "--build", out, "-j2", "--target", "refiner_edge", app_target], timeout=900)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    assert "warning:" not in built.stdout + built.stderr
    symbols = _run(["nm", "-DC", "--defined-only", next(out.glob("librefiner_edge.so*"))]).stdout
    assert "refiner_edge::Classifier::create" in symbols


def test_engine_runs_through_the_cpp_library(tmp_path, images):
    """Where TensorRT, its headers and libnvinfer, and a GPU exist: refiner_classify prints what
    `refiner-edge infer --engine --json` prints for the same engine and images (PNG: identical input tensors)."""
    import importlib.util

    _tools()
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("tensorrt is not installed: no engine can be built or run here (the C++ engine path is "
                    "compiled by test_compiles_against_tensorrt_headers where headers exist)")
    from refiner_edge.engine.targets import detect_gpu

    if detect_gpu() is None:
        pytest.skip("no CUDA GPU: a TensorRT engine cannot run on this machine")
    root = _tensorrt_root()
    if root is None:
        pytest.skip("TensorRT headers (NvInferRuntime.h) not found: set TensorRT_ROOT to build the C++ app")
    out = tmp_path / "build"
    configure = _run(["cmake", "-S", CPP, "-B", out, f"-DTensorRT_ROOT={root}", "-DREFINER_EDGE_BUILD_PLUGIN=OFF"])
    assert configure.returncode == 0, configure.stdout[-2000:] + configure.stderr[-2000:]
    built = _run(["cmake", "--build", out, "-j2"], timeout=900)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    if not (out / "refiner_classify").is_file():
        pytest.skip("libnvinfer not found by CMake (headers only): set TensorRT_ROOT to a TensorRT with lib/")
    engine = tmp_path / "tiny.engine"
    made = cli.invoke(app, ["build", "--variant", "refiner-vit-tiny", "--precision", "fp32", "--plugin", "none",
                            "--batch", "1:2:4", "-o", str(engine)])
    assert made.exit_code == 0, made.output
    paths = [str(images[n]) for n in ("rgb_odd.png", "gray.png", "palette.png", "rgba.png", "exif6.png")]
    ref = cli.invoke(app, ["infer", "--engine", str(engine), "--topk", "3", "--json", *paths])
    assert ref.exit_code == 0, ref.output
    expected = json.loads(ref.stdout)
    for extra in ([], ["--cuda-graph"]):
        r = _run([out / "refiner_classify", engine, *paths, "--topk", "3", "--json", *extra])
        assert r.returncode == 0, r.stderr
        ours = json.loads(r.stdout)
        assert [x["image"] for x in ours] == [x["image"] for x in expected]
        for a, b in zip(ours, expected):
            assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
            assert np.allclose([p["prob"] for p in a["predictions"]], [p["prob"] for p in b["predictions"]],
                               atol=1e-4)
    # a truncated engine whose manifest still names the old one: one line, the rebuild command, no crash
    engine.write_bytes(engine.read_bytes()[:1000])
    r = _run([out / "refiner_classify", engine, paths[0]])
    assert r.returncode == 2 and "SHA-256 differs): rebuild with: refiner-edge build" in r.stderr


# ------------------------------------------------------------------------------------------------ fuzzing

def _mutate(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    kind = rnd.randrange(5)
    if kind == 0 and b:                                   # byte flips
        for _ in range(rnd.randint(1, 8)):
            b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
    elif kind == 1:                                       # truncation
        b = b[:rnd.randrange(len(b) + 1)]
    elif kind == 2:                                       # inserted run
        at = rnd.randrange(len(b) + 1)
        b[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 64)))
    elif kind == 3 and b:                                 # deleted run
        at = rnd.randrange(len(b))
        del b[at:at + rnd.randint(1, 64)]
    elif b:                                               # a header field: dimensions, lengths, markers
        at = rnd.randrange(min(len(b), 64))
        b[at:at + 4] = rnd.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x01\x00\x00"])
    return bytes(b)


def _mutate_manifest(good: dict, rnd: random.Random) -> str:
    text = json.dumps(good)
    kind = rnd.randrange(4)
    if kind == 0:
        return text[:rnd.randrange(len(text))]
    if kind == 1:
        at = rnd.randrange(len(text))
        return text[:at] + rnd.choice(['"', "{", "]", ",", "\\", "\x00", "9" * 30, ""]) + text[at + 1:]
    if kind == 2:
        return "[" * rnd.randint(50, 5000) + "]" * rnd.randint(0, 50)
    data = copy.deepcopy(good)
    section = rnd.choice(["model", "preprocess", "graph"])
    key = rnd.choice(list(data[section]))
    data[section][key] = rnd.choice([None, -1, 0, 2 ** 62, -2 ** 62, 1e308, "x", [], {}, True, [1] * 5])
    return json.dumps(data)


def test_fuzz_readers_never_crash(build, images, decoder_images, tmp_path):
    """REFINER_EDGE_FUZZ_ASAN=1: the same loop on a build with AddressSanitizer and UBSan (a second build, ~30 s),
    where any sanitizer report fails the case."""
    _need_decoder(build)
    sanitized = os.environ.get("REFINER_EDGE_FUZZ_ASAN") == "1"
    if sanitized:
        out = tmp_path / "asan"
        configure = _run(["cmake", "-S", CPP, "-B", out, "-DREFINER_EDGE_WITH_TENSORRT=OFF",
                          "-DREFINER_EDGE_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"])
        assert configure.returncode == 0, configure.stderr[-2000:]
        built = _run(["cmake", "--build", out, "-j2", "--target", "refiner_edge_probe"], timeout=900)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        build = {**build, "probe": out / "refiner_edge_probe"}
    rnd = random.Random(20261127)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(_manifest_dict(img_size=32, crop_pct=0.875)))
    seeds = [images[n].read_bytes() for n in ("rgb_odd.png", "q90.jpg", "palette.png", "gray16.png", "exif6.jpg",
                                              "cmyk.jpg")]
    seeds += [decoder_images[n][0].read_bytes() for n in ("canvas_transparent.gif", "progressive_422.jpg")]
    tensor = tmp_path / "seed.rfet"
    write_tensor(tensor, np.zeros((3, 32, 32), np.float32))
    seeds.append(tensor.read_bytes())
    good = _manifest_dict()
    counts = {"image ok": 0, "image refused": 0, "manifest ok": 0, "manifest refused": 0}
    start, cases = time.monotonic(), 0
    while cases < 1000 and time.monotonic() - start < 20:
        cases += 1
        if cases % 3:
            case = tmp_path / "case.bin"
            case.write_bytes(_mutate(rnd.choice(seeds), rnd))
            r = _run([build["probe"], "preprocess", manifest, case, tmp_path / "o.rfet"], timeout=20)
            what = "image"
        else:
            case = tmp_path / "case.json"
            case.write_text(_mutate_manifest(good, rnd))
            r = _run([build["probe"], "manifest", case], timeout=20)
            what = "manifest"
        assert r.returncode in (0, 1), f"case {cases} ({what}): exit {r.returncode} {r.stderr[-500:]}"
        # stb_image 2.27 calls memcpy(NULL, src, 0) on some PNGs: undefined in name only, harmless
        reports = [line for line in r.stderr.splitlines() if ("Sanitizer" in line or "runtime error" in line)
                   and "stb_image.h:1663" not in line]
        assert not (sanitized and reports), f"case {cases} ({what}): {reports}"
        if sanitized:   # what the sanitizer let through is not part of the one-line contract below
            r = subprocess.CompletedProcess(r.args, r.returncode, r.stdout, "\n".join(
                line for line in r.stderr.splitlines() if line.startswith("error: ")) + "\n")
        if r.returncode:
            assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr
        counts[f"{what} {'refused' if r.returncode else 'ok'}"] += 1
    assert cases >= 100, f"only {cases} cases in 30 s"
    print(f"\nfuzz: {cases} cases in {time.monotonic() - start:.1f} s: {counts}")
