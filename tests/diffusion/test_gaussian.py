"""GaussianDiffusion against guided-diffusion: q_sample, posterior, p_mean_variance, training losses."""

from __future__ import annotations

import itertools

import pytest
import torch

from beatgans.diffusion import create_diffusion

from ._oracle import F32_TOL, TinyNet, max_abs, pair

C = 2


def _batch(T, seed=0, B=5):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(B, C, 6, 6, generator=g) * 2 - 1
    noise = torch.randn(B, C, 6, 6, generator=g)
    t = torch.tensor([0, 1, T // 2, T - 2, T - 1])[:B]
    return x0, noise, t


@pytest.mark.parametrize("schedule,T", [("linear", 1000), ("cosine", 1000), ("cosine", 40)])
def test_q_sample_and_posterior_match_oracle(schedule, T):
    ours, oracle = pair(schedule, T)
    x0, noise, t = _batch(T)
    x_t = ours.q_sample(x0, t, noise)
    assert max_abs(x_t, oracle.q_sample(x0, t, noise)) <= F32_TOL
    for a, b in zip(ours.q_posterior_mean_variance(x0, x_t, t), oracle.q_posterior_mean_variance(x0, x_t, t)):
        assert max_abs(a, b) <= F32_TOL
    for a, b in zip(ours.q_mean_variance(x0, t), oracle.q_mean_variance(x0, t)):
        assert max_abs(a.expand_as(x0), b) <= F32_TOL
    # float64 inputs keep float64 coefficients: agreement with the float64 closed form.
    x0d, nd = x0.double(), noise.double()
    ab = torch.from_numpy(ours.alphas_cumprod)[t].view(-1, 1, 1, 1)
    assert max_abs(ours.q_sample(x0d, t, nd), ab.sqrt() * x0d + (1 - ab).sqrt() * nd) <= 1e-12


def test_forward_identities():
    d = create_diffusion("linear", 100)
    x0, noise, t = _batch(100)
    x0, noise = x0.double(), noise.double()
    x_t = d.q_sample(x0, t, noise)
    # eps <-> x0 conversions invert each other, and recover the true x0 / eps.
    assert max_abs(d.predict_x0_from_eps(x_t, t, noise), x0) <= 1e-9
    assert max_abs(d.predict_eps_from_x0(x_t, t, x0), noise) <= 1e-9
    assert max_abs(d.predict_x0_from_v(x_t, t, d.v_target(x0, t, noise)), x0) <= 1e-9
    # The posterior mean with the true x0 at t = 0 is x0 itself (coef1 = 1, coef2 = 0).
    mean, var, _ = d.q_posterior_mean_variance(x0, x_t, t)
    assert max_abs(mean[0], x0[0]) <= 1e-12 and float(var[0].abs().max()) == 0.0


CASES = list(itertools.product(["fixed_small", "fixed_large", "learned_range"], ["eps", "x0"], [True, False]))


@pytest.mark.parametrize("var_type,mean_type,clip", CASES)
@pytest.mark.parametrize("spacing", [None, "ddim25"])
def test_p_mean_variance_matches_oracle(var_type, mean_type, clip, spacing):
    ours, oracle = pair("cosine", 1000, mean_type, var_type, spacing=spacing)
    net = TinyNet(C, 2 * C if var_type == "learned_range" else C, num_classes=3)
    x, _, t = _batch(ours.num_timesteps, seed=1)
    x = x * 2  # outside [-1, 1] so that clipping matters
    kwargs = {"y": torch.tensor([0, 1, 2, 3, 0])}
    a = ours.p_mean_variance(net, x, t, clip_denoised=clip, model_kwargs=kwargs)
    b = oracle.p_mean_variance(net, x, t, clip_denoised=clip, model_kwargs=kwargs)
    for key in ("mean", "variance", "log_variance", "pred_xstart"):
        assert max_abs(a[key], b[key].expand_as(x)) <= F32_TOL, key
    assert max_abs(a["eps"], oracle._predict_eps_from_xstart(x, t, b["pred_xstart"])) <= 2e-5


def test_v_prediction_equals_eps_prediction():
    """A v-net built from an eps-net must give the same reverse step."""
    eps_d = create_diffusion("cosine", 100, mean_type="eps", var_type="learned_range")
    v_d = create_diffusion("cosine", 100, mean_type="v", var_type="learned_range")
    net = TinyNet(C, 2 * C).double()

    def v_net(x, t):
        out = net(x, t)
        eps, var = out[:, :C], out[:, C:]
        x0 = eps_d.predict_x0_from_eps(x, t, eps)
        return torch.cat([v_d.v_target(x0, t, eps), var], dim=1)

    x, _, t = _batch(100, seed=2)
    x = x.double()
    for clip in (True, False):
        a = eps_d.p_mean_variance(net, x, t, clip_denoised=clip)
        b = v_d.p_mean_variance(v_net, x, t, clip_denoised=clip)
        for key in ("mean", "log_variance", "pred_xstart", "eps"):
            assert max_abs(a[key], b[key]) <= 1e-9, key


def test_network_sees_original_timesteps():
    seen = []
    d = create_diffusion("linear", 1000, spacing="ddim25")

    def net(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    d.p_mean_variance(net, torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 24]))
    d.training_losses(net, torch.zeros(3, 1, 2, 2), torch.tensor([24, 2, 0]))
    assert seen[0].tolist() == [0, 40, 960] and seen[1].tolist() == [960, 80, 0]


@pytest.mark.parametrize("spacing", [None, "ddim25"])
def test_rescaled_timesteps_reach_the_network(spacing):
    """rescale_timesteps: the net sees float32 t_original * 1000 / T_original, bit for bit as the reference."""
    seen = []
    d = create_diffusion("cosine", 4000, spacing=spacing, rescale_timesteps=True)
    _, oracle = pair("cosine", 4000, spacing=spacing, rescale_timesteps=True)

    def net(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    t = torch.tensor([0, 1, d.num_timesteps - 1])
    d.p_mean_variance(net, torch.zeros(3, 1, 2, 2), t)
    oracle.p_mean_variance(net, torch.zeros(3, 1, 2, 2), t)
    ours, theirs = seen
    assert ours.dtype == theirs.dtype == torch.float32 and torch.equal(ours, theirs)
    expected = [0.0, 0.25, 999.75] if spacing is None else [0.0, 40.0, 960.0]  # ddim25 of 4000: stride 160
    assert ours.tolist() == expected
    assert d.respace("10").rescale_timesteps and not create_diffusion("cosine", 4000).rescale_timesteps


def _losses_and_grads_match(ours, oracle, var_type, seed):
    """Ours vs the oracle's training_losses on one batch of 8-bit-level images: every returned term within
    F32_TOL and every parameter gradient of the loss within 1e-4 (relative). Returns (net, x0, t, kwargs,
    noise, our losses, oracle losses)."""
    net = TinyNet(C, 2 * C if var_type == "learned_range" else C, num_classes=3)
    x0, noise, t = _batch(ours.num_timesteps, seed=seed)
    x0 = (x0 * 127.5).round() / 127.5  # 8-bit levels, as the decoder likelihood assumes
    kwargs = {"y": torch.tensor([2, 1, 0, 3, 1])}
    a = ours.training_losses(net, x0, t, model_kwargs=kwargs, noise=noise)
    grads_a = torch.autograd.grad(a["loss"].sum(), list(net.parameters()))
    b = oracle.training_losses(net, x0, t, model_kwargs=kwargs, noise=noise)
    grads_b = torch.autograd.grad(b["loss"].sum(), list(net.parameters()))
    for key in b:
        assert max_abs(a[key], b[key]) <= F32_TOL, key
    for ga, gb in zip(grads_a, grads_b):
        assert max_abs(ga, gb) <= 1e-4 * max(1.0, float(gb.abs().max()))
    return net, x0, t, kwargs, noise, a, b


@pytest.mark.parametrize("loss_type,var_type", [("hybrid", "learned_range"), ("mse", "fixed_large"),
                                                ("rescaled_kl", "learned_range")])
@pytest.mark.parametrize("spacing", [None, "90,60,60,20,20"])
def test_rescaled_training_losses_match_oracle(loss_type, var_type, spacing):
    ours, oracle = pair("cosine", 4000, "eps", var_type, loss_type, spacing=spacing, rescale_timesteps=True)
    net, x0, t, kwargs, noise, a, _ = _losses_and_grads_match(ours, oracle, var_type, seed=5)
    # the rescaling matters: unscaled timesteps give a different loss for this t-dependent net
    plain, _ = pair("cosine", 4000, "eps", var_type, loss_type, spacing=spacing)
    assert float(
        (plain.training_losses(net, x0, t, model_kwargs=kwargs, noise=noise)["loss"] - a["loss"]).abs().max()
    ) > 1e-3


LOSS_CASES = [("mse", "fixed_small", "eps"), ("mse", "fixed_large", "x0"), ("mse", "learned_range", "eps"),
              ("hybrid", "learned_range", "eps"), ("hybrid", "learned_range", "x0"), ("kl", "learned_range", "eps"),
              ("kl", "fixed_small", "eps"), ("rescaled_kl", "learned_range", "eps")]


@pytest.mark.parametrize("loss_type,var_type,mean_type", LOSS_CASES)
@pytest.mark.parametrize("spacing", [None, "90,60,60,20,20"])
def test_training_losses_and_gradients_match_oracle(loss_type, var_type, mean_type, spacing):
    ours, oracle = pair("linear", 1000, mean_type, var_type, loss_type, spacing=spacing)
    _, _, _, _, _, a, b = _losses_and_grads_match(ours, oracle, var_type, seed=3)
    assert set(b) <= set(a) and a["loss"].shape == (5,)


def test_hybrid_vb_trains_only_the_variance():
    d = create_diffusion("cosine", 100, var_type="learned_range", loss_type="hybrid")
    x0, noise, t = _batch(99, seed=4)  # t + 1 then spans 1..99
    out = TinyNet(C, 2 * C)(x0, t).detach().requires_grad_(True)
    losses = d.training_losses(lambda x, t: out, x0, t + 1, noise=noise)
    grad_vb = torch.autograd.grad(losses["vb"].sum(), out, retain_graph=True)[0]
    assert float(grad_vb[:, :C].abs().max()) == 0.0 and float(grad_vb[:, C:].abs().max()) > 0
    # hybrid = mse + vb * T / 1000 with T of this process.
    plain = create_diffusion("cosine", 100, var_type="learned_range", loss_type="mse")
    vb_plain = plain.training_losses(lambda x, t: out, x0, t + 1, noise=noise)["vb"]
    assert max_abs(losses["vb"], vb_plain * 0.1) <= 1e-7


def test_half_precision_model_output_is_upcast():
    d = create_diffusion("linear", 10)
    x0, noise, t = _batch(10)
    out = d.training_losses(lambda x, t: (x * 0.5).bfloat16(), x0, t, noise=noise)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"]).all()
