"""Likelihood terms and bits/dim against guided-diffusion."""

from __future__ import annotations

import pytest
import torch
from guided_diffusion import losses as oracle_losses

from beatgans.diffusion import PerSampleNoise, create_diffusion, discretized_gaussian_log_likelihood, normal_kl

from ._oracle import F32_TOL, TinyNet, max_abs, pair

C = 2


def _images(B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 256, (B, C, 4, 4), generator=g).float() / 127.5 - 1
    x0[0, 0, 0, :2] = torch.tensor([-1.0, 1.0])  # the two open-ended edge bins
    return x0


def test_normal_kl_and_decoder_likelihood_match_oracle():
    g = torch.Generator().manual_seed(1)
    m1, m2, l1, l2 = (torch.randn(3, 2, 4, 4, generator=g) for _ in range(4))
    assert max_abs(normal_kl(m1, l1, m2, l2), oracle_losses.normal_kl(m1, l1, m2, l2)) <= F32_TOL
    assert max_abs(normal_kl(m1, l1, 0.0, 0.0), oracle_losses.normal_kl(m1, l1, 0.0, 0.0)) <= F32_TOL
    assert float(normal_kl(m1, l1, m1, l1).abs().max()) <= 1e-6
    x0 = _images()
    log_scales = torch.randn(x0.shape, generator=g) - 3
    ours = discretized_gaussian_log_likelihood(x0, means=m1.clamp(-1, 1), log_scales=log_scales)
    ref = oracle_losses.discretized_gaussian_log_likelihood(x0, means=m1.clamp(-1, 1), log_scales=log_scales)
    assert max_abs(ours, ref) <= F32_TOL and (ours <= 0).all()


def test_decoder_probabilities_sum_to_one():
    """Summed over all 256 levels the discretised Gaussian is a distribution (edge bins open)."""
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, log_scale in ((0.1, -2.0), (-0.95, -4.0), (0.999, -1.0)):
        logp = discretized_gaussian_log_likelihood(levels, means=torch.full_like(levels, mean),
                                                   log_scales=torch.full_like(levels, log_scale))
        assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("var_type,spacing", [("learned_range", None), ("fixed_large", None), ("learned_range", "10")])
def test_calc_bpd_loop_matches_oracle(var_type, spacing):
    ours, oracle = pair("cosine", 30, var_type=var_type, spacing=spacing)
    net = TinyNet(C, 2 * C if var_type == "learned_range" else C, num_classes=3)
    x0, kw = _images(), {"y": torch.tensor([0, 1, 2])}
    torch.manual_seed(5)  # both loops draw torch.randn_like(x0) once per step, from T-1 down to 0
    a = ours.calc_bpd_loop(net, x0, model_kwargs=kw)
    torch.manual_seed(5)
    b = oracle.calc_bpd_loop(net, x0, model_kwargs=kw)
    # The reference stacks its columns from t = T-1 down to 0; ours has vb[:, t].
    for key in ("vb", "xstart_mse", "mse"):
        assert max_abs(a[key].flip(1), b[key]) <= F32_TOL, key
    assert max_abs(a["prior_bpd"], b["prior_bpd"]) <= F32_TOL
    # The total sums T terms of up to ~100 bits in a different order (t ascending here, descending
    # there): equal to float32 rounding of the total, i.e. 1e-5 relative.
    assert max_abs(a["total_bpd"], b["total_bpd"]) <= F32_TOL * float(b["total_bpd"].abs().max())
    assert a["vb"].shape == (3, ours.num_timesteps)
    assert torch.allclose(a["total_bpd"], a["vb"].sum(1) + a["prior_bpd"])


def test_bpd_with_per_sample_noise_is_batch_independent():
    d = create_diffusion("linear", 25, var_type="learned_range")
    net = TinyNet(C, 2 * C)
    x0 = _images(B=4)
    whole = d.calc_bpd_loop(net, x0, noise=PerSampleNoise(range(4), x0.shape[1:]))["total_bpd"]
    halves = [d.calc_bpd_loop(net, x0[i:i + 2], noise=PerSampleNoise(range(i, i + 2), x0.shape[1:]))["total_bpd"]
              for i in (0, 2)]
    assert max_abs(whole, torch.cat(halves)) <= 1e-5


def test_bpd_of_a_perfect_denoiser_is_lower():
    """An eps-net that knows x0 beats a random one by a wide margin: the bound measures fit."""
    d = create_diffusion("cosine", 40)
    x0 = _images(B=2)
    oracle_net = lambda x, t: d.predict_eps_from_x0(x, t, x0)  # noqa: E731
    good = d.calc_bpd_loop(oracle_net, x0)["total_bpd"]
    bad = d.calc_bpd_loop(TinyNet(C, C), x0)["total_bpd"]
    assert (good < bad).all() and (good > 0).all()
