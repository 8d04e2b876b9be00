"""Latent diffusion: the DiffusionModule composed with a first stage and a condition encoder; latent sampling,
classifier-free guidance with prompts, and a tiny text-to-digit run through beatgans-train / beatgans-sample."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch

from beatgans.diffusion import create_diffusion
from beatgans.diffusion.guidance import ClassifierFreeGuidance
from beatgans.diffusion.latent import sample_latent
from beatgans.diffusion.sampling import sample_with
from beatgans.lit.diffusion_module import DiffusionModule
from beatgans.nets import UNet
from beatgans.nets.conditioning import ClassTokenEncoder, TextTransformerEncoder, WordTokenizer
from beatgans.nets.first_stage import IdentityFirstStage
from tests.conftest import TINY_TRAIN, compose, perturb_weights

NET = dict(image_size=8, in_channels=1, model_channels=32, channel_mult=[1, 2], num_res_blocks=1,
           attention_resolutions=[4], num_head_channels=16)


def _text_encoder():
    torch.manual_seed(0)
    tok = WordTokenizer.from_texts(["a handwritten seven", "the digit 3", "number one"], max_length=6)
    return perturb_weights(TextTransformerEncoder(tok, context_dim=16, depth=1, heads=2), 0.05, seed=5).eval()


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_latent_sampling_is_bit_equal_to_pixel_sampling_with_the_identity_first_stage(sampler):
    torch.manual_seed(0)
    net = perturb_weights(UNet(**NET, num_classes=3), 0.05).eval()
    diffusion = create_diffusion(num_timesteps=40)
    labels = torch.tensor([0, 2, 1, 2])
    for batch_size in (4, 1):
        pixel = sample_with(net, diffusion, 4, (1, 8, 8), seed=3, sampler=sampler, steps=5, labels=labels,
                            batch_size=batch_size)
        latent = sample_latent(net, diffusion, 4, first_stage=IdentityFirstStage(1), conditions=labels, seed=3,
                               sampler=sampler, steps=5, batch_size=batch_size)
        assert torch.equal(latent, pixel)


def test_context_sampling_feeds_the_encoded_condition():
    torch.manual_seed(0)
    net = perturb_weights(UNet(**NET, context_dim=16), 0.05).eval()
    enc = perturb_weights(ClassTokenEncoder(3, 16), 0.05, seed=2).eval()
    diffusion = create_diffusion(num_timesteps=40)
    labels = torch.tensor([0, 2, 1])
    context, mask = enc(labels)
    want = sample_with(net, diffusion, 3, (1, 8, 8), seed=1, steps=4,
                       model_kwargs={"context": context, "context_mask": mask}, batch_size=2)
    got = sample_latent(net, diffusion, 3, first_stage=IdentityFirstStage(1), cond_encoder=enc, conditions=labels,
                        seed=1, steps=4, batch_size=2)
    assert torch.equal(got, want)


class _Spy(torch.nn.Module):
    """Records the contexts the net is called with."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x, t, **kw):
        self.seen.append(kw["context"].clone())
        return self.net(x, t, **kw)


def test_classifier_free_guidance_with_prompts():
    torch.manual_seed(0)
    net = perturb_weights(UNet(**NET, context_dim=16), 0.05).eval()
    enc = _text_encoder()
    prompts = ["a handwritten seven", "the digit 3"]
    context, mask = enc(prompts)
    null = enc(enc.null_condition(1))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 17])
    spy = _Spy(net)
    cond = net(x, t, context=context, context_mask=mask)
    uncond = net(x, t, context=null[0].expand(2, -1, -1), context_mask=null[1].expand(2, -1))
    assert torch.allclose(ClassifierFreeGuidance(spy, 1.0, null_context=null)(x, t, context=context,
                                                                           context_mask=mask), cond, atol=1e-5)
    assert torch.equal(spy.seen[0][2:], null[0].expand(2, -1, -1))  # the unconditional half: the empty prompt
    assert torch.equal(spy.seen[0][:2], context)
    mixed = ClassifierFreeGuidance(net, 3.0, null_context=null)(x, t, context=context, context_mask=mask)
    assert torch.allclose(mixed, uncond + 3.0 * (cond - uncond), atol=1e-5)
    assert not torch.allclose(cond, uncond, atol=1e-4)
    diffusion = create_diffusion(num_timesteps=40)
    kw = dict(first_stage=IdentityFirstStage(1), cond_encoder=enc, conditions=prompts, seed=0, steps=4)
    assert torch.allclose(sample_latent(net, diffusion, 2, guidance_scale=1.0, **kw),
                          sample_latent(net, diffusion, 2, **kw), atol=1e-4)


def _module(encoder, **kw):
    net = UNet(**NET, context_dim=encoder.context_dim)
    return DiffusionModule(net, create_diffusion(num_timesteps=40), partial(torch.optim.AdamW, lr=1e-3),
                           ema_rates=[0.9], first_stage=IdentityFirstStage(1), cond_encoder=encoder, **kw)


