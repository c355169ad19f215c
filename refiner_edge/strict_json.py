"""The one JSON writer: manifests and every `--json` output are strict JSON (RFC 8259), which has no NaN or
Infinity. Python's json writes them as bare `NaN`/`Infinity` tokens, which C++ parsers, jq and browsers refuse.

A number that is not finite is written as a string instead: "NaN", "Infinity" or "-Infinity" (the names
JavaScript and Python's float() read back). Strings, not null, so that an exact match (SQNR +infinity: no noise)
stays distinguishable from a broken output (NaN). docs/manifest.md states the rule.

Imports nothing heavy: manifests are read and written before torch or numpy is loaded.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable


def _name(x: float) -> str:
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def finite(data: Any) -> Any:
    """`data` with every non-finite float (NumPy floats included) replaced by its name."""
    if isinstance(data, float):   # np.float64 is a float too
        return data if math.isfinite(data) else _name(data)
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    if type(data).__module__ == "numpy" and hasattr(data, "tolist"):   # np.float32, arrays: their Python values
        return finite(data.tolist())
    return data


def dumps(data: Any, default: Callable | None = None, **kw) -> str:
    """json.dumps that never writes NaN or Infinity (allow_nan=False stops any that `finite` missed)."""
    fallback = (lambda o: finite(default(o))) if default else None
    return json.dumps(finite(data), allow_nan=False, default=fallback, **kw)
