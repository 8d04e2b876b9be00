"""The super-resolution UNet: ADM's input path, and equality with guided-diffusion's ``SuperResModel``.

Both published upsampler layouts (docs/paper_numbers.md) are built at reduced width and
image size (multipliers, blocks, heads, attention resolutions, BigGAN/AdaGN, learned sigma and class
conditioning stay), every weight is perturbed so zero-initialised layers matter, the oracle's state
dict is converted into ours, and outputs must agree to 1e-5 in float32.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from beatgans.nets import (
    CheckpointMismatchError,
    SuperResUNet,
    UNet,
    load_openai_checkpoint,
    to_openai_state_dict,
)
from tests.conftest import perturb_weights

TOL = 1e-5

# Published flags, reduced: 64 -> 256 and 128 -> 512 both use guided-diffusion's upsampler multipliers
# (1, 1, 2, 2, 4, 4); sizes shrink to 16 -> 64 (the same x4 factor).
LAYOUTS = {
    "64_256": dict(model_channels=32, num_heads=4, num_head_channels=-1, attention_resolutions=[32, 16, 8]),
    "128_512": dict(model_channels=64, num_heads=4, num_head_channels=64, attention_resolutions=[32, 16]),
}
COMMON = dict(image_size=64, in_channels=3, num_res_blocks=2, channel_mult=[1, 1, 2, 2, 4, 4], learn_sigma=True,
              num_classes=1000, use_scale_shift_norm=True, resblock_updown=True, dropout=0.0)


def _inputs(b=2, c=3, size=64, low=16, classes=1000, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, size, size, generator=g)
    low_res = torch.rand(b, c, low, low, generator=g) * 2 - 1
    t = torch.tensor([3, 871][:b])
    y = torch.randint(0, classes, (b,), generator=g) if classes else None
    return x, t, y, low_res


def _oracle(kw: dict):
    gd_unet = pytest.importorskip("guided_diffusion.unet")
    size = kw["image_size"]
    return gd_unet.SuperResModel(
        image_size=size, in_channels=kw["in_channels"], model_channels=kw["model_channels"],
        out_channels=2 * kw["in_channels"], num_res_blocks=kw["num_res_blocks"],
        attention_resolutions=tuple(size // r for r in kw["attention_resolutions"]), dropout=kw["dropout"],
        channel_mult=tuple(kw["channel_mult"]), num_classes=kw["num_classes"], num_heads=kw["num_heads"],
        num_head_channels=kw["num_head_channels"], use_scale_shift_norm=kw["use_scale_shift_norm"],
        resblock_updown=kw["resblock_updown"],
    )


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_superres_equals_oracle_both_layouts(layout):
    kw = {**COMMON, **LAYOUTS[layout]}
    torch.manual_seed(0)
    oracle = _oracle(kw)
    perturb_weights(oracle, 0.03)
    ours = SuperResUNet(**kw, low_res_size=16)
    load_openai_checkpoint(ours, oracle.state_dict())
    oracle.eval(), ours.eval()
    x, t, y, low_res = _inputs()
    with torch.no_grad():
        ref = oracle(x, t, low_res=low_res, y=y)
        out = ours(x, t, y, low_res=low_res)
    assert out.shape == ref.shape == (2, 6, 64, 64)
    assert ref.abs().max() > 0.1
    assert (out - ref).abs().max().item() <= TOL
    # and back: our weights under their names load strictly into SuperResModel and reproduce it exactly
    again = _oracle(kw).eval()
    again.load_state_dict(to_openai_state_dict(ours), strict=True)
    with torch.no_grad():
        assert torch.equal(again(x, t, low_res=low_res, y=y), ref)


def test_oracle_checkpoint_file_loads_and_wrong_kind_is_refused(tmp_path):
    kw = {**COMMON, **LAYOUTS["64_256"]}
    torch.manual_seed(0)
    oracle = _oracle(kw)
    path = tmp_path / "64_256_upsampler.pt"
    torch.save(oracle.state_dict(), path)
    load_openai_checkpoint(SuperResUNet(**kw), path)
    plain = {k: v for k, v in kw.items()}
    with pytest.raises(CheckpointMismatchError, match="upsampler checkpoint.*SuperResUNet"):
        load_openai_checkpoint(UNet(**plain), path)
    # a plain UNet checkpoint into an upsampler: refused, with the opposite hint
    with pytest.raises(CheckpointMismatchError, match="plain UNet checkpoint"):
        load_openai_checkpoint(SuperResUNet(**kw), to_openai_state_dict(UNet(**plain)))


def test_strict_keys_and_shapes_are_refused():
    kw = {**COMMON, **LAYOUTS["64_256"]}
    state = _oracle(kw).state_dict()
    bad = dict(state)
    bad.pop("out.2.bias")
    bad["extra.weight"] = torch.zeros(1)
    bad["label_emb.weight"] = torch.zeros(999, 128)
    with pytest.raises(CheckpointMismatchError) as err:
        load_openai_checkpoint(SuperResUNet(**kw), bad)
    msg = str(err.value)
    assert "1 missing" in msg and "out.2.bias" in msg
    assert "1 unexpected" in msg and "extra.weight" in msg
    assert "1 shape mismatch" in msg and "label_emb.weight: checkpoint (999, 128) vs model (1000, 128)" in msg
    # a 128 -> 512 checkpoint does not load into the 64 -> 256 layout (different heads are invisible, but
    # attention at 8 px adds blocks the other lacks)
    other = _oracle({**COMMON, **LAYOUTS["128_512"], "model_channels": 32, "num_head_channels": 32})
    with pytest.raises(CheckpointMismatchError, match="unexpected|missing"):
        load_openai_checkpoint(SuperResUNet(**kw), other.state_dict())


def _small(**kw):
    base = dict(image_size=16, in_channels=1, model_channels=32, num_res_blocks=1, attention_resolutions=[8],
                channel_mult=[1, 2], low_res_size=8)
    net = SuperResUNet(**{**base, **kw})
    perturb_weights(net, 0.05)
    return net.eval()


def test_input_is_x_then_bilinear_resized_low_res():
    """The stem sees cat([x_t, F.interpolate(low_res, bilinear, torch defaults)]) and nothing else."""
    net = _small()
    x, t, _, low_res = _inputs(b=2, c=1, size=16, low=8, classes=None)
    plain = UNet(16, 2, 32, 1, [8], channel_mult=[1, 2], out_channels=1)
    plain.load_state_dict(net.state_dict())
    up = F.interpolate(low_res, size=(16, 16), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.equal(net(x, t, low_res=low_res), plain.eval()(torch.cat([x, up], 1), t))
    assert net.in_channels == 1 and net.out_channels == 1 and net.stem.in_channels == 2


def test_low_res_conditions_the_output_and_labels_too():
    net = _small(num_classes=10, learn_sigma=True)
    x, t, y, low_res = _inputs(b=2, c=1, size=16, low=8, classes=10)
    with torch.no_grad():
        out = net(x, t, y, low_res=low_res)
        other = net(x, t, y, low_res=-low_res)
        relabel = net(x, t, (y + 1) % 10, low_res=low_res)
    assert out.shape == (2, 2, 16, 16)
    assert (out - other).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every sample responds to its low_res
    assert (out - relabel).abs().max() > 1e-3
    # per-sample: changing sample 1's low_res leaves sample 0's output alone
    changed = low_res.clone()
    changed[1] = 0.0
    with torch.no_grad():
        mixed = net(x, t, y, low_res=changed)
    assert torch.allclose(mixed[0], out[0], atol=1e-6) and not torch.allclose(mixed[1], out[1], atol=1e-4)


def test_missing_or_wrong_low_res_is_one_clear_error():
    net = _small()
    x, t, _, low_res = _inputs(b=2, c=1, size=16, low=8, classes=None)
    with pytest.raises(ValueError, match="upsampler .*pass low_res"):
        net(x, t)
    with pytest.raises(ValueError, match="built for 8px low-res inputs, got 4x4"):
        net(x, t, low_res=low_res[..., :4, :4])
    with pytest.raises(ValueError, match="low_res must be"):
        net(x, t, low_res=low_res[:1])


# The README flags of guided-diffusion's upsamplers, as sr_create_model takes them (width reduced to 32 in the test).
PUBLISHED_FLAGS = {
    "imagenet64_256_upsampler": dict(large_size=256, small_size=64, attention_resolutions="32,16,8", num_heads=4,
                                     num_head_channels=-1),
    "imagenet128_512_upsampler": dict(large_size=512, small_size=128, attention_resolutions="32,16", num_heads=4,
                                      num_head_channels=64),
}


@pytest.mark.parametrize("name", list(PUBLISHED_FLAGS))
def test_presets_have_the_published_flags(name):
    """The preset at reduced width loads, strictly, the state dict of sr_create_model with the published flags."""
    gd_script = pytest.importorskip("guided_diffusion.script_util")
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from beatgans.cli.common import CONFIG_DIR

    flags = PUBLISHED_FLAGS[name]
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(overrides=[f"+net={name}", "net.model_channels=64"]).net
    assert (cfg.image_size, cfg.low_res_size, cfg.num_classes, cfg.learn_sigma) == (
        flags["large_size"], flags["small_size"], 1000, True)
    assert (cfg.num_heads, cfg.num_head_channels) == (flags["num_heads"], flags["num_head_channels"])
    assert ",".join(str(r) for r in cfg.attention_resolutions) == flags["attention_resolutions"]
    oracle = gd_script.sr_create_model(
        num_channels=64, num_res_blocks=2, learn_sigma=True, class_cond=True, use_checkpoint=False,
        num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0, resblock_updown=True, use_fp16=False, **flags)
    net = instantiate(cfg)
    assert isinstance(net, SuperResUNet)
    load_openai_checkpoint(net, oracle.state_dict())
