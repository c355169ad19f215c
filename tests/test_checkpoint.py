import argparse
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from refiner_edge.models.factory import create_model
from refiner_edge.models.checkpoint import read_checkpoint, resize_pos_embed
from refiner_edge.errors import CheckpointError


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_style_dict_prefers_ema(tiny_model, tiny_checkpoint):
    model = create_model("refiner-vit-tiny", checkpoint=tiny_checkpoint)
    assert _same_weights(model, tiny_model)
    assert len(model.checkpoint_sha256) == 64
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), tiny_model(x))


def test_state_dict_without_ema_and_module_prefix(tmp_path, tiny_model):
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in tiny_model.state_dict().items()},
                "args": argparse.Namespace(lr=0.1)}, path)
    assert _same_weights(create_model("refiner-vit-tiny", checkpoint=path), tiny_model)


def test_bare_state_dict_and_safetensors(tmp_path, tiny_model):
    bare = tmp_path / "bare.pt"
    torch.save(tiny_model.state_dict(), bare)
    assert _same_weights(create_model("refiner-vit-tiny", checkpoint=bare), tiny_model)
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(st))
    assert _same_weights(create_model("refiner-vit-tiny", checkpoint=st), tiny_model)


def test_pos_embed_resized_for_other_resolution(tiny_model, tiny_checkpoint):
    model = create_model("refiner-vit-tiny", img_size=96, checkpoint=tiny_checkpoint)
    pos = model.pos_embed.detach()
    assert pos.shape == (1, 37, 48)
    src = tiny_model.pos_embed.detach()
    assert torch.equal(pos[:, 0], src[:, 0])  # the cls slot is kept as it is
    grid = torch.nn.functional.interpolate(src[:, 1:].reshape(1, 4, 4, 48).permute(0, 3, 1, 2), size=(6, 6),
                                           mode="bicubic", align_corners=False)
    assert torch.allclose(pos[:, 1:], grid.permute(0, 2, 3, 1).reshape(1, 36, 48), atol=1e-6)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 1000)


def test_resize_identity_and_non_square():
    pos = torch.randn(1, 17, 8)
    assert resize_pos_embed(pos, 17) is pos
    with pytest.raises(CheckpointError, match="square"):
        resize_pos_embed(torch.randn(1, 15, 8), 17)


def test_missing_and_unexpected_keys_listed(tmp_path, tiny_model):
    state = dict(tiny_model.state_dict())
    del state["blocks.1.attn.adapt_bn.weight"]
    state["blocks.9.extra"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as e:
        create_model("refiner-vit-tiny", checkpoint=path)
    assert "missing 1 keys: blocks.1.attn.adapt_bn.weight" in str(e.value)
    assert "unexpected 1 keys: blocks.9.extra" in str(e.value)


def test_wrong_variant_or_head_is_refused(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="does not match refiner-vit-s: missing"):
        create_model("refiner-vit-s", checkpoint=tiny_checkpoint)
    with pytest.raises(CheckpointError, match=r"wrong shape.*head.weight \(1000, 48\) vs \(10, 48\)"):
        create_model("refiner-vit-tiny", num_classes=10, checkpoint=tiny_checkpoint)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_checkpoint",))


def test_malicious_pickle_refused(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:  # a legacy-format pickle: torch.load unpickles it directly
        pickle.dump({"state_dict": tiny_model.state_dict(), "payload": _Exploit()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_checkpoint(path)
    evil_zip = tmp_path / "evil_zip.pth"
    torch.save({"state_dict": tiny_model.state_dict(), "payload": _Exploit()}, evil_zip)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_checkpoint(evil_zip)
    assert not (tmp_path / "pwned_by_checkpoint").exists()


def test_garbage_and_missing_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(junk)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "absent.pth")
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"12345678garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        read_checkpoint(bad_st)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(CheckpointError, match="holds no weights"):
        read_checkpoint(empty)
