"""DDPM and DDIM samplers: single steps and whole loops against guided-diffusion, determinism."""

from __future__ import annotations

import copy

import pytest
import torch

from beatgans.diffusion import PerSampleNoise, create_diffusion, ddim_sample, ddim_step, ddpm_sample, ddpm_step

from ._oracle import F32_TOL, RecordingNoise, TinyNet, max_abs, oracle_in_float64, pair, replay_randn_like

C, SHAPE = 2, (2, 5, 5)


def _state(T, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, *SHAPE, generator=g)
    z = torch.randn(4, *SHAPE, generator=g)
    return x, z, torch.tensor([0, 1, T // 2, T - 1])


@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("spacing", [None, "250"])
def test_ddpm_step_matches_oracle(var_type, spacing):
    ours, oracle = pair("cosine", 1000, var_type=var_type, spacing=spacing)
    net = TinyNet(C, 2 * C if var_type == "learned_range" else C)
    x, z, t = _state(ours.num_timesteps)
    a = ddpm_step(ours, net, x, t, z=z)
    with replay_randn_like([z]):
        b = oracle.p_sample(net, x, t)
    assert max_abs(a["sample"], b["sample"]) <= F32_TOL
    assert max_abs(a["pred_xstart"], b["pred_xstart"]) <= F32_TOL


@pytest.mark.parametrize("eta", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("mean_type,var_type",
                         [("eps", "fixed_small"), ("x0", "fixed_large"), ("eps", "learned_range")])
def test_ddim_step_matches_oracle(eta, mean_type, var_type):
    ours, oracle = pair("linear", 1000, mean_type=mean_type, var_type=var_type, spacing="ddim25")
    net = TinyNet(C, 2 * C if var_type == "learned_range" else C)
    x, z, t = _state(ours.num_timesteps, seed=1)
    net64, x64, z64 = copy.deepcopy(net).double(), x.double(), z.double()
    with replay_randn_like([z64]), oracle_in_float64():
        exact = oracle.ddim_sample(net64, x64, t, eta=eta)["sample"]
    # Same formulas: float64 against float64.
    assert max_abs(ddim_step(ours, net64, x64, t, eta=eta, z=z64)["sample"], exact) <= 1e-10
    # Our float32 step stays within 1e-5 of the reference's exact values.
    a = ddim_step(ours, net, x, t, eta=eta, z=z)["sample"]
    assert max_abs(a, exact) <= F32_TOL
    # The reference's own float32 run differs from its exact values by up to ~1.4e-5 here (it
    # forms sqrt(1 - abar_prev) from float32 abar near 1); we tabulate that in float64.
    with replay_randn_like([z]):
        b = oracle.ddim_sample(net, x, t, eta=eta)["sample"]
    assert max_abs(a, b) <= 3 * F32_TOL


def _loops(ours, oracle, net, method, eta=0.0, model_kwargs=None, cond_fns=(None, None), B=3, dtype=torch.float32):
    noise = RecordingNoise(range(10, 10 + B), SHAPE, dtype=dtype)
    shape = (B, *SHAPE)
    if method == "ddpm":
        a = ddpm_sample(ours, net, shape, noise=noise, model_kwargs=model_kwargs, cond_fn=cond_fns[0])
    else:
        a = ddim_sample(ours, net, shape, eta=eta, noise=noise, model_kwargs=model_kwargs, cond_fn=cond_fns[0])
    x_T, steps = noise.draws[0], noise.draws[1:]
    with replay_randn_like(steps) as left:
        if method == "ddpm":
            b = oracle.p_sample_loop(net, shape, noise=x_T, model_kwargs=model_kwargs, cond_fn=cond_fns[1])
        else:
            b = oracle.ddim_sample_loop(net, shape, noise=x_T, eta=eta, model_kwargs=model_kwargs, cond_fn=cond_fns[1])
        assert not left, "the oracle consumed fewer noise draws than we made"
    return a, b


@pytest.mark.parametrize("schedule,T,spacing,var_type", [
    ("linear", 30, None, "fixed_small"), ("cosine", 30, None, "learned_range"), ("linear", 1000, "250", "fixed_large"),
    ("cosine", 1000, "90,60,60,20,20", "learned_range")])
def test_ddpm_loop_matches_oracle(schedule, T, spacing, var_type):
    ours, oracle = pair(schedule, T, var_type=var_type, spacing=spacing)
    net = TinyNet(C, 2 * C if var_type == "learned_range" else C, num_classes=3)
    kwargs = {"y": torch.tensor([0, 2, 1])}
    a, b = _loops(ours, oracle, net, "ddpm", model_kwargs=kwargs)
    assert torch.isfinite(a).all()
    assert max_abs(a, b) <= F32_TOL


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("spacing", ["ddim25", "ddim50"])
def test_ddim_loop_matches_oracle(eta, spacing):
    ours, oracle = pair("cosine", 1000, var_type="learned_range", spacing=spacing)
    net = TinyNet(C, 2 * C)
    a, b = _loops(ours, oracle, net, "ddim", eta=eta)
    assert max_abs(a, b) <= F32_TOL


@pytest.mark.parametrize("method,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)])
@pytest.mark.parametrize("spacing", [None, "50"])
def test_rescaled_timestep_loops_match_oracle(method, eta, spacing):
    """improved-diffusion's T = 4000 checkpoints: rescale_timesteps on, respaced or not (every step of a
    short T = 200 process stands in for the full chain), against the reference's whole loops."""
    T = 200 if spacing is None else 4000
    ours, oracle = pair("cosine", T, var_type="learned_range", spacing=spacing, rescale_timesteps=True)
    net = TinyNet(C, 2 * C, num_classes=3)
    kwargs = {"y": torch.tensor([0, 2, 1])}
    a, b = _loops(ours, oracle, net, method, eta=eta, model_kwargs=kwargs)
    # Float32 against the reference's float32 run: its DDIM coefficients, formed in float32 near
    # abar = 1, drift by up to ~2e-4 over a 4000-step cosine chain, so DDIM is held to float64 below.
    assert torch.isfinite(a).all() and max_abs(a, b) <= (F32_TOL if method == "ddpm" else 3e-4)
    with oracle_in_float64():
        a64, b64 = _loops(ours, oracle, copy.deepcopy(net).double(), method, eta=eta, model_kwargs=kwargs,
                          dtype=torch.float64)
    assert max_abs(a64, b64) <= 1e-9
    plain, _ = pair("cosine", T, var_type="learned_range", spacing=spacing)
    unscaled, _ = _loops(plain, oracle, net, method, eta=eta, model_kwargs=kwargs)
    assert float((unscaled - a).abs().max()) > 1e-3  # the net did see different timesteps


def _sample_in_batches(sampler, diffusion, net, seeds, batch, **kwargs):
    out = []
    for start in range(0, len(seeds), batch):
        chunk = seeds[start:start + batch]
        noise = PerSampleNoise(chunk, SHAPE)
        out.append(sampler(diffusion, net, (len(chunk), *SHAPE), noise=noise,
                           model_kwargs={"y": torch.tensor(chunk) % 3}, **kwargs))
    return torch.cat(out)


@pytest.mark.parametrize("sampler,kwargs", [(ddpm_sample, {}), (ddim_sample, {"eta": 1.0}), (ddim_sample, {})])
def test_samples_do_not_depend_on_batch_size(sampler, kwargs):
    d = create_diffusion("cosine", 1000, spacing="ddim20")
    net = TinyNet(C, C, num_classes=3)
    seeds = list(range(100, 105))
    together = _sample_in_batches(sampler, d, net, seeds, 5, **kwargs)
    apart = _sample_in_batches(sampler, d, net, seeds, 2, **kwargs)
    assert max_abs(together, apart) <= 1e-5
    # Different seeds give different samples, and a rerun repeats exactly.
    assert float((together[0] - together[1]).abs().max()) > 1e-2
    assert torch.equal(_sample_in_batches(sampler, d, net, seeds, 5, **kwargs), together)


def test_per_sample_noise():
    a = PerSampleNoise([3, 4], (2, 2))
    b = PerSampleNoise.for_indices(3, [1], (2, 2))  # seed 3 + 1 = 4
    first = a.randn()
    assert first.shape == (2, 2, 2) and torch.equal(first[1], b.randn()[0])
    assert not torch.equal(first, a.randn())  # successive draws differ
    with pytest.raises(ValueError, match="shape"):
        ddim_sample(create_diffusion("linear", 50), TinyNet(C, C), (3, *SHAPE), noise=PerSampleNoise([0, 1], SHAPE))


def test_ddim_eta0_is_deterministic_given_x_T():
    """eta = 0: DDIM draws only x_T, so two runs from the same seeds coincide and no step noise is used."""
    d = create_diffusion("linear", 1000, spacing="ddim10")
    noise = RecordingNoise([1, 2], SHAPE)
    ddim_sample(d, TinyNet(C, C), (2, *SHAPE), noise=noise)
    assert len(noise.draws) == 1
    ddpm_noise = RecordingNoise([1, 2], SHAPE)
    ddpm_sample(d, TinyNet(C, C), (2, *SHAPE), noise=ddpm_noise)
    assert len(ddpm_noise.draws) == d.num_timesteps  # x_T plus one per step t > 0


def test_ddim_with_exact_eps_recovers_data():
    """With the true noise as the prediction, deterministic DDIM inverts q_sample exactly."""
    d = create_diffusion("cosine", 1000, spacing="ddim10")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, *SHAPE, generator=g).double() * 1.8 - 0.9
    eps = torch.randn(2, *SHAPE, generator=g).double()
    x = d.q_sample(x0, torch.full((2,), d.num_timesteps - 1), eps)
    for i in range(d.num_timesteps - 1, -1, -1):
        t = torch.full((2,), i)
        x = ddim_step(d, lambda x_, t_: eps, x, t)["sample"]
    assert max_abs(x, x0) <= 1e-9
