"""Every net config in conf/net (ours) composes, instantiates and runs; published sizes are exact."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from beatgans.cli.common import CONFIG_DIR
from beatgans.nets import EncoderClassifier, UNet, default_channel_mult

UNETS = ["adm_unet", "ddpm_cifar10", "iddpm_cifar10", "digits_unet", "imagenet64_cond", "imagenet128_cond",
         "imagenet256_cond", "imagenet256_uncond", "imagenet512_cond"]
CLASSIFIERS = ["classifier_encoder", "classifier_digits", "classifier_imagenet64", "classifier_imagenet128",
               "classifier_imagenet256", "classifier_imagenet512"]


def _compose(name: str, overrides: list[str] = ()):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose(overrides=[f"+net={name}", *overrides]).net


def _reduced(cfg) -> list[str]:
    """Overrides that keep the layout (multipliers, blocks, heads, flags) but fit a CPU test:
    width 32 (64 with a 0.5 multiplier: GroupNorm needs 32 channels), the smallest image the
    number of levels allows (at least 32 px), 32 channels per head, 7 classes."""
    mult = list(cfg.channel_mult) if cfg.channel_mult is not None else list(default_channel_mult(cfg.image_size))
    size = max(32, 2 ** (len(mult) - 1))
    over = [f"net.model_channels={64 if min(mult) < 1 else 32}", f"net.image_size={min(size, cfg.image_size)}",
            f"net.channel_mult=[{','.join(str(m) for m in mult)}]"]
    if cfg.num_head_channels > 0:
        over.append("net.num_head_channels=32")
    if cfg.num_classes:
        over.append("net.num_classes=7")
    return over


@pytest.mark.parametrize("name", UNETS)
def test_unet_configs_instantiate_and_run(name):
    cfg = _compose(name)
    assert cfg._target_ == "beatgans.nets.UNet"
    full = _compose(name, _reduced(cfg))
    net = instantiate(full)
    assert isinstance(net, UNet)
    s = net.image_size
    x = torch.randn(2, net.in_channels, s, s)
    t = torch.tensor([0, 999])
    y = torch.tensor([1, 6]) if net.num_classes else None
    out = net(x, t, y)
    assert out.shape == (2, net.in_channels * (2 if cfg.learn_sigma else 1), s, s)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_configs_instantiate_and_run(name):
    cfg = _compose(name)
    assert cfg._target_ == "beatgans.nets.EncoderClassifier"
    net = instantiate(_compose(name, _reduced(cfg)))
    assert isinstance(net, EncoderClassifier) and net.pool == "attention"
    s = net.image_size
    logits = net(torch.randn(3, cfg.in_channels, s, s), torch.tensor([0, 10, 999]))
    assert logits.shape == (3, net.num_classes)


def test_published_settings():
    c64, c128 = _compose("imagenet64_cond"), _compose("imagenet128_cond")
    assert (c64.model_channels, c64.num_res_blocks, c64.num_head_channels, c64.dropout) == (192, 3, 64, 0.1)
    assert c64.use_new_attention_order and not c128.use_new_attention_order
    assert (c128.model_channels, c128.num_heads, c128.num_head_channels) == (256, 4, -1)
    for name in ("imagenet256_cond", "imagenet256_uncond", "imagenet512_cond"):
        c = _compose(name)
        assert (c.model_channels, c.num_res_blocks, c.num_head_channels) == (256, 2, 64)
        assert c.learn_sigma and c.resblock_updown and c.use_scale_shift_norm
    assert _compose("imagenet256_uncond").num_classes is None and _compose("imagenet512_cond").num_classes == 1000
    assert _compose("classifier_imagenet64").num_res_blocks == 4
    assert _compose("classifier_imagenet256").num_res_blocks == 2
    # data-dependent values follow the data node when one exists
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(overrides=["+net=adm_unet", "+data.image_size=32", "+data.channels=1", "+data.num_classes=10"])
    assert (cfg.net.image_size, cfg.net.in_channels, cfg.net.num_classes) == (32, 1, 10)


def test_ddpm_cifar10_has_35_7M_parameters():
    net = instantiate(_compose("ddpm_cifar10"))
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 35.7
