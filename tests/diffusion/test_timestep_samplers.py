"""Timestep samplers: IDDPM's loss-second-moment weights against guided-diffusion; importance weights."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from beatgans.diffusion import LossSecondMomentResampler, UniformSampler, create_timestep_sampler

resample = pytest.importorskip("guided_diffusion.resample")  # the oracle is a test extra: skip without it

T = 12


def _oracle_resampler(monkeypatch, **kwargs):
    # The reference still uses np.int, removed from NumPy 2; give it back for this test only.
    monkeypatch.setattr(np, "int", int, raising=False)
    return resample.LossSecondMomentResampler(SimpleNamespace(num_timesteps=T), **kwargs)


def test_loss_second_moment_weights_match_oracle(monkeypatch):
    ours = LossSecondMomentResampler(T, history=4, uniform_prob=0.01)
    oracle = _oracle_resampler(monkeypatch, history_per_term=4, uniform_prob=0.01)
    rng = np.random.default_rng(0)
    warm_seen = False
    for _step in range(40):
        t = rng.integers(0, T, size=5)
        losses = rng.random(5) * (t + 1)  # later steps have larger losses
        ours.update(torch.from_numpy(t), torch.from_numpy(losses))
        oracle.update_with_all_losses(t.tolist(), losses.tolist())
        np.testing.assert_allclose(ours.weights(), oracle.weights(), rtol=0, atol=1e-12)
        assert ours.warmed_up == oracle._warmed_up()
        warm_seen |= ours.warmed_up
    assert warm_seen
    w = ours.weights()
    assert w.sum() == pytest.approx(1.0) and w[-1] > w[0]  # larger losses get sampled more


def test_uniform_until_warm_and_state_round_trip():
    s = LossSecondMomentResampler(T, history=2)
    s.update(torch.arange(T), torch.ones(T))
    assert not s.warmed_up and (s.weights() == 1).all()
    s.update(torch.arange(T), torch.arange(T, dtype=torch.float64) + 1)
    assert s.warmed_up
    other = LossSecondMomentResampler(T, history=2)
    other.load_state_dict(s.state_dict())
    np.testing.assert_array_equal(other.weights(), s.weights())


def test_importance_weights_are_unbiased():
    """E_p[w(t) f(t)] = mean_t f(t): reweighted losses estimate the uniform objective."""
    s = LossSecondMomentResampler(T, history=1, uniform_prob=0.05)
    s.update(torch.arange(T), torch.linspace(0.1, 5.0, T))
    p = s.weights() / s.weights().sum()
    g = torch.Generator().manual_seed(0)
    t, w = s.sample(200_000, generator=g)
    assert t.dtype == torch.long and w.dtype == torch.float32 and t.min() >= 0 and t.max() < T
    np.testing.assert_allclose(w.numpy(), 1.0 / (T * p[t.numpy()]), rtol=1e-6)
    freq = np.bincount(t.numpy(), minlength=T) / len(t)
    np.testing.assert_allclose(freq, p, atol=0.01)
    f = torch.linspace(-1.0, 3.0, T).double()
    assert float((w.double() * f[t]).mean()) == pytest.approx(float(f.mean()), abs=0.03)


def test_uniform_sampler_and_factory():
    t, w = UniformSampler(T).sample(64, generator=torch.Generator().manual_seed(1))
    assert (w == 1).all() and t.shape == (64,) and len(set(t.tolist())) > 6
    t2, _ = UniformSampler(T).sample(64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(t, t2)
    assert isinstance(create_timestep_sampler("loss-second-moment", T), LossSecondMomentResampler)
    assert type(create_timestep_sampler("uniform", T)) is UniformSampler
    with pytest.raises(ValueError):
        create_timestep_sampler("priority", T)
