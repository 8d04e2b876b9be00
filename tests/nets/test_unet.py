"""UNet behaviour: shapes for every knob, conditioning, checkpointing, autocast, layouts."""

from __future__ import annotations

import itertools

import pytest
import torch

from beatgans.nets import UNet
from beatgans.nets.layers import (
    AttentionBlock,
    GroupNorm32,
    ResBlock,
    timestep_embedding,
    upsample2x,
    upsample2x_conv3x3,
)
from tests.conftest import perturb_weights

BASE = dict(image_size=16, in_channels=3, model_channels=32, num_res_blocks=1,
            attention_resolutions=[8], channel_mult=[1, 2])


def _inputs(b=2, c=3, s=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, s, s, generator=g), torch.randint(0, 1000, (b,), generator=g)


KNOBS = [
    dict(),
    dict(use_scale_shift_norm=False),
    dict(resblock_updown=True),
    dict(num_heads=2),
    dict(num_head_channels=16),
    dict(num_heads=2, num_heads_upsample=4),
    dict(use_new_attention_order=True, num_heads=2),
    dict(residual_rescale=True),
    dict(dropout=0.3),
    dict(num_res_blocks=2, attention_resolutions=[16, 8]),
    dict(channel_mult=[1, 1, 2], attention_resolutions=[4]),
    dict(attention_resolutions=[]),
    dict(learn_sigma=True),
    dict(out_channels=5),
    dict(use_checkpoint=True),
]


@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "base")
def test_output_shape_for_every_knob(knobs):
    net = UNet(**{**BASE, **knobs})
    x, t = _inputs()
    out = net(x, t)
    expected = knobs.get("out_channels") or (6 if knobs.get("learn_sigma") else 3)
    assert out.shape == (2, expected, 16, 16)
    # zero-initialised final conv: a fresh net predicts exactly 0
    assert torch.count_nonzero(out) == 0
    perturb_weights(net, 0.05)
    out = net(x, t)
    out.square().mean().backward()
    assert torch.isfinite(out).all() and out.abs().max() > 0
    assert all(p.grad is not None for p in net.parameters())


def test_knobs_change_the_architecture():
    def count(**kw):
        return sum(p.numel() for p in UNet(**{**BASE, **kw}).parameters())

    base = count()
    assert count(use_scale_shift_norm=False) < base          # emb projection to C instead of 2C
    assert count(resblock_updown=True) != base               # resblocks replace conv resamplers
    assert count(attention_resolutions=[]) < base
    assert count(num_heads=2) == base                        # heads split channels, no new weights
    assert UNet(**BASE, num_head_channels=8).middle[1].num_heads == 8
    up = UNet(**BASE, num_heads=2, num_heads_upsample=4)
    assert up.middle[1].num_heads == 2 and up.decoder[0][1].num_heads == 4


def test_residual_rescale_divides_residual_sums_by_sqrt2():
    x = torch.randn(2, 32, 8, 8)
    emb = torch.randn(2, 64)
    for make in (lambda r: ResBlock(32, 64, out_channels=64, residual_rescale=r),
                 lambda r: AttentionBlock(32, num_heads=2, residual_rescale=r)):
        plain, rescaled = make(False), make(True)
        perturb_weights(plain, 0.05)
        rescaled.load_state_dict(plain.state_dict())
        args = (x, emb) if isinstance(plain, ResBlock) else (x,)
        torch.testing.assert_close(rescaled(*args), plain(*args) / 2**0.5, atol=1e-6, rtol=1e-6)


def test_class_conditioning_and_null_row():
    net = UNet(**BASE, num_classes=10, null_class=True)
    assert net.class_embed.weight.shape == (11, 128)
    perturb_weights(net, 0.05)
    x, t = _inputs()
    out_a = net(x, t, torch.tensor([0, 10]))      # 10 = the CFG null label
    out_b = net(x, t, torch.tensor([3, 10]))
    assert not torch.allclose(out_a[0], out_b[0]) and torch.allclose(out_a[1], out_b[1])
    with pytest.raises(ValueError, match="class-conditional"):
        net(x, t)
    with pytest.raises(ValueError, match="unconditional"):
        UNet(**BASE)(x, t, torch.tensor([0, 1]))
    assert UNet(**BASE, num_classes=10).class_embed.weight.shape == (10, 128)


