"""`beatgans-sample ckpt=<improved-diffusion .pt> net=iddpm_cifar10 diffusion=iddpm_t4000` samples exactly as
improved-diffusion's image_sample.py does with the checkpoint's flags (rescale_timesteps=True, T = 4000),
checked against the guided-diffusion package's SpacedDiffusion with the same option (width reduced for CPU)."""

import numpy as np
import pytest
import torch

from beatgans.cli.sample import generate
from tests.conftest import compose
from tests.oracle_sampling import assert_same_uint8, oracle_samples_uint8, perturbed

gd_unet = pytest.importorskip("guided_diffusion.unet")
pytest.importorskip("guided_diffusion.respace")


def _oracle_model():
    # cifar10_uncond_50M_500K.pt's layout (improved-diffusion create_model at 32 px: multipliers 1,2,2,2,
    # 3 blocks, attention at 16 and 8 px with 4 heads, AdaGN, learned sigma), width 128 reduced to 32.
    torch.manual_seed(0)
    model = gd_unet.UNetModel(image_size=32, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=3,
                              attention_resolutions=(2, 4), dropout=0.0, channel_mult=(1, 2, 2, 2), num_heads=4,
                              use_scale_shift_norm=True)
    return perturbed(model)


def _overrides(ckpt, sampler, steps, n):
    return [f"ckpt={ckpt}", "net=iddpm_cifar10", "diffusion=iddpm_t4000", f"sampler={sampler}",
            f"sampler.steps={steps}", f"num_samples={n}", "batch_size=2", "net.model_channels=32", "seed=5",
            "judge=false"]


@pytest.mark.parametrize("sampler,steps", [("ddpm", "10"), ("ddim", "ddim10")])
def test_sample_cli_equals_improved_diffusion_script(tmp_path, sampler, steps):
    oracle = _oracle_model()
    ckpt = tmp_path / "cifar10_uncond_50M_500K.pt"
    torch.save(oracle.state_dict(), ckpt)
    n = 3
    cfg = compose("sample", _overrides(ckpt, sampler, steps, n), output_dir=tmp_path / "out")
    ours, _, _ = generate(cfg)

    # improved-diffusion: create_gaussian_diffusion(steps=4000, learn_sigma, cosine, rescale_timesteps=True,
    # rescale_learned_sigmas=True, timestep_respacing) + p_sample_loop / ddim_sample_loop, fed our noise.
    ref_u8 = oracle_samples_uint8(oracle, "cosine", 4000, steps, sampler, [5 + i for i in range(n)], (3, 32, 32),
                                  rescale_timesteps=True)
    assert_same_uint8(ours, ref_u8)
    if sampler == "ddpm":
        return
    # Without the rescaling the same checkpoint gives other images.
    plain = compose("sample", [*_overrides(ckpt, sampler, steps, n), "diffusion.rescale_timesteps=false"],
                    output_dir=tmp_path / "plain")
    other, _, _ = generate(plain)
    assert np.abs(other.astype(np.int16) - ref_u8.astype(np.int16)).max() > 10

