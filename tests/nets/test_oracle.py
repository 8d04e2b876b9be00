"""Equality with OpenAI's guided-diffusion (`guided_diffusion.unet`) on the same random weights.

Each published configuration in docs/paper_numbers.md is built at reduced width / resolution (the layout:
channel multipliers, blocks, heads, attention order, BigGAN/AdaGN, learned sigma, stays), every
parameter is perturbed so zero-initialised layers matter, the oracle's state dict is converted
into ours, and outputs must agree to 1e-5 in float32.
"""

from __future__ import annotations

import pytest
import torch

from beatgans.nets import CheckpointMismatchError, EncoderClassifier, UNet, load_openai_checkpoint, to_openai_state_dict
from tests.conftest import perturb_weights

gd_unet = pytest.importorskip("guided_diffusion.unet")
gd_script = pytest.importorskip("guided_diffusion.script_util")

TOL = 1e-5


def _batch(b, s, num_classes, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, s, s, generator=g)
    t = torch.tensor([0, 999, 457][:b])
    y = torch.randint(0, num_classes, (b,), generator=g) if num_classes else None
    return x, t, y


def _oracle_unet(ours_kw: dict) -> torch.nn.Module:
    """guided-diffusion's UNetModel with the configuration of our UNet kwargs."""
    size = ours_kw["image_size"]
    return gd_unet.UNetModel(
        image_size=size, in_channels=3, model_channels=ours_kw["model_channels"],
        out_channels=6 if ours_kw.get("learn_sigma") else 3, num_res_blocks=ours_kw["num_res_blocks"],
        attention_resolutions=tuple(size // r for r in ours_kw["attention_resolutions"]),  # factors, not px
        dropout=ours_kw.get("dropout", 0.0), channel_mult=tuple(ours_kw["channel_mult"]),
        num_classes=ours_kw.get("num_classes"), num_heads=ours_kw.get("num_heads", 1),
        num_head_channels=ours_kw.get("num_head_channels", -1),
        use_scale_shift_norm=ours_kw.get("use_scale_shift_norm", True),
        resblock_updown=ours_kw.get("resblock_updown", False),
        use_new_attention_order=ours_kw.get("use_new_attention_order", False),
    )


# Published layouts (docs/paper_numbers.md), reduced: width 32 (64 for 512's 0.5
# multiplier, GroupNorm needs 32 channels), 32x32 or 64x64 images, 32 channels per head.
PUBLISHED = {
    "imagenet64_cond": dict(image_size=32, model_channels=32, num_res_blocks=3, channel_mult=[1, 2, 3, 4],
                            num_head_channels=32, use_new_attention_order=True, dropout=0.1, num_classes=1000),
    "imagenet128_cond": dict(image_size=32, model_channels=32, num_res_blocks=2, channel_mult=[1, 1, 2, 3, 4],
                             num_heads=4, num_classes=1000),
    "imagenet256_cond": dict(image_size=32, model_channels=32, num_res_blocks=2, channel_mult=[1, 1, 2, 2, 4, 4],
                             num_head_channels=32, num_classes=1000),
    "imagenet256_uncond": dict(image_size=32, model_channels=32, num_res_blocks=2, channel_mult=[1, 1, 2, 2, 4, 4],
                               num_head_channels=32),
    "imagenet512_cond": dict(image_size=64, model_channels=64, num_res_blocks=2,
                             channel_mult=[0.5, 1, 1, 2, 2, 4, 4], num_head_channels=32, num_classes=1000),
    "ddpm_cifar10": dict(image_size=32, model_channels=32, num_res_blocks=2, channel_mult=[1, 2, 2, 2],
                         attention_resolutions=[16], use_scale_shift_norm=False, resblock_updown=False,
                         learn_sigma=False, dropout=0.1),
}
ADM = dict(in_channels=3, attention_resolutions=[32, 16, 8], learn_sigma=True, resblock_updown=True,
           use_scale_shift_norm=True)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_unet_equals_oracle(name):
    kw = {**ADM, **PUBLISHED[name]}
    torch.manual_seed(0)
    oracle = _oracle_unet(kw)
    perturb_weights(oracle, 0.03)
    ours = UNet(**kw)
    load_openai_checkpoint(ours, oracle.state_dict())
    oracle.eval(), ours.eval()
    x, t, y = _batch(2, kw["image_size"], kw.get("num_classes"))
    with torch.no_grad():
        ref = oracle(x, t, y)
        out = ours(x, t, y)
    assert out.shape == ref.shape
    assert ref.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    assert (out - ref).abs().max().item() <= TOL
    # and back: our weights under their names reproduce their model exactly
    again = _oracle_unet(kw).eval()
    again.load_state_dict(to_openai_state_dict(ours), strict=True)
    with torch.no_grad():
        assert torch.equal(again(x, t, y), ref)


def test_create_model_imagenet64_layout_from_a_file(tmp_path):
    """script_util.create_model with the released ImageNet-64 flags (width reduced) loads from a .pt file."""
    torch.manual_seed(0)
    oracle = gd_script.create_model(
        64, 64, 3, learn_sigma=True, class_cond=True, attention_resolutions="32,16,8", num_head_channels=64,
        use_scale_shift_norm=True, resblock_updown=True, use_new_attention_order=True, dropout=0.1,
    )
    perturb_weights(oracle, 0.03)
    path = tmp_path / "64x64_diffusion.pt"
    torch.save(oracle.state_dict(), path)
    ours = UNet(64, 3, 64, 3, [32, 16, 8], dropout=0.1, num_classes=1000, learn_sigma=True,
                num_head_channels=64, resblock_updown=True, use_new_attention_order=True)
    load_openai_checkpoint(ours, path)
    oracle.eval(), ours.eval()
    x, t, y = _batch(1, 64, 1000)
    with torch.no_grad():
        assert (ours(x, t, y) - oracle(x, t, y)).abs().max().item() <= TOL


def test_wrong_attention_order_loads_but_differs():
    """Both orders share a key layout, so only the outputs reveal a wrong flag."""
    kw = {**ADM, **PUBLISHED["imagenet128_cond"]}
    oracle = _oracle_unet(kw)
    perturb_weights(oracle, 0.03)
    ours = UNet(**{**kw, "use_new_attention_order": True})
    load_openai_checkpoint(ours, oracle.state_dict())
    x, t, y = _batch(2, 32, 1000)
    with torch.no_grad():
        assert (ours.eval()(x, t, y) - oracle.eval()(x, t, y)).abs().max() > 1e-3


def test_mismatch_error_lists_every_problem(tmp_path):
    kw = {**ADM, **PUBLISHED["imagenet256_uncond"]}
    state = _oracle_unet(kw).state_dict()
    state["bogus.weight"] = torch.zeros(1)
    del state["middle_block.1.qkv.bias"]
    ours = UNet(**{**kw, "learn_sigma": False})  # out conv 3 channels vs checkpoint's 6
    with pytest.raises(CheckpointMismatchError) as err:
        load_openai_checkpoint(ours, state)
    msg = str(err.value)
    assert "1 missing" in msg and "middle_block.1.qkv.bias (ours: middle.1.qkv.bias)" in msg
    assert "1 unexpected" in msg and "bogus.weight" in msg
    assert "2 shape mismatch" in msg and "out.2.weight: checkpoint (6, 32, 3, 3) vs model (3, 32, 3, 3)" in msg
    with pytest.raises(CheckpointMismatchError, match="label_emb.weight"):  # the CFG null row is extra
        load_openai_checkpoint(UNet(**{**kw, "num_classes": 1000, "null_class": True}),
                               _oracle_unet({**kw, "num_classes": 1000}).state_dict())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_openai_checkpoint(ours, tmp_path / "missing.pt")


CLASSIFIERS = {
    # create_classifier's released settings (depth 4 at 64, 2 otherwise), width and images reduced
    "imagenet64": dict(image_size=32, model_channels=32, num_res_blocks=4, channel_mult=[1, 2, 3, 4]),
    "imagenet128": dict(image_size=32, model_channels=32, num_res_blocks=2, channel_mult=[1, 1, 2, 3, 4]),
    "imagenet256": dict(image_size=32, model_channels=32, num_res_blocks=2, channel_mult=[1, 1, 2, 2, 4, 4]),
    "imagenet512": dict(image_size=64, model_channels=64, num_res_blocks=2, channel_mult=[0.5, 1, 1, 2, 2, 4, 4]),
}


def _oracle_classifier(kw: dict, pool: str) -> torch.nn.Module:
    size = kw["image_size"]
    return gd_unet.EncoderUNetModel(
        image_size=size, in_channels=3, model_channels=kw["model_channels"], out_channels=kw["num_classes"],
        num_res_blocks=kw["num_res_blocks"],
        attention_resolutions=tuple(size // r for r in kw["attention_resolutions"]),
        channel_mult=tuple(kw["channel_mult"]), num_head_channels=kw["num_head_channels"],
        use_scale_shift_norm=kw["use_scale_shift_norm"], resblock_updown=kw["resblock_updown"], pool=pool,
    )


@pytest.mark.parametrize(
    "name,pool",
    [(n, "attention") for n in CLASSIFIERS] + [("imagenet128", p) for p in ("adaptive", "spatial", "spatial_v2")],
)
def test_classifier_equals_oracle(name, pool):
    kw = dict(in_channels=3, num_classes=10, attention_resolutions=[32, 16, 8], num_head_channels=32,
              use_scale_shift_norm=True, resblock_updown=True, **CLASSIFIERS[name])
    torch.manual_seed(0)
    oracle = _oracle_classifier(kw, pool)
    perturb_weights(oracle, 0.03)
    ours = EncoderClassifier(**kw, pool=pool)
    load_openai_checkpoint(ours, oracle.state_dict())
    oracle.eval(), ours.eval()
    x, t, _ = _batch(3, kw["image_size"], None)
    with torch.no_grad():
        ref, out = oracle(x, t), ours(x, t)
    assert out.shape == ref.shape == (3, 10)
    assert ref.abs().max() > 0.05
    assert (out - ref).abs().max().item() <= TOL
    again = _oracle_classifier(kw, pool).eval()
    again.load_state_dict(to_openai_state_dict(ours), strict=True)
    with torch.no_grad():
        assert torch.equal(again(x, t), ref)


def test_create_classifier_released_flags():
    """script_util.create_classifier (64 ch/head, 1000 classes) at 64x64 with width 64, depth 1."""
    torch.manual_seed(0)
    oracle = gd_script.create_classifier(64, False, 64, 1, "32,16,8", True, True, "attention")
    perturb_weights(oracle, 0.03)
    ours = EncoderClassifier(64, 3, 64, 1000, 1, [32, 16, 8])
    load_openai_checkpoint(ours, oracle.state_dict())
    x, t, _ = _batch(2, 64, None)
    with torch.no_grad():
        assert (ours.eval()(x, t) - oracle.eval()(x, t)).abs().max().item() <= TOL


@pytest.mark.parametrize("name,size,classes", [("iddpm_cifar10", 32, None), ("iddpm_imagenet64", 64, None),
                                               ("iddpm_imagenet64_cond", 64, 1000)])
def test_improved_diffusion_net_configs_equal_oracle_with_rescaled_timesteps(name, size, classes):
    """conf/net/iddpm_*.yaml (width reduced to 32) against improved-diffusion's create_model layout for
    that resolution (channel multipliers by size, attention at 16 and 8 px with 4 heads, AdaGN, legacy
    attention order), fed the float timesteps t * 1000 / 4000 its published checkpoints were trained on."""
    from hydra.utils import instantiate

    from tests.conftest import compose

    cfg = compose("sample", [f"net={name}", "diffusion=iddpm_t4000", "net.model_channels=32"])
    ours = instantiate(cfg.net)
    assert (cfg.net.image_size, cfg.net.num_classes) == (size, classes)
    torch.manual_seed(0)
    oracle = gd_unet.UNetModel(
        image_size=size, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=3,
        attention_resolutions=(size // 16, size // 8), dropout=0.0,
        channel_mult=(1, 2, 2, 2) if size == 32 else (1, 2, 3, 4), num_classes=classes, num_heads=4,
        use_scale_shift_norm=True)
    perturb_weights(oracle, 0.03)
    load_openai_checkpoint(ours, oracle.state_dict())
    oracle.eval(), ours.eval()
    x, t, y = _batch(3, size, classes)
    t = t.float() * (1000.0 / 4000)  # what GaussianDiffusion(rescale_timesteps=True) feeds the net
    with torch.no_grad():
        ref = oracle(x, t, y)
        out = ours(x, t, y)
    assert ref.abs().max() > 0.1 and (out - ref).abs().max().item() <= TOL
