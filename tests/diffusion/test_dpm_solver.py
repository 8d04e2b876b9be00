"""DPM-Solver++ 2M / 3M and Heun: equality with diffusers' DPMSolverMultistepScheduler (test-only oracle),
convergence orders on Gaussian data where the probability-flow ODE is solved exactly, and guidance."""

import math

import numpy as np
import pytest
import torch

from beatgans.diffusion import (
    ClassifierFreeGuidance,
    GaussianDiffusion,
    create_diffusion,
    ddim_sample,
    dpm_solver_sample,
    heun_sample,
    solver_timesteps,
)

diffusers = pytest.importorskip("diffusers")


class FixedNoise:
    """A PerSampleNoise stand-in whose single draw is a given x_T."""

    def __init__(self, x):
        self.x, self.shape = x, tuple(x.shape[1:])

    def __len__(self):
        return self.x.shape[0]

    def randn(self):
        return self.x.clone()


def toy_model(diffusion=None, mean_type="eps", learned=False, seed=0):
    """A denoiser of the right scale, float64, that both samplers call the same way: the exact prediction for
    data N(0, 0.5^2 I) plus a smooth nonlinear term of (x, t); `learned` appends 3 variance channels."""
    g = torch.Generator().manual_seed(seed)
    w = 0.3 * torch.randn(3, 3, generator=g, dtype=torch.float64)
    abar = torch.from_numpy((diffusion or create_diffusion("linear", 1000)).alphas_cumprod)
    calls = []

    def model(x, t, **kwargs):
        calls.append((x.clone(), t.clone()))
        a, sg = abar[t].sqrt().view(-1, 1, 1, 1), (1 - abar[t]).sqrt().view(-1, 1, 1, 1)
        eps = sg * x / (0.25 * a**2 + sg**2)
        x0 = 0.25 * a * x / (0.25 * a**2 + sg**2)
        exact = {"eps": eps, "x0": x0, "v": a * eps - sg * x0}[mean_type]
        mixed = torch.einsum("oc,bchw->bohw", w, x)
        out = exact + 0.05 * torch.tanh(mixed + torch.sin(t.to(x.dtype) / 97.0).view(-1, 1, 1, 1))
        return torch.cat([out, torch.tanh(mixed)], 1) if learned else out

    model.calls = calls
    return model


def diffusers_trajectory(diffusion, model, x_T, grid, *, order, prediction, learned=False, clip=False):
    """diffusers' multistep DPM-Solver++ on our float64 noise levels at our timesteps; returns (inputs, x)."""
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(
        num_train_timesteps=diffusion.num_timesteps, trained_betas=diffusion.betas, solver_order=order,
        prediction_type=prediction, algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True,
        final_sigmas_type="zero", timestep_spacing="linspace", thresholding=clip, sample_max_value=1.0,
        variance_type="learned_range" if learned else None)
    sched.set_timesteps(timesteps=list(grid))
    # Its tables are float32; use the float64 ones (sigma here is diffusers' sqrt((1 - abar) / abar)).
    abar = diffusion.alphas_cumprod[list(grid)]
    sched.sigmas = torch.from_numpy(np.append(np.sqrt((1 - abar) / abar), 0.0))
    x = x_T.clone()
    for t in sched.timesteps:
        out = model(x, t.expand(x.shape[0]))
        x = sched.step(out, t, x).prev_sample
    return x


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("mean_type,prediction,learned,clip", [
    ("eps", "epsilon", False, False), ("x0", "sample", False, False), ("v", "v_prediction", False, False),
    ("eps", "epsilon", True, False), ("eps", "epsilon", False, True)])
@pytest.mark.parametrize("skip,steps", [("time_uniform", 12), ("logsnr", 20)])
def test_trajectory_matches_diffusers(order, mean_type, prediction, learned, clip, skip, steps):
    diffusion = create_diffusion("linear", 1000, mean_type=mean_type,
                                 var_type="learned_range" if learned else "fixed_small")
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grid = solver_timesteps(diffusion, steps, skip)
    ours_model, ref_model = (toy_model(diffusion, mean_type, learned) for _ in range(2))
    ours = dpm_solver_sample(diffusion, ours_model, x_T.shape, steps=steps, order=order, skip=skip,
                             noise=FixedNoise(x_T), clip_denoised=clip, reference_3m=True)
    ref = diffusers_trajectory(diffusion, ref_model, x_T, grid, order=order, prediction=prediction,
                               learned=learned, clip=clip)
    # Same timesteps fed to the net, and the same inputs at every one of them (the whole trajectory).
    assert [int(t[0]) for _, t in ours_model.calls] == grid
    assert [int(t[0]) for _, t in ref_model.calls] == grid
    for (a, _), (b, _) in zip(ours_model.calls, ref_model.calls):
        torch.testing.assert_close(a, b.to(a.dtype), rtol=0, atol=1e-5)
    torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=0, atol=1e-5)