def test_module_trains_the_encoder_with_its_own_ema_and_drops_prompts_to_the_empty_one():
    enc = _text_encoder()
    module = _module(enc, p_uncond=0.5)
    plain = DiffusionModule(UNet(**NET, context_dim=16), create_diffusion(num_timesteps=40),
                            partial(torch.optim.AdamW, lr=1e-3), ema_rates=[0.9])
    keys = set(module.state_dict())
    # The net and its EMA keep their layout; the encoder and its EMA come under their own prefixes.
    assert {k for k in keys if k.startswith(("net.", "ema."))} == set(plain.state_dict())
    assert {k.split(".")[0] for k in keys} == {"net", "ema", "cond_encoder", "cond_ema"}
    ids = {id(p) for p in module.trainable_parameters()}
    assert all(id(p) in ids for p in enc.parameters())
    assert not any(id(p) in ids for p in module.cond_ema.parameters())
    seen = []
    enc.register_forward_pre_hook(lambda m, args: seen.append(list(args[0])))
    g = torch.Generator().manual_seed(0)
    module._model_kwargs(["a handwritten seven"] * 200, drop=True, generator=g)
    dropped = seen[0].count("")
    assert 60 < dropped < 140 and set(seen[0]) == {"", "a handwritten seven"}
    module.train()
    assert not module.first_stage.training and module.net.training and enc.training


def test_module_sample_images_decodes_prompted_latents():
    module = _module(_text_encoder(), sample_prompts=["the digit 3", "number one"])
    images = module.sample_images(3, seed=0, steps=3)
    assert images.shape == (3, 1, 8, 8)
    again = module.sample_images(3, seed=0, steps=3, prompts=["the digit 3", "number one"])
    assert torch.equal(images, again)


# ------------------------------------------------------------------ end to end through the entry points
LDM_TINY = TINY_TRAIN + ["net.image_size=8", "net.context_dim=${cond_encoder.context_dim}",
                         "cond_encoder.context_dim=32", "callbacks.sample_grid.on_train_end=false"]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    from beatgans.cli.train import train

    out = tmp_path_factory.mktemp("ldm_text")
    cfg = compose("train", ["experiment=digits/ldm_text", *LDM_TINY, "cond_encoder.depth=1"], output_dir=out)
    metrics = train(cfg)
    assert metrics["global_step"] == 3
    return out


def test_text_to_digit_run_samples_prompts_with_cfg(text_run, tmp_path):
    from beatgans.cli.sample import sample

    prompts = '["a handwritten seven","the handwritten digit three"]'
    cfg = compose("sample", [f"run={text_run}", "sampler.steps=3", "num_samples=5", "batch_size=2",
                             "guidance=cfg", "guidance.scale=3", f"prompts={prompts}"], output_dir=tmp_path)
    metrics = sample(cfg)
    data = np.load(metrics["samples_npz"])
    assert data["arr_0"].shape == (5, 8, 8, 1) and data["arr_1"].tolist() == [7, 3, 7, 3, 7]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["prompts"] == ["a handwritten seven", "the handwritten digit three"] and "target_accuracy" in saved
    one = compose("sample", [f"run={text_run}", "sampler.steps=3", "num_samples=5", "batch_size=5",
                             "guidance=cfg", "guidance.scale=3", f"prompts={prompts}", "judge=false"],
                  output_dir=tmp_path / "b")
    from beatgans.cli.sample import generate

    assert np.array_equal(generate(one)[0], data["arr_0"])  # per-sample seeds: batch size does not matter


def test_latent_run_refuses_classifier_guidance(text_run, tmp_path):
    from beatgans.cli.loading import RunError
    from beatgans.cli.sample import generate

    cfg = compose("sample", [f"run={text_run}", "guidance=classifier", "num_samples=2"], output_dir=tmp_path)
    with pytest.raises(RunError, match="not available for a latent / cross-attention run"):
        generate(cfg)


def test_class_token_run_trains_and_samples_classes(tmp_path):
    from beatgans.cli.sample import generate
    from beatgans.cli.train import train

    cfg = compose("train", ["experiment=digits/ldm_class", *LDM_TINY, "trainer.max_steps=2"], output_dir=tmp_path / "r")
    train(cfg)
    scfg = compose("sample", [f"run={tmp_path / 'r'}", "sampler.steps=3", "num_samples=3", "classes=[4]",
                              "guidance=cfg", "guidance.scale=2", "judge=false"], output_dir=tmp_path / "s")
    images, labels, _ = generate(scfg)
    assert images.shape == (3, 8, 8, 1) and labels.tolist() == [4, 4, 4]
    bad = compose("sample", [f"run={tmp_path / 'r'}", "num_samples=2", "prompts=[a seven]"], output_dir=tmp_path / "t")
    with pytest.raises(ValueError, match="not conditioned on text"):
        generate(bad)


