"""Hand-edited manifests out of range (issue 27, item 19): one table that the Python reader
(tests/test_hostile_values.py) and the C++ reader (tests/test_cpp.py) are both tested against, so the two
languages refuse the same manifests with the same line."""
from __future__ import annotations

import copy

from refiner_edge.images.preprocess import Preprocess
from refiner_edge.manifest import EngineInfo, GraphInfo, Manifest, ModelInfo, PluginInfo, Profile

HUGE = "<1e400>"   # written as the JSON number 1e400, which both readers read as infinity (json.dumps cannot)

# (case, path to the field, new value, the reader's message after "M: ")
CASES = [
    ("crop_pct 0", ["preprocess", "crop_pct"], 0, "preprocess: crop_pct 0 must be a finite number above 0"),
    ("crop_pct negative", ["preprocess", "crop_pct"], -0.5,
     "preprocess: crop_pct -0.5 must be a finite number above 0"),
    ("crop_pct huge", ["preprocess", "crop_pct"], HUGE, "preprocess: crop_pct inf must be a finite number above 0"),
    ("two-entry mean", ["preprocess", "mean"], [0.5, 0.5], "preprocess: mean should hold 3 values (R, G, B), got 2"),
    ("four-entry std", ["preprocess", "std"], [0.5] * 4, "preprocess: std should hold 3 values (R, G, B), got 4"),
    ("std with 0", ["preprocess", "std"], [0.5, 0, 0.5], "preprocess: mean and std must be finite and std non-zero"),
    ("std all 0", ["preprocess", "std"], [0.0, 0.0, 0.0], "preprocess: mean and std must be finite and std non-zero"),
    ("mean infinite", ["preprocess", "mean"], [HUGE, 0.5, 0.5],
     "preprocess: mean and std must be finite and std non-zero"),
    ("img_size 0", ["preprocess", "img_size"], 0, "preprocess: img_size 0 is out of range (1 to 8192)"),
    ("img_size huge", ["preprocess", "img_size"], 10 ** 9, "preprocess: img_size 1000000000 is out of range (1 to 8192)"),
    ("resize_size 0", ["preprocess", "resize_size"], 0, "preprocess: resize_size 0 is out of range (1 to 65536)"),
    ("interpolation", ["preprocess", "interpolation"], "lanczos",
     "preprocess: interpolation 'lanczos' is not one of bicubic, bilinear, nearest"),
    ("model img_size", ["model", "img_size"], -224, "model: img_size -224 is out of range (1 to 8192)"),
    ("no classes", ["model", "num_classes"], 0, "model: num_classes 0 is out of range (1 to 1000000)"),
    ("no heads", ["model", "heads"], 0, "model: heads 0 is out of range (1 to 1024)"),
    ("refining blocks", ["model", "refining_blocks"], -1, "model: refining_blocks -1 is out of range (0 to 1024)"),
    ("batch 0", ["graph", "batch"], 0, "graph: batch must be \"dynamic\" or at least 1"),
    ("batch text", ["graph", "batch"], "any", "graph: batch must be \"dynamic\" or at least 1"),
    ("opset", ["graph", "opset"], 0, "graph: opset 0 is out of range (1 to 1000)"),
    ("precision", ["graph", "precision"], "fp8", "graph: precision 'fp8' is not one of fp32, fp16, int8"),
    ("plugin nodes", ["graph", "plugin", "nodes"], -3, "graph: plugin: nodes -3 is out of range (0 to 1000000)"),
    ("stage", ["stage"], "train", "stage 'train' is not one of export, calibrate, fuse, build"),
    ("profile order", ["engine", "profiles", 0, "min", 0], 9,
     "engine: profiles[0]: min, opt and max must be positive with min <= opt <= max"),
    ("profile zero", ["engine", "profiles", 0, "min", 2], 0,
     "engine: profiles[0]: min, opt and max must be positive with min <= opt <= max"),
    ("profile rank", ["engine", "profiles", 0, "opt"], [4, 3, 224],
     "engine: profiles[0]: min, opt and max should be [batch, 3, size, size]"),
    ("no profiles", ["engine", "profiles"], [], "engine: profiles is empty: the engine has no input shapes"),
    ("dla core", ["engine", "dla_core"], -1, "engine: dla_core -1 is out of range (0 to 15)"),
    ("workspace", ["engine", "workspace"], -1, "engine: workspace -1 is out of range (0 to 1125899906842624)"),
    ("optimization level", ["engine", "builder_optimization_level"], 9,
     "engine: builder_optimization_level 9 is out of range (0 to 5)"),
    ("build seconds", ["engine", "build_seconds"], -1.5,
     "engine: build_seconds -1.5 must be a finite number, 0 or more"),
    ("weights", ["engine", "weights"], "none", "engine: weights 'none' is not one of included, stripped"),
    ("refit", ["engine", "refit"], "always", "engine: refit 'always' is not one of identical, any"),
]


def good_manifest() -> dict:
    """An engine's manifest (every record present: model, preprocess, graph with its plugin, engine)."""
    pre = Preprocess(224, 0.9, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")
    m = Manifest(stage="build", artifact="model.engine", labels="imagenet-1k",
                 model=ModelInfo("refiner-vit-s", 224, 1000, 12, 8, False, None), preprocess=pre.record(),
                 graph=GraphInfo(input="input", output="logits", batch="dynamic", opset=19, precision="fp16",
                                 fused=True, plugin=PluginInfo("RefinerDLA", "1", "refiner_edge", 8)),
                 engine=EngineInfo(flavour="tensorrt", tensorrt_version="10.3.0", target="orin-agx-jp6",
                                   compute_capability="8.7", device="Jetson AGX Orin", precision="fp16",
                                   typing="strong",
                                   profiles=[Profile("input", [1, 3, 224, 224], [4, 3, 224, 224], [8, 3, 224, 224])],
                                   plugin_form="library", plugin_library="librefiner_dla.so", plugin_sha256=None,
                                   dla_core=None, workspace=1 << 30, builder_optimization_level=3,
                                   hardware_compatibility="none", version_compatible=False, timing_cache=None,
                                   build_seconds=12.5, rebuild="refiner-edge build ..."))
    return m.to_dict()


def edited(path: list, value) -> dict:
    data = copy.deepcopy(good_manifest())
    node = data
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return data


def text(data: dict) -> str:
    """The manifest's JSON text, HUGE written as the number 1e400."""
    import json

    return json.dumps(data).replace(f'"{HUGE}"', "1e400")