def test_logsnr_grid_is_diffusers_lu_lambdas_grid():
    from diffusers import DPMSolverMultistepScheduler

    diffusion = create_diffusion("linear", 1000)
    for steps in (5, 10, 20, 25):
        sched = DPMSolverMultistepScheduler(use_lu_lambdas=True, final_sigmas_type="zero")
        sched.set_timesteps(steps)
        assert solver_timesteps(diffusion, steps, "logsnr") == sched.timesteps.tolist()
    assert solver_timesteps(diffusion, 5, "time_uniform") == [999, 749, 500, 250, 0]
    with pytest.raises(ValueError, match="between 2 and T=1000"):
        solver_timesteps(diffusion, 1)
    with pytest.raises(ValueError, match="skip must be one of"):
        solver_timesteps(diffusion, 10, "karras")


# ---------------------------------------------------------------- exactness on Gaussian data
def _gaussian_problem(T=721):
    # lambda linear in t, so both grids are uniform in lambda and fall on integer steps when (T - 1) / (N - 1)
    # is an integer: the measured rate is the solver's, not an artefact of rounding the grid.
    lam = np.linspace(6.0, -6.0, T)
    abar = 1 / (1 + np.exp(-2 * lam))
    diffusion = GaussianDiffusion(1 - abar / np.append(1.0, abar[:-1]))
    g = torch.Generator().manual_seed(0)
    mu = torch.rand(2, 4, 4, generator=g, dtype=torch.float64) - 0.5
    s = 0.1 + 0.5 * torch.rand(2, 4, 4, generator=g, dtype=torch.float64)
    ab = torch.from_numpy(diffusion.alphas_cumprod)

    def eps_model(x, t, **kwargs):  # E[eps | x_t] for x0 ~ N(mu, s^2 I)
        a, sg = ab[t].sqrt().view(-1, 1, 1, 1), (1 - ab[t]).sqrt().view(-1, 1, 1, 1)
        return sg * (x - a * mu) / (a**2 * s**2 + sg**2)

    x_T = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    # The flow keeps (x_t - a mu) / sqrt(a^2 s^2 + sg^2) fixed; the samplers end with the data prediction at t=0.
    (aT, sT), (a0, s0) = [(ab[i].sqrt(), (1 - ab[i]).sqrt()) for i in (T - 1, 0)]
    x_0 = a0 * mu + ((a0**2 * s**2 + s0**2) / (aT**2 * s**2 + sT**2)).sqrt() * (x_T - aT * mu)
    exact = mu + a0 * s**2 * (x_0 - a0 * mu) / (a0**2 * s**2 + s0**2)
    return diffusion, eps_model, x_T, exact


def _slope(run, points=(41, 61, 81, 121, 181)):
    diffusion, model, x_T, exact = _gaussian_problem()
    errs = [(run(diffusion, model, x_T, n) - exact).abs().max().item() for n in points]
    assert all(np.diff(errs) < 0), errs
    return np.polyfit(np.log(np.array(points) - 1), np.log(errs), 1)[0]


def _ddim(d, m, x, n):
    process = d.respace(use_timesteps=sorted(solver_timesteps(d, n)))
    return ddim_sample(process, m, x.shape, noise=FixedNoise(x), clip_denoised=False)


def _dpm(order, reference=False):
    return lambda d, m, x, n: dpm_solver_sample(d, m, x.shape, steps=n, order=order, noise=FixedNoise(x),
                                                clip_denoised=False, lower_order_final=False,
                                                reference_3m=reference)


