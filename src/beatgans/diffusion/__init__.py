"""Pure-torch Gaussian diffusion: schedules, respacing, losses, NLL, samplers and guidance.

No Lightning, no Hydra: usable directly from a notebook::

    from beatgans.diffusion import create_diffusion, ddim_sample, PerSampleNoise
    diffusion = create_diffusion("cosine", 1000, var_type="learned_range", loss_type="hybrid")
    sampler = diffusion.respace("ddim25")
"""

from .dpm_solver import dpm_solver_sample, heun_sample, solver_timesteps
from .gaussian import LOSS_TYPES, MEAN_TYPES, VAR_TYPES, GaussianDiffusion, create_diffusion
from .guidance import ClassifierFreeGuidance, IgnoreLabels, classifier_cond_fn, condition_mean, condition_score
from .losses import approx_standard_normal_cdf, discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .nll import calc_bpd_loop, prior_bpd
from .samplers import PerSampleNoise, ddim_sample, ddim_step, ddpm_sample, ddpm_step
from .sampling import respaced, sample_with, sampler_nfe
from .schedules import betas_from_alpha_bar, get_named_beta_schedule, respaced_betas, space_timesteps
from .timestep_samplers import LossSecondMomentResampler, UniformSampler, create_timestep_sampler

__all__ = [
    "GaussianDiffusion", "create_diffusion", "MEAN_TYPES", "VAR_TYPES", "LOSS_TYPES",
    "get_named_beta_schedule", "betas_from_alpha_bar", "space_timesteps", "respaced_betas",
    "normal_kl", "approx_standard_normal_cdf", "discretized_gaussian_log_likelihood", "mean_flat",
    "calc_bpd_loop", "prior_bpd",
    "PerSampleNoise", "ddpm_step", "ddim_step", "ddpm_sample", "ddim_sample", "sample_with", "respaced",
    "dpm_solver_sample", "heun_sample", "solver_timesteps", "sampler_nfe",
    "classifier_cond_fn", "condition_mean", "condition_score", "ClassifierFreeGuidance", "IgnoreLabels",
    "UniformSampler", "LossSecondMomentResampler", "create_timestep_sampler",
]