def test_timestep_embedding_formula():
    t = torch.tensor([0, 1, 999])
    emb = timestep_embedding(t, 8)
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    ref = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    assert emb.dtype == torch.float32 and emb.shape == (3, 8)
    torch.testing.assert_close(emb, ref, atol=1e-6, rtol=0)
    assert torch.equal(timestep_embedding(t, 7)[:, -1], torch.zeros(3))


def test_default_channel_mult_and_bad_heads():
    assert UNet(64, 3, 32, 1, [16]).encoder[-1][0].conv2.out_channels == 128   # (1, 2, 3, 4)
    with pytest.raises(ValueError, match="channel_mult"):
        UNet(24, 3, 32, 1, [])
    with pytest.raises(ValueError, match="num_head_channels"):
        UNet(**BASE, num_head_channels=24)


def test_gradient_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    plain = UNet(**BASE, dropout=0.2, num_classes=4)
    ckpt = UNet(**BASE, dropout=0.2, num_classes=4, use_checkpoint=True)
    perturb_weights(plain, 0.05)
    ckpt.load_state_dict(plain.state_dict())
    x, t = _inputs()
    y = torch.tensor([1, 3])
    grads = []
    for net in (plain, ckpt):
        torch.manual_seed(123)  # same dropout masks; non-reentrant checkpointing replays the RNG
        net(x, t, y).square().mean().backward()
        grads.append([p.grad for p in net.parameters()])
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2, atol=1e-7, rtol=0)


def test_groupnorm_runs_in_fp32_under_bf16_autocast():
    gn = GroupNorm32(64)
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
    x = (torch.randn(2, 64, 4, 4) * 3 + 1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gn(x)
    ref = torch.nn.functional.group_norm(x.float(), 32, gn.weight, gn.bias, gn.eps).bfloat16()
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, ref)


def test_unet_under_bf16_autocast_close_to_fp32():
    net = UNet(**BASE, num_classes=3, learn_sigma=True)
    perturb_weights(net, 0.05)
    x, t = _inputs()
    y = torch.tensor([0, 2])
    ref = net(x, t, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t, y)
    out.float().square().mean().backward()
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("updown,new_order", list(itertools.product([False, True], [False, True])))
def test_channels_last_matches_contiguous(updown, new_order):
    net = UNet(**BASE, resblock_updown=updown, use_new_attention_order=new_order, num_heads=2)
    perturb_weights(net, 0.05)
    x, t = _inputs()
    ref = net(x, t)
    ref.square().mean().backward()
    ref_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    net_cl = net.to(memory_format=torch.channels_last)
    out = net_cl(x.contiguous(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    out.square().mean().backward()
    for g, r in zip((p.grad for p in net_cl.parameters()), ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_eval_mode_is_deterministic_with_dropout():
    net = UNet(**BASE, dropout=0.5)
    perturb_weights(net, 0.05)
    x, t = _inputs()
    net.eval()
    assert torch.equal(net(x, t), net(x, t))
    net.train()
    assert not torch.equal(net(x, t), net(x, t))


def test_subpixel_upsample_conv_equals_upsample_then_conv():
    conv = torch.nn.Conv2d(5, 7, 3, padding=1)
    x = torch.randn(2, 5, 6, 4, requires_grad=True)
    fast, direct = upsample2x_conv3x3(x, conv), conv(upsample2x(x))
    assert fast.shape == (2, 7, 12, 8)
    torch.testing.assert_close(fast, direct, atol=1e-5, rtol=0)
    g = torch.randn_like(fast)
    grads_fast = torch.autograd.grad(fast, [x, conv.weight, conv.bias], g)
    grads_direct = torch.autograd.grad(direct, [x, conv.weight, conv.bias], g)
    for a, b in zip(grads_fast, grads_direct):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_adagn_and_fused_upsampling_keep_channels_last():
    """NHWC in -> NHWC out (no hidden NCHW copies, which cost a reorder at the next conv), same values."""
    torch.manual_seed(0)
    x = torch.randn(3, 64, 8, 8)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    norm = GroupNorm32(64)
    w, b = torch.randn(3, 64), torch.randn(3, 64)
    ref = norm.normalize_per_sample(x, w, b)
    out = norm.normalize_per_sample(x_cl, w, b)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    conv = torch.nn.Conv2d(64, 32, 3, padding=1)
    up = upsample2x_conv3x3(x_cl, conv)
    assert up.is_contiguous(memory_format=torch.channels_last) and not up.is_contiguous()
    torch.testing.assert_close(up, conv(upsample2x(x)), atol=1e-5, rtol=1e-5)
