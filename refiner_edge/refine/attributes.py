"""The RefinerDLA node's attribute schema: the plugin creator's fields (the serialization format of the IPluginV3
library) plus the ONNX parser's version/namespace selectors, and its inverse for the reference executors."""
from __future__ import annotations

import numpy as np

from . import PLUGIN_NAMESPACE, PLUGIN_VERSION
from .fold import FoldedDLA
from .layout import PACK_ORDER, shapes


def plugin_attributes(folded: FoldedDLA) -> dict:
    """The RefinerDLA node attributes: the plugin's fields plus the ONNX parser's version/namespace selectors."""
    attrs = {"num_heads": int(folded.heads), "num_expanded": int(folded.expanded)}
    attrs.update({k: [float(v) for v in np.asarray(getattr(folded, k), np.float32).ravel()] for k in PACK_ORDER})
    attrs.update({"plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE})
    return attrs


def folded_from_attributes(attrs: dict) -> FoldedDLA:
    """Inverse of plugin_attributes, for the reference executors."""
    layout = shapes(int(attrs["num_heads"]), int(attrs["num_expanded"]))
    return FoldedDLA(**{k: np.asarray(attrs[k], np.float32).reshape(shape) for k, shape in layout.items()}).validate()
