"""GAN networks: shapes, t-conditioning, labels, spectral norm."""

from __future__ import annotations

import pytest
import torch

from beatgans.nets.gan import DCGANDiscriminator, DCGANGenerator, SNGANDiscriminator, SNGANGenerator
from beatgans.nets.toy import ToyDiscriminator, ToyGenerator


@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("family", ["dcgan", "sngan"])
def test_image_nets_shapes_and_t_conditioning(family, size):
    torch.manual_seed(0)
    families = {"dcgan": (DCGANGenerator, DCGANDiscriminator), "sngan": (SNGANGenerator, SNGANDiscriminator)}
    G_cls, D_cls = families[family]
    G = G_cls(image_size=size, channels=1, z_dim=16, base=8, num_classes=10)
    D = D_cls(image_size=size, channels=1, base=8, num_classes=10)
    z, y = torch.randn(4, 16), torch.tensor([0, 1, 2, 3])
    x = G(z, y)
    assert x.shape == (4, 1, size, size) and x.abs().max() <= 1
    t0, t1 = torch.zeros(4, dtype=torch.long), torch.full((4,), 300)
    out0, out1 = D(x, t0, y), D(x, t1, y)
    assert out0.shape == (4,)
    assert not torch.allclose(out0, out1)  # the logit depends on t
    assert not torch.allclose(out0, D(x, t0, (y + 1) % 10))  # and on the label
    with pytest.raises(ValueError):
        D(x, t0)


def test_sngan_discriminator_is_spectrally_normalised():
    D = SNGANDiscriminator(image_size=16, channels=1, base=8)
    names = [n for n, _ in D.named_parameters()]
    assert any("parametrizations.weight.original" in n for n in names)


def test_toy_nets():
    G, D = ToyGenerator(z_dim=2), ToyDiscriminator()
    hidden = [m for m in G.body if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in hidden] == [128, 128]
    x = G(torch.randn(5, 2))
    assert x.shape == (5, 2)
    out = D(x, torch.zeros(5, dtype=torch.long))
    assert out.shape == (5,)
    assert not torch.allclose(out, D(x, torch.full((5,), 50)))


def test_bad_image_size():
    with pytest.raises(ValueError):
        DCGANGenerator(image_size=48)
