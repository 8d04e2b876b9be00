"""AutoencoderKL: shapes for f = 2/4/8, the posterior's KL / NLL against torch.distributions, sampling, the
scale factor, the patch discriminator's losses, LPIPS from local weights, and equality with diffusers'
AutoencoderKL through the converter (diffusers is a test-only oracle)."""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from beatgans.nets import AutoencoderKL, DiagonalGaussian, compute_scale_factor
from beatgans.nets.convert import CheckpointMismatchError
from beatgans.nets.convert_diffusers import (
    autoencoder_from_diffusers_config,
    convert_diffusers_state_dict,
    load_diffusers_autoencoder,
)
from beatgans.nets.lpips import LPIPS, SLICES, build_lpips
from beatgans.nets.patchgan import PatchDiscriminator, adaptive_gan_weight, hinge_d_loss


def tiny(mult=(1, 2), **kw):
    args = {"in_channels": 1, "out_channels": 1, "base_channels": 32, "channel_mult": mult, "num_res_blocks": 1,
            "latent_channels": 3, "resolution": 16}
    args.update(kw)
    torch.manual_seed(0)
    return AutoencoderKL(**args)


@pytest.mark.parametrize("mult,f", [((1, 2), 2), ((1, 2, 2), 4), ((1, 1, 2, 2), 8)])
def test_shapes_for_each_downsampling_factor(mult, f):
    ae = tiny(mult, attn_resolutions=[16 // f])
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    post = ae.encode(x)
    assert ae.downsample_factor == f and ae.latent_channels == 3
    assert post.mean.shape == post.logvar.shape == (2, 3, 16 // f, 16 // f)
    rec, post2 = ae(x, sample_posterior=False)
    assert rec.shape == x.shape and torch.allclose(post2.mean, post.mean)
    assert ae.decode(post.mode()).shape == x.shape
    assert len(ae.encoder.levels[-1].attns) == 1 and len(ae.decoder.levels[0].attns) == 2


def test_encode_latent_scales_and_decode_latent_inverts():
    ae = tiny(scale_factor=0.25)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    z = ae.encode_latent(x)
    torch.testing.assert_close(z, ae.encode(x).mean * 0.25)
    torch.testing.assert_close(ae.decode_latent(z), ae.decode(ae.encode(x).mean), rtol=1e-5, atol=1e-5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    post = ae.encode(x)
    torch.testing.assert_close(ae.encode_latent(x, sample=True, generator=g1), post.sample(g2) * 0.25)
    assert "scale_factor" in ae.state_dict()
    fresh = tiny()
    fresh.load_state_dict(ae.state_dict())
    assert float(fresh.scale_factor) == 0.25


def test_kl_and_nll_match_torch_distributions():
    torch.manual_seed(1)
    moments = torch.randn(3, 8, 4, 4)
    post = DiagonalGaussian(moments)
    ref = Normal(post.mean, post.std)
    expected = kl_divergence(ref, Normal(torch.zeros_like(post.mean), torch.ones_like(post.std))).flatten(1).sum(1)
    torch.testing.assert_close(post.kl(), expected, rtol=1e-5, atol=1e-5)
    z = torch.randn(3, 4, 4, 4)
    torch.testing.assert_close(post.nll(z), -ref.log_prob(z).flatten(1).sum(1), rtol=1e-5, atol=1e-4)
    assert post.kl().shape == (3,)


def test_logvar_is_clamped_and_sample_is_reparameterised():
    moments = torch.cat([torch.zeros(1, 1, 2, 2), torch.tensor([[[[-100.0, 100.0], [0.0, 1.0]]]])], dim=1)
    post = DiagonalGaussian(moments)
    assert post.logvar.flatten().tolist() == [-30.0, 20.0, 0.0, 1.0]
    g = torch.Generator().manual_seed(7)
    eps = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(post.sample(g), post.mean + post.std * eps)
    assert torch.equal(post.mode(), post.mean)


def test_compute_scale_factor_is_one_over_latent_std():
    ae = tiny()
    ae.train()
    batches = [(torch.rand(4, 1, 16, 16) * 2 - 1, torch.zeros(4)) for _ in range(3)]
    expected = 1 / torch.cat([ae.encode(b[0]).mean.detach().flatten() for b in batches[:2]]).std()
    got = compute_scale_factor(ae, batches, num_batches=2)
    assert got == pytest.approx(expected.item(), rel=1e-6)
    assert ae.training  # mode restored
    sampled = compute_scale_factor(ae, [b[0] for b in batches], num_batches=2, sample=True,
                                   generator=torch.Generator().manual_seed(0))
    assert sampled != pytest.approx(got, rel=1e-6)
    with pytest.raises(ValueError, match="no batches"):
        compute_scale_factor(ae, [], num_batches=2)


def test_constructor_rejects_bad_configs_in_one_sentence():
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny(base_channels=24)
    with pytest.raises(ValueError, match="not divisible by the downsampling factor f = 8"):
        tiny((1, 1, 1, 1), resolution=20)


# ---------------------------------------------------------------------- discriminator and losses
def test_patch_discriminator_is_the_70px_patchgan_layout():
    d = PatchDiscriminator(3, 64, 3)
    assert d(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert sum(p.numel() for p in d.parameters()) == 2_765_633
    with pytest.raises(ValueError, match="at least 32 px"):
        d(torch.zeros(1, 3, 16, 16))


def test_hinge_loss_and_adaptive_weight_by_hand():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.5])
    # relu(1 - real) = [0, 0.5, 2] -> 2.5/3; relu(1 + fake) = [0, 1, 2.5] -> 3.5/3
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (2.5 / 3 + 3.5 / 3))
    w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    rec = (w ** 2).sum()        # grad 2w = [2, -4, 6], norm sqrt(56)
    g = (w * torch.tensor([0.5, 0.0, 0.0])).sum()  # grad [0.5, 0, 0], norm 0.5
    expected = 56 ** 0.5 / (0.5 + 1e-4) * 0.5
    assert adaptive_gan_weight(rec, g, w, disc_weight=0.5).item() == pytest.approx(expected, rel=1e-6)
    assert adaptive_gan_weight(rec, w.sum() * 0, w).item() == 1e4  # clamped
    assert rec.grad_fn is not None  # graphs kept for the backward pass that follows


# ---------------------------------------------------------------------- LPIPS
def _torchvision_vgg16_features():
    from torchvision.models.vgg import (  # torchvision's own VGG16 ("D") conv stack
        cfgs,
        make_layers,
    )

    return make_layers(cfgs["D"])


def _lpips_files(tmp_path):
    torch.manual_seed(0)
    vgg = {f"features.{k}": v for k, v in _torchvision_vgg16_features().state_dict().items()}
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(lins, tmp_path / "vgg.pth")
    return vgg, lins


def test_lpips_matches_the_formula_on_local_weights(tmp_path):
    vgg, lins = _lpips_files(tmp_path)
    net = build_lpips(tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    assert isinstance(net, LPIPS) and not any(p.requires_grad for p in net.parameters())
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    ref = _torchvision_vgg16_features()
    ref.load_state_dict({k[len("features."):]: v for k, v in vgg.items()})
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    hx, hy, expected = (x - shift) / scale, (y - shift) / scale, torch.zeros(2)
    for k, (a, b) in enumerate(SLICES):
        hx, hy = ref[a:b](hx), ref[a:b](hy)
        nx = hx / (hx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = hy / (hy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        expected += ((nx - ny).pow(2) * lins[f"lin{k}.model.1.weight"]).sum(1).mean((1, 2))
    torch.testing.assert_close(net(x, y), expected, rtol=1e-4, atol=1e-6)
    assert net(x, x).abs().max() == 0
    gray = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(net(gray, -gray), net(gray.expand(-1, 3, -1, -1), -gray.expand(-1, 3, -1, -1)))


def test_lpips_is_off_without_paths_and_refuses_missing_files(tmp_path):
    assert build_lpips(None, None) is None
    with pytest.raises(ValueError, match="needs both"):
        build_lpips(tmp_path / "vgg16.pth", None)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        build_lpips(tmp_path / "missing.pth", tmp_path / "also_missing.pth")


# ---------------------------------------------------------------------- diffusers converter
DIFFUSERS_LAYOUTS = {
    "f2": {"block_out_channels": (32, 64), "layers_per_block": 1, "latent_channels": 4},
    "f4": {"block_out_channels": (32, 64, 64), "layers_per_block": 2, "latent_channels": 3},
    "f8": {"block_out_channels": (32, 32, 64, 64), "layers_per_block": 2, "latent_channels": 4},
    "f4_attn": {"block_out_channels": (32, 64, 64), "layers_per_block": 1, "latent_channels": 4,
                "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
                "up_block_types": ("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D")},
}


def _diffusers_vae(name):
    diffusers = pytest.importorskip("diffusers")
    cfg = dict(DIFFUSERS_LAYOUTS[name])
    n = len(cfg["block_out_channels"])
    cfg.setdefault("down_block_types", ("DownEncoderBlock2D",) * n)
    cfg.setdefault("up_block_types", ("UpDecoderBlock2D",) * n)
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, sample_size=32, **cfg).eval()
    with torch.no_grad():  # move norms and biases off their initial values so every tensor matters
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vae


@pytest.mark.parametrize("name", list(DIFFUSERS_LAYOUTS))
def test_converted_diffusers_weights_give_equal_outputs(name):
    vae = _diffusers_vae(name)
    ours = autoencoder_from_diffusers_config(vae.config)
    load_diffusers_autoencoder(ours, vae.state_dict())
    assert ours.downsample_factor == 2 ** (len(vae.config.block_out_channels) - 1)
    assert float(ours.scale_factor) == pytest.approx(vae.config.scaling_factor)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ref, got = vae.encode(x).latent_dist, ours.encode(x)
        z = torch.randn_like(ref.mean)
        torch.testing.assert_close(got.mean, ref.mean, rtol=0, atol=1e-5)
        torch.testing.assert_close(got.logvar, ref.logvar, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.decode(z), vae.decode(z).sample, rtol=0, atol=1e-5)


def test_converter_accepts_the_old_attention_key_style():
    vae = _diffusers_vae("f2")
    old = {}
    for k, v in vae.state_dict().items():
        for new, legacy in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            if f".{new}." in k:
                k = k.replace(f".{new}.", f".{legacy}.")
                v = v[:, :, None, None] if v.dim() == 2 else v  # some releases stored them as 1x1 convs
        old[k] = v
    ours = load_diffusers_autoencoder(autoencoder_from_diffusers_config(vae.config), old)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x).mean, vae.encode(x).latent_dist.mean, rtol=0, atol=1e-5)


def test_converter_names_missing_unexpected_and_mismatched_keys():
    vae = _diffusers_vae("f2")
    sd = dict(vae.state_dict())
    sd.pop("decoder.conv_out.bias")
    sd["encoder.extra.weight"] = torch.zeros(1)
    ours = autoencoder_from_diffusers_config(vae.config)
    with pytest.raises(CheckpointMismatchError, match=r"missing \(1\): decoder.conv_out.bias.*unexpected \(1\): "
                                                      r"encoder.extra.weight"):
        load_diffusers_autoencoder(ours, sd)
    wrong = tiny((1, 2), in_channels=3, out_channels=3, latent_channels=4, num_res_blocks=1, resolution=32,
                 base_channels=64)
    with pytest.raises(CheckpointMismatchError, match=r"mismatched .*encoder.conv_in.weight \(32, 3, 3, 3\) vs ours "
                                                      r"\(64, 3, 3, 3\)"):
        load_diffusers_autoencoder(wrong, vae.state_dict())
    converted, unknown = convert_diffusers_state_dict({"encoder.mid_block.attentions.0.to_q.weight": torch.eye(2),
                                                       "foo": torch.zeros(1)})
    assert list(converted) == ["encoder.mid.attn.q.weight"] and unknown == ["foo"]
    with pytest.raises(ValueError, match="act_fn must be silu"):
        autoencoder_from_diffusers_config({**vae.config, "act_fn": "relu"})
