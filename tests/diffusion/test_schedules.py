"""Schedules, derived tables and respacing: golden values and equality with guided-diffusion."""

from __future__ import annotations

import numpy as np
import pytest

from beatgans.diffusion import GaussianDiffusion, create_diffusion, get_named_beta_schedule, space_timesteps

from ._oracle import F64_TOL, gd, max_abs, pair, respace

TABLES = ["betas", "alphas_cumprod", "alphas_cumprod_prev", "alphas_cumprod_next", "sqrt_alphas_cumprod",
          "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
          "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
          "posterior_mean_coef1", "posterior_mean_coef2"]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 37])
def test_betas_and_tables_match_oracle(schedule, T):
    betas = get_named_beta_schedule(schedule, T)
    assert betas.dtype == np.float64 and betas.shape == (T,)
    assert max_abs(betas, gd.get_named_beta_schedule(schedule, T)) <= F64_TOL
    ours, oracle = pair(schedule, T)
    for name in TABLES:
        table = getattr(ours, name)
        assert table.dtype == np.float64, name
        assert max_abs(table, getattr(oracle, name)) <= F64_TOL, name


def test_linear_golden_values():
    betas = get_named_beta_schedule("linear", 1000)
    assert betas[0] == pytest.approx(1e-4, abs=1e-15) and betas[-1] == pytest.approx(0.02, abs=1e-15)
    # "scale = 1000 / T": a 100-step schedule spans 10x larger betas.
    short = get_named_beta_schedule("linear", 100)
    assert short[0] == pytest.approx(1e-3) and short[-1] == pytest.approx(0.2)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-9)


def test_cosine_golden_values():
    betas = get_named_beta_schedule("cosine", 1000)
    # The last beta is capped at 0.999 (abar reaches 0 at s = 1).
    assert betas[-1] == pytest.approx(0.999) and (betas <= 0.999).all() and (np.diff(betas) > 0).all()
    abar = np.cumprod(1 - betas)
    f = lambda s: np.cos((s + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    # Away from the cap, abar follows the closed form f(t / T) / f(0) exactly.
    for t in (0, 10, 500, 900):
        assert abar[t] == pytest.approx(f((t + 1) / 1000) / f(0), rel=1e-9)


def test_table_identities():
    d = create_diffusion("cosine", 50)
    np.testing.assert_allclose(d.alphas_cumprod_prev[1:], d.alphas_cumprod[:-1])
    assert d.alphas_cumprod_prev[0] == 1.0 and d.posterior_variance[0] == 0.0
    assert d.posterior_log_variance_clipped[0] == np.log(d.posterior_variance[1])
    assert d.fixed_large_variance[0] == d.posterior_variance[1]
    np.testing.assert_allclose(d.fixed_large_variance[1:], d.betas[1:])
    # Posterior variance equals the reverse of the forward step's noise mixing (DDPM eq. 7).
    np.testing.assert_allclose(d.posterior_variance[1:],
                               d.betas[1:] * (1 - d.alphas_cumprod[:-1]) / (1 - d.alphas_cumprod[1:]))
    # sigma_ddim at eta = 1 equals the DDPM posterior standard deviation.
    np.testing.assert_allclose(d.ddim_sigma_eta1 ** 2, d.posterior_variance, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("spacing", ["250", "ddim25", "90,60,60,20,20", "10", "ddim50", "1", "7,3,1", "1000",
                                     "ddim1000", [5, 5]])
def test_space_timesteps_matches_oracle(spacing):
    ours = space_timesteps(1000, spacing)
    assert ours == sorted(respace.space_timesteps(1000, spacing))


@pytest.mark.parametrize("T,spacing", [(37, "5"), (37, "3,4,5"), (100, "ddim10"), (101, "ddim11"), (9, "9")])
def test_space_timesteps_short_T_matches_oracle(T, spacing):
    assert space_timesteps(T, spacing) == sorted(respace.space_timesteps(T, spacing))


def test_space_timesteps_golden():
    steps = space_timesteps(1000, "250")
    assert len(steps) == 250 and steps[:4] == [0, 4, 8, 12] and steps[-2:] == [995, 999]
    assert space_timesteps(1000, "ddim25") == list(range(0, 1000, 40))
    sections = space_timesteps(1000, "90,60,60,20,20")
    assert len(sections) == 250 and sections[0] == 0 and sections[-1] == 999
    assert sections[89] == 199  # the first section (0..199) keeps both of its ends


def test_space_timesteps_errors():
    with pytest.raises(ValueError):
        space_timesteps(1000, "ddim400")  # strides 2 and 3 give 500 and 334 steps
    with pytest.raises(ValueError):
        space_timesteps(10, "6,6")  # a 5-step section cannot keep 6


@pytest.mark.parametrize("spacing", ["250", "ddim25", "90,60,60,20,20"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_respaced_tables_match_oracle(schedule, spacing):
    ours, oracle = pair(schedule, 1000, spacing=spacing)
    assert ours.timestep_map.tolist() == list(oracle.timestep_map)
    assert ours.base_num_timesteps == 1000 and ours.num_timesteps == len(oracle.betas)
    for name in TABLES:
        assert max_abs(getattr(ours, name), getattr(oracle, name)) <= F64_TOL, name


def test_respacing_keeps_alphas_cumprod_and_composes():
    base = create_diffusion("cosine", 1000)
    sub = base.respace("ddim50")
    np.testing.assert_allclose(sub.alphas_cumprod, base.alphas_cumprod[sub.timestep_map.numpy()], rtol=1e-12)
    # Respacing a respaced process maps back to the original steps.
    subsub = sub.respace("ddim10")
    assert subsub.timestep_map.tolist() == list(range(0, 1000, 100))
    assert subsub.base_num_timesteps == 1000
    np.testing.assert_allclose(subsub.alphas_cumprod, base.alphas_cumprod[::100], rtol=1e-12)
    # Keeping every step is the identity.
    full = base.respace("1000")
    np.testing.assert_allclose(full.betas, base.betas, rtol=1e-10)
    assert create_diffusion("linear", 1000, spacing="250").num_timesteps == 250


def test_bad_configuration_errors():
    betas = get_named_beta_schedule("linear", 10)
    with pytest.raises(ValueError, match="learned_range"):
        GaussianDiffusion(betas, loss_type="hybrid")
    with pytest.raises(ValueError, match="mean_type"):
        GaussianDiffusion(betas, mean_type="xprev")
    with pytest.raises(ValueError, match="schedule"):
        get_named_beta_schedule("sigmoid", 10)


def test_short_linear_schedule_is_capped_and_finite():
    # The reference formula gives beta_T = 20 / T, i.e. >= 1 for T <= 20 (NaN samples); we cap it.
    assert (get_named_beta_schedule("linear", 21) == gd.get_named_beta_schedule("linear", 21)).all()
    betas = get_named_beta_schedule("linear", 20)
    assert betas.max() == 0.999 and betas[:-1].max() < 0.999
    d = create_diffusion("linear", 10)
    assert np.isfinite(d.sqrt_recip_alphas_cumprod).all() and np.isfinite(d.posterior_log_variance_clipped).all()
