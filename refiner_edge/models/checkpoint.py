"""Reading official Refiner-ViT checkpoints safely and matching them to a model (timm's checkpoint_filter_fn idea)."""
from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from ..artifacts import file_sha256
from ..errors import CheckpointError

# The official files are timm training checkpoints: tensors, plain containers and an argparse.Namespace of the
# training arguments. Nothing else is ever needed, so nothing else is unpickled.
SAFE_GLOBALS = [argparse.Namespace]
STATE_DICT_KEYS = ("state_dict_ema", "state_dict", "model")  # EMA weights are the reported ones
PREFIXES = ("module.", "_orig_mod.")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Return the weights held by a checkpoint file (.pth/.pt/.bin pickle or .safetensors), unwrapped and unprefixed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    else:
        obj = _safe_torch_load(path)
    return _strip_prefixes(_unwrap(obj, path))


def _safe_torch_load(path: Path):
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the refused object as "GLOBAL module.name" in a few differently worded messages
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(f"refusing to load {path}: it holds a pickled object ({found.group(1)}) "
                                  "that a weights file never needs") from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (not a weights pickle)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({detail})") from None


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of weights")
    for key in STATE_DICT_KEYS:
        if isinstance(obj.get(key), dict) and obj[key]:
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no weights (keys: {', '.join(map(str, list(obj)[:8]))})")
    return tensors


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for p in PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def resize_pos_embed(pos: torch.Tensor, tokens: int) -> torch.Tensor:
    """Resize a [1, 1 + g*g, C] position embedding to `tokens` positions: the cls slot kept, the grid bicubic."""
    if pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[1] < 2 or pos.shape[2] < 1:
        raise CheckpointError(f"pos_embed has shape {tuple(pos.shape)}: expected [1, 1 + grid positions, dim]")
    if pos.shape[1] == tokens:
        return pos
    old, new = int(round((pos.shape[1] - 1) ** 0.5)), int(round((tokens - 1) ** 0.5))
    if old * old + 1 != pos.shape[1] or new * new + 1 != tokens:
        raise CheckpointError(f"cannot resize pos_embed of {pos.shape[1]} positions to {tokens}: not a square grid")
    cls, grid = pos[:, :1], pos[:, 1:]
    c = grid.shape[-1]
    grid = grid.reshape(1, old, old, c).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new * new, c).to(pos.dtype)
    return torch.cat([cls, grid], dim=1)


def load_into(model: torch.nn.Module, path: str | Path) -> str:
    """Load a checkpoint into `model` strictly; return the file's sha256. Fails listing missing/unexpected keys."""
    state = read_checkpoint(path)
    expected = model.state_dict()
    if "pos_embed" in state and "pos_embed" in expected:
        try:
            state["pos_embed"] = resize_pos_embed(state["pos_embed"], expected["pos_embed"].shape[1])
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None
    if getattr(model, "aux_head", True) is None:  # a model built without the aux head ignores its weights
        state = {k: v for k, v in state.items() if not k.startswith("aux_head.")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_short(unexpected)}")
        raise CheckpointError(f"{path} does not match {getattr(model, 'cfg', None) and model.cfg.name}: "
                              + "; ".join(parts))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{path} has tensors of the wrong shape (file vs model): {_short(wrong)}")
    # NaN or infinite weights make every prediction NaN (argmax then answers class 0 with prob NaN): refuse them here,
    # naming the tensors, rather than let export or inference take the blame
    bad = [f"{k} ({_count_nonfinite(v)} of {v.numel()} values)" for k, v in state.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path} has NaN or infinite weights in {len(bad)} tensors: {_short(bad, 3)}")
    model.load_state_dict(state, strict=True)
    return file_sha256(path)


def _count_nonfinite(t: torch.Tensor) -> int:
    return int((~torch.isfinite(t)).sum())


def _short(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f" ... (+{len(items) - n} more)" if len(items) > n else "")
