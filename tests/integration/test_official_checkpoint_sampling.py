"""`beatgans-sample ckpt=<OpenAI .pt> net=imagenet256_cond diffusion=adm` samples exactly as guided-diffusion's
sampling script would with the same flags, weights, labels and noise (reduced width / resolution for CPU)."""

import numpy as np
import pytest
import torch

from beatgans.cli.sample import generate
from beatgans.diffusion import PerSampleNoise
from tests.conftest import compose

gd_unet = pytest.importorskip("guided_diffusion.unet")
gd = pytest.importorskip("guided_diffusion.gaussian_diffusion")
gd_respace = pytest.importorskip("guided_diffusion.respace")


def _oracle_model():
    # The 256x256_diffusion.pt flags (learned sigma, BigGAN resblocks, AdaGN, attention at 32/16/8 px,
    # 64 channels per head), with width and resolution reduced so the CPU runs it in seconds.
    torch.manual_seed(0)
    model = gd_unet.UNetModel(image_size=32, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=2,
                              attention_resolutions=(1, 2, 4), dropout=0.0, channel_mult=(1, 2, 2),
                              num_classes=1000, num_head_channels=32, use_scale_shift_norm=True,
                              resblock_updown=True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # leave no zero-initialised layer, so every weight matters
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.03)
    return model.eval()


@pytest.mark.parametrize("sampler,steps", [("ddpm", "10"), ("ddim", "ddim10")])
def test_sample_cli_equals_guided_diffusion_script(tmp_path, sampler, steps):
    oracle = _oracle_model()
    ckpt = tmp_path / "256x256_diffusion.pt"
    torch.save(oracle.state_dict(), ckpt)
    n, labels = 3, [5, 17, 999]
    cfg = compose("sample", [f"ckpt={ckpt}", "net=imagenet256_cond", "diffusion=adm", f"sampler={sampler}",
                             f"sampler.steps={steps}", f"num_samples={n}", "batch_size=2", f"classes={labels}",
                             "net.image_size=32", "net.model_channels=32", "net.channel_mult=[1,2,2]",
                             "net.num_head_channels=32", "seed=11", "judge=false"], output_dir=tmp_path / "out")
    ours, ours_labels, _ = generate(cfg)
    assert ours_labels.tolist() == labels

    # guided-diffusion: create_gaussian_diffusion(linear, learn_sigma, timestep_respacing) + p_sample_loop
    # (or ddim_sample_loop), fed our per-sample noise: x_T first, then one draw per step.
    betas = gd.get_named_beta_schedule("linear", 1000)
    process = gd_respace.SpacedDiffusion(gd_respace.space_timesteps(1000, steps), betas=betas,
                                         model_mean_type=gd.ModelMeanType.EPSILON,
                                         model_var_type=gd.ModelVarType.LEARNED_RANGE,
                                         loss_type=gd.LossType.RESCALED_MSE, rescale_timesteps=False)
    noise = PerSampleNoise([11 + i for i in range(n)], (3, 32, 32), "cpu")
    x_T = noise.randn()
    draws = [noise.randn() for _ in range(len(process.use_timesteps))]
    original = torch.randn_like
    torch.randn_like = lambda x, *a, **k: draws.pop(0).to(x) if draws else torch.zeros_like(x)
    try:
        loop = process.p_sample_loop if sampler == "ddpm" else process.ddim_sample_loop
        with torch.no_grad():
            ref = loop(oracle, (n, 3, 32, 32), noise=x_T, clip_denoised=True,
                       model_kwargs={"y": torch.tensor(labels)})
    finally:
        torch.randn_like = original
    ref_u8 = ((ref + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    diff = np.abs(ours.astype(np.int16) - ref_u8.astype(np.int16))
    # Identical up to float rounding landing on the other side of a quantisation boundary.
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