@pytest.mark.parametrize("name,run,low,high", [
    ("ddim", _ddim, 0.9, 1.1),
    ("2m", _dpm(2), 1.8, 2.3),
    ("3m", _dpm(3), 2.8, 4.2),
    ("3m reference coefficient", _dpm(3, reference=True), 1.8, 2.4),
    ("heun", lambda d, m, x, n: heun_sample(d, m, x.shape, steps=n, noise=FixedNoise(x), clip_denoised=False),
     1.8, 2.4)])
def test_error_falls_at_the_solver_order(name, run, low, high):
    slope = -_slope(run)
    assert low <= slope <= high, f"{name}: error ~ steps^-{slope:.2f}"


def test_higher_order_is_more_accurate_at_equal_nfe():
    diffusion, model, x_T, exact = _gaussian_problem()
    err = {name: (run(diffusion, model, x_T, 25) - exact).abs().max().item()
           for name, run in (("ddim", _ddim), ("2m", _dpm(2)), ("3m", _dpm(3)))}
    assert err["3m"] < err["2m"] / 3 and err["2m"] < err["ddim"] / 5, err


# ---------------------------------------------------------------- guidance and parameterisations
def test_classifier_guidance_is_the_guided_eps_at_original_timesteps():
    base = create_diffusion("linear", 200)
    model = toy_model()
    g = torch.Generator().manual_seed(2)
    pull = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    seen = []

    def cond_fn(x, t, y=None):
        seen.append(t.clone())
        return pull * torch.cos(t.to(x.dtype) / 50).view(-1, 1, 1, 1) + 0.1 * x

    sq = torch.from_numpy(np.sqrt(1 - base.alphas_cumprod))

    def guided_model(x, t, y=None):  # eps_hat = eps - sqrt(1 - abar_t) * grad, written out
        return model(x, t) - sq[t].view(-1, 1, 1, 1) * cond_fn(x, t, y)

    x_T = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    kw = {"steps": 10, "order": 2, "skip": "logsnr", "noise": FixedNoise(x_T), "clip_denoised": False,
              "model_kwargs": {"y": torch.tensor([1, 2])}}
    guided = dpm_solver_sample(base, model, x_T.shape, cond_fn=cond_fn, **kw)
    assert [int(t[0]) for t in seen] == solver_timesteps(base, 10, "logsnr")
    torch.testing.assert_close(guided, dpm_solver_sample(base, guided_model, x_T.shape, **kw), rtol=0, atol=1e-10)
    unguided = dpm_solver_sample(base, model, x_T.shape, **kw)
    assert (guided - unguided).abs().max() > 0.1


def test_cfg_wrapper_mixes_one_batched_call_per_step():
    base = create_diffusion("cosine", 100)
    calls = []

    def net(x, t, y):
        calls.append(x.shape[0])
        return torch.tanh(x + y.to(x.dtype).view(-1, 1, 1, 1) / 10 + t.to(x.dtype).view(-1, 1, 1, 1) / 100)

    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    kw = {"steps": 8, "order": 3, "noise": FixedNoise(x_T), "model_kwargs": {"y": torch.tensor([0, 4])}}
    cond = dpm_solver_sample(base, net, x_T.shape, **kw)
    calls.clear()
    w1 = dpm_solver_sample(base, ClassifierFreeGuidance(net, 1.0, null_label=10), x_T.shape, **kw)
    assert calls == [4] * 8  # one doubled-batch forward per grid point: NFE 8
    torch.testing.assert_close(w1, cond, rtol=0, atol=1e-6)
    w3 = dpm_solver_sample(base, ClassifierFreeGuidance(net, 3.0, null_label=10), x_T.shape, **kw)
    assert (w3 - cond).abs().max() > 1e-3


def test_heun_costs_two_calls_per_step_and_first_order_dpm_step_is_ddim():
    base = create_diffusion("linear", 100)
    model = toy_model()
    x_T = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    heun_sample(base, model, x_T.shape, steps=6, noise=FixedNoise(x_T))
    assert len(model.calls) == 2 * 6 - 1
    # Two grid points: one first-order step then x0 at t = 0, exactly DDIM over the same two steps.
    dpm = dpm_solver_sample(base, model, x_T.shape, steps=2, noise=FixedNoise(x_T))
    ddim = ddim_sample(base.respace(use_timesteps=[0, 99]), model, x_T.shape, noise=FixedNoise(x_T))
    torch.testing.assert_close(dpm, ddim, rtol=0, atol=1e-12)
    assert math.isclose(float(dpm.abs().max()), float(ddim.abs().max()))
