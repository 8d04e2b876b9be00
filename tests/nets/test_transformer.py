"""Cross-attention conditioning: the spatial transformer and the UNet's context path."""

from __future__ import annotations

import hashlib

import pytest
import torch

from beatgans.nets import UNet
from beatgans.nets.transformer import CrossAttention, SpatialTransformer

CTX = dict(image_size=8, in_channels=2, model_channels=32, channel_mult=[1, 2], num_res_blocks=1,
           attention_resolutions=[4], num_head_channels=16, context_dim=12)


def _perturb(net: torch.nn.Module, seed: int = 0, skip: str | None = None) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if skip is None or skip not in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _context(b=2, s=5, d=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, s, d, generator=g)


def test_cross_attention_matches_the_softmax_formula_with_a_key_mask():
    torch.manual_seed(0)
    attn = CrossAttention(16, 12, heads=2, head_dim=8)
    x, ctx = torch.randn(3, 7, 16), _context(3, 5, 12)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    q = attn.to_q(x).view(3, 7, 2, 8).transpose(1, 2)
    k = attn.to_k(ctx).view(3, 5, 2, 8).transpose(1, 2)
    v = attn.to_v(ctx).view(3, 5, 2, 8).transpose(1, 2)
    logits = (q @ k.transpose(-1, -2)) / 8 ** 0.5
    weights = logits.masked_fill(~mask[:, None, None], float("-inf")).softmax(-1)
    want = attn.to_out((weights @ v).transpose(1, 2).reshape(3, 7, 16))
    assert torch.allclose(attn(x, ctx, mask), want, atol=1e-6)


def test_spatial_transformer_is_the_identity_at_initialisation():
    torch.manual_seed(0)
    block = SpatialTransformer(32, 12, num_heads=2, depth=2)
    x = torch.randn(2, 32, 4, 4)
    assert torch.equal(block(x, _context()), x)


def test_padded_context_tokens_do_not_change_the_output():
    torch.manual_seed(0)
    block = SpatialTransformer(32, 12, num_heads=2)
    _perturb(block)
    x, ctx = torch.randn(2, 32, 4, 4), _context(2, 3)
    base = block(x, ctx, torch.ones(2, 3, dtype=torch.bool))
    padded = torch.cat([ctx, 100 * _context(2, 4, seed=7)], dim=1)  # junk in 4 padded slots
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0]] * 2, dtype=torch.bool)
    assert torch.allclose(block(x, padded, mask), base, atol=1e-5)
    assert not torch.allclose(block(x, padded, torch.ones_like(mask)), base, atol=1e-3)  # the mask is what hides them


def test_unet_with_context_shapes_gradients_and_checkpointing():
    torch.manual_seed(0)
    net = UNet(**CTX)
    # at 4 px: 1 encoder, the middle, 2 decoder blocks
    assert sum(isinstance(m, SpatialTransformer) for m in net.modules()) == 4
    _perturb(net)
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([3, 40])
    ctx = _context().requires_grad_(True)
    out = net(x, t, context=ctx, context_mask=torch.ones(2, 5, dtype=torch.bool))
    assert out.shape == (2, 2, 8, 8)
    out.square().sum().backward()
    assert ctx.grad.abs().sum() > 0  # the context reaches the output through cross-attention
    ckpt = UNet(**CTX, use_checkpoint=True)
    ckpt.load_state_dict(net.state_dict())
    assert torch.allclose(ckpt(x, t, context=ctx.detach()), net(x, t, context=ctx.detach()), atol=1e-6)


def test_fresh_spatial_transformers_leave_the_unet_independent_of_the_context():
    torch.manual_seed(0)
    net = UNet(**CTX)
    _perturb(net, skip="proj_out")  # everything trained except the zero-initialised transformer outputs
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([3, 40])
    assert torch.equal(net(x, t, context=_context(seed=1)), net(x, t, context=_context(seed=2)))


def test_unet_refuses_a_missing_or_unexpected_context():
    net = UNet(**CTX)
    x, t = torch.randn(1, 2, 8, 8), torch.tensor([3])
    with pytest.raises(ValueError, match="needs a context"):
        net(x, t)
    plain = UNet(**{k: v for k, v in CTX.items() if k != "context_dim"})
    with pytest.raises(ValueError, match="has no context_dim"):
        plain(x, t, context=_context(1))


# Recorded with the code before the context path existed: sha256 of "key:shape|...", number of
# tensors, and sum / abs-sum / first values of the output of seeded, perturbed nets.
GOLDEN = {
    "digits": (dict(image_size=16, in_channels=1, model_channels=32, channel_mult=[1, 2, 2], num_res_blocks=1,
                    attention_resolutions=[8, 4], num_classes=10, null_class=True, num_head_channels=32,
                    resblock_updown=True),
               "d0652ba0980be10a", 217, -95.94042323622853, 202.17067144904286,
               [-0.21967244148254395, -0.16099554300308228, 0.32722869515419006]),
    "adm": (dict(image_size=16, in_channels=3, model_channels=32, channel_mult=[1, 2], num_res_blocks=2,
                 attention_resolutions=[8], learn_sigma=True, num_heads=2, use_new_attention_order=True,
                 use_scale_shift_norm=False),
            "6c009297018e2772", 184, 84.63594294153154, 1129.4710437990725,
            [0.17141957581043243, 0.10653631389141083, 0.3294660449028015]),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_adm_layouts_are_unchanged_without_context_dim(name):
    kw, sig, n_keys, total, abs_total, first = GOLDEN[name]
    torch.manual_seed(0)
    net = UNet(**kw)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    sd = net.state_dict()
    keys = "|".join(f"{k}:{tuple(v.shape)}" for k, v in sd.items())
    assert (hashlib.sha256(keys.encode()).hexdigest()[:16], len(sd)) == (sig, n_keys)
    x = torch.randn(2, kw["in_channels"], 16, 16, generator=g)
    y = torch.tensor([1, 10]) if kw.get("num_classes") else None
    out = net(x, torch.tensor([3, 700]), y).double()
    assert out.sum().item() == pytest.approx(total, rel=1e-5, abs=1e-4)
    assert out.abs().sum().item() == pytest.approx(abs_total, rel=1e-5)
    assert out[0, 0, 0, :3].tolist() == pytest.approx(first, abs=1e-5)