@pytest.mark.parametrize("override, message", [
    (["net.context_dim=8"], "net.context_dim=8 but the condition encoder gives 32-wide tokens"),
    (["data=digits", "data.num_classes=null"],
     "the condition encoder reads text but data DigitsDataModule gives labels"),
    (["net.image_size=4"], "set net.image_size=8"),
    (["task.sample_prompts=null"], "set task.sample_prompts"),
])
def test_bad_latent_configs_fail_before_training(tmp_path, override, message):
    from beatgans.cli.train import train

    cfg = compose("train", ["experiment=digits/ldm_text", *LDM_TINY, *override], output_dir=tmp_path)
    with pytest.raises(ValueError, match=message):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_text_run_resumes_exactly(tmp_path):
    """4 steps straight == 2 steps, resume, 2 more: the net, the text encoder and both EMAs (captions are drawn
    from the global RNG, which the checkpoint restores)."""
    from beatgans.cli.train import train

    common = ["experiment=digits/ldm_text", *LDM_TINY, "cond_encoder.depth=1", "task.ema_rates=[0.9]",
              "callbacks.model_checkpoint.every_n_train_steps=2"]
    train(compose("train", [*common, "trainer.max_steps=4"], output_dir=tmp_path / "straight"))
    train(compose("train", [*common, "trainer.max_steps=2"], output_dir=tmp_path / "resumed"))
    train(compose("train", [*common, "trainer.max_steps=4", "ckpt_path=last"], output_dir=tmp_path / "resumed"))
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
            for r in ("straight", "resumed"))
    assert a.keys() == b.keys() and any(k.startswith("cond_ema.") for k in a)
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------ the trained autoencoder as the first stage
@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    """A tiny digits autoencoder (16 px -> z (3, 8, 8)) trained for 2 iterations."""
    from beatgans.cli.train import train
    from tests.lit.test_autoencoder_module import TINY_AE

    out = tmp_path_factory.mktemp("ae")
    train(compose("train", [*TINY_AE, "trainer.max_steps=2", "task.discriminator=null"], output_dir=out))
    return out


def _ldm_on_ae(ae_run, *extra):
    pixel = [o for o in LDM_TINY if not o.startswith(("data.image_size", "net.image_size"))]
    return ["experiment=digits/ldm_text", *pixel, "cond_encoder.depth=1", "first_stage=autoencoder",
            f"first_stage.run={ae_run}", *extra]


def test_text_ldm_on_a_trained_autoencoder_trains_and_samples_decoded_prompts(ae_run, tmp_path):
    from beatgans.cli.sample import sample
    from beatgans.cli.train import train
    from beatgans.lit.autoencoder_module import load_autoencoder

    cfg = compose("train", _ldm_on_ae(ae_run), output_dir=tmp_path / "ldm")
    assert (cfg.net.image_size, cfg.net.in_channels) == (8, 3)  # sized from the first stage's latents
    train(cfg)
    state = torch.load(tmp_path / "ldm" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    ae = load_autoencoder(ae_run)
    for k, v in ae.state_dict().items():  # the frozen first stage travels, unchanged, in the LDM checkpoint
        assert torch.equal(state[f"first_stage.{k}"], v), k
    assert float(state["first_stage.scale_factor"]) != 1.0
    assert state["net.stem.weight"].shape[1] == 3 and state["net.out_conv.weight"].shape[0] == 3

    prompts = '["a handwritten seven","the handwritten digit three"]'  # the second is a held-out phrasing
    scfg = compose("sample", [f"run={tmp_path / 'ldm'}", "sampler.steps=3", "num_samples=4", "batch_size=4",
                              "guidance=cfg", "guidance.scale=3", f"prompts={prompts}"], output_dir=tmp_path / "s")
    data = np.load(sample(scfg)["samples_npz"])
    assert data["arr_0"].shape == (4, 16, 16, 1) and data["arr_1"].tolist() == [7, 3, 7, 3]  # decoded, pixel size
    # the same latents decoded by hand: the npz holds D(z / scale) of the sampled latents
    from beatgans.cli.latent import load_latent_parts
    from beatgans.cli.loading import load_model

    loaded = load_model(str(tmp_path / "ldm"), None, None, None)
    parts = load_latent_parts(loaded.config, loaded.ckpt_path)
    images = sample_latent(loaded.net, loaded.diffusion, 2, first_stage=parts.first_stage,
                           cond_encoder=parts.cond_encoder, guidance_scale=3.0, steps=3,
                           conditions=["a handwritten seven", "the handwritten digit three"])
    ref = ((images + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(ref, data["arr_0"][:2])


def test_autoencoder_first_stage_refuses_a_latent_shape_it_does_not_make(ae_run, tmp_path):
    from beatgans.cli.train import train

    cfg = compose("train", _ldm_on_ae(ae_run, "first_stage.latent_size=4"), output_dir=tmp_path / "r")
    with pytest.raises(Exception, match="set first_stage.latent_channels=3 first_stage.latent_size=8"):
        train(cfg)
    assert not (tmp_path / "r" / "checkpoints").exists()
