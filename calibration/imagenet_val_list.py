"""Write calibration/imagenet-val-500.txt: 500 ImageNet-1k validation images (ILSVRC2012_val_00000001.JPEG ..
ILSVRC2012_val_00050000.JPEG), chosen by a seeded permutation, so anyone with the validation set calibrates on the
same images. Run it again to check the committed list: `python calibration/imagenet_val_list.py --check`."""
import sys
from pathlib import Path

import numpy as np

VALIDATION_IMAGES = 50_000
SEED = 2021  # the year of the Refiner paper; any fixed seed would do, this one is the list's identity
COUNT = 500


def names() -> list[str]:
    picks = np.sort(np.random.default_rng(SEED).permutation(VALIDATION_IMAGES)[:COUNT] + 1)
    return [f"ILSVRC2012_val_{i:08d}.JPEG" for i in picks]


def text() -> str:
    header = (f"# {COUNT} ImageNet-1k validation images, seeded permutation (seed {SEED}) of the {VALIDATION_IMAGES}; "
              "made by calibration/imagenet_val_list.py\n")
    return header + "\n".join(names()) + "\n"


if __name__ == "__main__":
    target = Path(__file__).with_name("imagenet-val-500.txt")
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if target.read_text() == text() else f"{target.name} differs from what the script makes")
    target.write_text(text())
    print(f"wrote {target}")
