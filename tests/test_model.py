import pytest
import torch

from refiner_edge.models.factory import create_model
from refiner_edge.errors import InputError
from refiner_edge.models.model import RefinerViT, count_parameters
from refiner_edge.models.variants import VARIANTS, get_variant

from .helpers import randomize
from .official_reference import OfficialRefinerViT

# Parameter counts without the token-labelling aux head, as the official Refiner-ViT code builds them.
EXPECTED_PARAMS = {"refiner-vit-s": 25.02e6, "refiner-vit-m": 55.03e6, "refiner-vit-l": 80.64e6}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_counts(name):
    model = RefinerViT(get_variant(name))
    assert count_parameters(model) == pytest.approx(EXPECTED_PARAMS[name], abs=0.005e6)
    cfg = model.cfg
    assert count_parameters(model, include_aux=True) - count_parameters(model) == cfg.dim * 1000 + 1000


@pytest.mark.parametrize("name,img,batch", [("refiner-vit-tiny", 64, 1), ("refiner-vit-tiny", 96, 3),
                                            ("refiner-vit-s", 224, 2)])
def test_logit_shapes(name, img, batch):
    model = create_model(name, img_size=img)
    with torch.no_grad():
        out = model(torch.randn(batch, 3, img, img))
    assert out.shape == (batch, 1000)
    assert torch.isfinite(out).all()
    assert model.pos_embed.shape[1] == (img // 16) ** 2 + 1


def test_structure_alternates_plain_and_refining_blocks():
    model = create_model("refiner-vit-s")
    refining = [i for i, b in enumerate(model.blocks) if b.attn.refine]
    assert refining == list(range(1, 16, 2))
    assert model.blocks[1].attn.qkv.weight.shape == (384, 384)      # values only
    assert model.blocks[0].attn.qkv.weight.shape == (3 * 384, 384)  # q, k, v
    assert model.blocks[1].attn.DLA.conv_exp.weight.shape == (36, 12, 1, 1)
    assert model.blocks[1].attn.DLA.depth_sep_conv.weight.shape == (36, 1, 3, 3)
    assert not model.training


@pytest.mark.parametrize("img", [64, 96])
def test_matches_official_formulation(img):
    """Same state dict through our model and an independent transcription of the official forward."""
    cfg = get_variant("refiner-vit-tiny")
    ours = randomize(create_model(cfg.name, img_size=img), seed=3)
    official = OfficialRefinerViT(cfg, img).eval()
    official.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, img, img, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(x), official(x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a - b).abs().max()
    # the check has teeth: a different refinement scale changes the logits
    ours.blocks[1].attn.scale *= 1.5
    with torch.no_grad():
        assert not torch.allclose(ours(x), b, rtol=1e-5, atol=1e-5)


def test_official_key_names_present():
    keys = set(create_model("refiner-vit-s").state_dict())
    for key in ("patch_embed.conv1.weight", "blocks.1.attn.DLA.conv_exp.weight",
                "blocks.1.attn.DLA.depth_sep_conv.weight", "blocks.1.attn.DLA.bn2.running_var",
                "blocks.1.attn.adapt_bn.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.scale_channel",
                "aux_head.weight", "pos_embed", "cls_token", "head.bias"):
        assert key in keys, key


def test_without_aux_head_is_the_cls_head_alone(tiny_model):
    plain = create_model("refiner-vit-tiny", aux_head=False)
    plain.load_state_dict({k: v for k, v in tiny_model.state_dict().items() if not k.startswith("aux_head")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = tiny_model.forward_features(x)
        assert torch.allclose(plain(x), tiny_model.head(feats[:, 0]), atol=1e-6)


def test_bad_variant_and_size():
    with pytest.raises(InputError, match="unknown variant"):
        create_model("refiner-vit-xxl")
    with pytest.raises(InputError, match="not a positive multiple of the patch size 16"):
        create_model("refiner-vit-tiny", img_size=70)
    assert set(VARIANTS) >= {"refiner-vit-s", "refiner-vit-m", "refiner-vit-l"}


def test_random_weights_are_reproducible_and_leave_the_global_rng_alone():
    import torch

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = create_model("refiner-vit-tiny")
    assert torch.equal(torch.rand(1), expected_next)  # create_model did not consume the caller's RNG
    b, c = create_model("refiner-vit-tiny"), create_model("refiner-vit-tiny", seed=1)
    weights = [dict(m.state_dict()) for m in (a, b, c)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0] if weights[0][k].is_floating_point()
               and weights[0][k].numel() > 1)
