"""Test helpers: run the guided-diffusion package's sampling loops on our per-sample noise (the oracle side of
the checkpoint-sampling tests). Import only after `pytest.importorskip("guided_diffusion...")`."""

from __future__ import annotations

import numpy as np
import torch

from beatgans.diffusion import PerSampleNoise
from tests.conftest import perturb_weights


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with seeded noise (std 0.03, seed 1) added to every weight, so no zero-initialised layer hides a
    difference; returned in eval mode."""
    return perturb_weights(model, 0.03, seed=1).eval()


def oracle_samples_uint8(model, schedule: str, num_timesteps: int, steps: str, sampler: str, seeds: list[int],
                         shape: tuple[int, ...], rescale_timesteps: bool, model_kwargs: dict | None = None
                         ) -> np.ndarray:
    """guided-diffusion's `create_gaussian_diffusion` (learned range sigma, eps, respaced by `steps`) +
    `p_sample_loop` (`sampler="ddpm"`) or `ddim_sample_loop`, fed our noise: x_T from `PerSampleNoise(seeds)`,
    then one draw per step. Returns uint8 NHWC, quantised as beatgans-sample does."""
    import guided_diffusion.gaussian_diffusion as gd
    import guided_diffusion.respace as gd_respace

    process = gd_respace.SpacedDiffusion(gd_respace.space_timesteps(num_timesteps, steps),
                                         betas=gd.get_named_beta_schedule(schedule, num_timesteps),
                                         model_mean_type=gd.ModelMeanType.EPSILON,
                                         model_var_type=gd.ModelVarType.LEARNED_RANGE,
                                         loss_type=gd.LossType.RESCALED_MSE, rescale_timesteps=rescale_timesteps)
    noise = PerSampleNoise(seeds, shape, "cpu")
    x_T = noise.randn()
    draws = [noise.randn() for _ in range(len(process.use_timesteps))]
    original = torch.randn_like
    torch.randn_like = lambda x, *a, **k: draws.pop(0).to(x) if draws else torch.zeros_like(x)
    try:
        loop = process.p_sample_loop if sampler == "ddpm" else process.ddim_sample_loop
        with torch.no_grad():
            ref = loop(model, (len(seeds), *shape), noise=x_T, clip_denoised=True, model_kwargs=model_kwargs)
    finally:
        torch.randn_like = original
    return ((ref + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def assert_same_uint8(ours: np.ndarray, ref: np.ndarray) -> None:
    """Identical up to float rounding landing on the other side of a quantisation boundary."""
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99, (diff.max(), (diff == 0).mean())
