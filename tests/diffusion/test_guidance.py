"""Classifier guidance against guided-diffusion's condition_mean / condition_score; CFG identities."""

from __future__ import annotations

import contextlib
import copy
import functools

import pytest
import torch

from beatgans.diffusion import (
    ClassifierFreeGuidance,
    IgnoreLabels,
    classifier_cond_fn,
    condition_mean,
    condition_score,
    create_diffusion,
    ddim_sample,
    ddim_step,
    ddpm_sample,
    ddpm_step,
)

from ._oracle import (
    F32_TOL,
    RecordingNoise,
    TinyClassifier,
    TinyNet,
    max_abs,
    oracle_in_float64,
    pair,
    reference_cond_fn,
    replay_randn_like,
)

C, SHAPE, K = 2, (2, 5, 5), 3


def _state(T, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, *SHAPE, generator=g)
    z = torch.randn(4, *SHAPE, generator=g)
    return x, z, torch.tensor([0, 1, T // 2, T - 1]), {"y": torch.tensor([0, 2, 1, 2])}


def test_classifier_cond_fn_is_scaled_log_prob_gradient():
    clf = TinyClassifier(C, K)
    x, _, t, kw = _state(100)
    ours = classifier_cond_fn(clf, 3.0)(x, t, **kw)
    assert max_abs(ours, reference_cond_fn(clf, 3.0)(x, t, **kw)) <= 1e-6
    # Finite-difference check of one coordinate of grad log p(y | x).
    def logp(xx):
        return torch.log_softmax(clf(xx, t), -1)[range(4), kw["y"]].sum()
    h = 1e-3
    bump = torch.zeros_like(x)
    bump[1, 0, 2, 3] = h
    fd = (logp(x + bump) - logp(x - bump)) / (2 * h)
    assert abs(float(fd) * 3.0 - float(ours[1, 0, 2, 3])) <= 1e-2 * max(1.0, abs(float(fd)))
    with torch.no_grad():  # the sampler runs under no_grad; the gradient must still be taken
        assert torch.equal(classifier_cond_fn(clf, 3.0)(x, t, **kw), ours)
    with pytest.raises(ValueError, match="labels"):
        classifier_cond_fn(clf, 1.0)(x, t)


@pytest.mark.parametrize("var_type", ["fixed_small", "learned_range"])
@pytest.mark.parametrize("spacing", [None, "250"])
def test_guided_ddpm_step_matches_condition_mean(var_type, spacing):
    ours, oracle = pair("linear", 1000, var_type=var_type, spacing=spacing)
    net = TinyNet(C, 2 * C if var_type == "learned_range" else C, num_classes=K)
    clf = TinyClassifier(C, K)
    x, z, t, kw = _state(ours.num_timesteps, seed=1)
    a = ddpm_step(ours, net, x, t, z=z, model_kwargs=kw, cond_fn=classifier_cond_fn(clf, 4.0))
    with replay_randn_like([z]):
        b = oracle.p_sample(net, x, t, model_kwargs=kw, cond_fn=reference_cond_fn(clf, 4.0))
    assert max_abs(a["sample"], b["sample"]) <= F32_TOL
    # The guided mean alone, through the public helper.
    out_a = ours.p_mean_variance(net, x, t, model_kwargs=kw)
    out_b = oracle.p_mean_variance(net, x, t, model_kwargs=kw)
    mean_a = condition_mean(ours, classifier_cond_fn(clf, 4.0), out_a, x, t, kw)
    mean_b = oracle.condition_mean(reference_cond_fn(clf, 4.0), out_b, x, t, model_kwargs=kw)
    assert max_abs(mean_a, mean_b) <= F32_TOL
    assert float((mean_a - out_a["mean"]).abs().max()) > 1e-4  # guidance did move the mean


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_guided_ddim_step_matches_condition_score(eta):
    ours, oracle = pair("cosine", 1000, var_type="learned_range", spacing="ddim25")
    net, clf = TinyNet(C, 2 * C, num_classes=K), TinyClassifier(C, K)
    x, z, t, kw = _state(ours.num_timesteps, seed=2)
    out_a = ours.p_mean_variance(net, x, t, model_kwargs=kw)
    out_b = oracle.p_mean_variance(net, x, t, model_kwargs=kw)
    score_a = condition_score(ours, classifier_cond_fn(clf, 2.0), out_a, x, t, kw)
    score_b = oracle.condition_score(reference_cond_fn(clf, 2.0), out_b, x, t, model_kwargs=kw)
    for key in ("pred_xstart", "mean"):
        assert max_abs(score_a[key], score_b[key]) <= F32_TOL, key
    a = ddim_step(ours, net, x, t, eta=eta, z=z, model_kwargs=kw, cond_fn=classifier_cond_fn(clf, 2.0))["sample"]
    net64, clf64 = copy.deepcopy(net).double(), copy.deepcopy(clf).double()
    with replay_randn_like([z.double()]), oracle_in_float64():
        exact = oracle.ddim_sample(net64, x.double(), t, eta=eta, model_kwargs=kw,
                                   cond_fn=reference_cond_fn(clf64, 2.0))["sample"]
    a64 = ddim_step(ours, net64, x.double(), t, eta=eta, z=z.double(), model_kwargs=kw,
                    cond_fn=classifier_cond_fn(clf64, 2.0))["sample"]
    assert max_abs(a64, exact) <= 1e-10
    assert max_abs(a, exact) <= F32_TOL
    # Against the reference's float32 run: its DDIM rounding at t = 1 alone is ~1e-5 (see test_samplers).
    with replay_randn_like([z]):
        b = oracle.ddim_sample(net, x, t, eta=eta, model_kwargs=kw, cond_fn=reference_cond_fn(clf, 2.0))["sample"]
    assert max_abs(a, b) <= 3 * F32_TOL


def _reference_guided_step(oracle, method, net, clf, x, t, eta, kw):
    """What openai/guided-diffusion's p_sample / ddim_sample return with a cond_fn (run in float64).

    guided-diffusion-sdk 1.0.0 departs from upstream in one place: its ddim_sample returns the
    unguided ``pred_xstart`` (it keeps ``out_orig``). Upstream (openai/guided-diffusion, aca3097)
    reassigns ``out`` to condition_score's result and returns that x0, so the expected
    ``pred_xstart`` is taken from the oracle's condition_score.
    """
    cond_fn = reference_cond_fn(clf, 3.0)
    if method == "ddpm":
        return oracle.p_sample(net, x, t, model_kwargs=kw, cond_fn=cond_fn)
    result = oracle.ddim_sample(net, x, t, eta=eta, model_kwargs=kw, cond_fn=cond_fn)
    out = oracle.p_mean_variance(net, x, t, model_kwargs=kw)
    return {**result, "pred_xstart": oracle.condition_score(cond_fn, out, x, t, model_kwargs=kw)["pred_xstart"]}


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_guided_step_returns_every_key_of_the_reference(method, eta):
    """Every value a guided step returns equals the reference's, ``pred_xstart`` included: for DDIM
    the guided x0 from condition_score (not the model's own), for DDPM the model's (only the mean moves)."""
    ours, oracle = pair("linear", 1000, var_type="learned_range", spacing="ddim25")
    net, clf = TinyNet(C, 2 * C, num_classes=K), TinyClassifier(C, K)
    x, z, t, kw = _state(ours.num_timesteps, seed=4)
    # DDIM in float64 (formula equality); the reference's condition_mean casts to float32, so DDPM runs there.
    step, tol, precision = ddpm_step, F32_TOL, contextlib.nullcontext()
    if method == "ddim":
        net, clf, x, z = copy.deepcopy(net).double(), copy.deepcopy(clf).double(), x.double(), z.double()
        step, tol, precision = functools.partial(ddim_step, eta=eta), 1e-10, oracle_in_float64()
    a = step(ours, net, x, t, z=z, model_kwargs=kw, cond_fn=classifier_cond_fn(clf, 3.0))
    with replay_randn_like([z, z]), precision:
        b = _reference_guided_step(oracle, method, net, clf, x, t, eta, kw)
    assert set(a) == set(b)
    for key in b:
        assert max_abs(a[key], b[key]) <= tol, key
    unguided = ours.p_mean_variance(net, x, t, model_kwargs=kw)["pred_xstart"]
    moved = float((a["pred_xstart"] - unguided).abs().max())
    assert (moved > 1e-2) if method == "ddim" else (moved == 0.0)
    # The returned x0 is the one the DDIM step moved towards: eq. 12 rebuilt from it gives the sample.
    if method == "ddim" and eta == 0.0:
        eps = ours.predict_eps_from_x0(x, t, a["pred_xstart"])
        rebuilt = ours.coef("sqrt_alphas_cumprod_prev", t, x) * a["pred_xstart"] + ours.ddim_coefs(0.0, t, x)[1] * eps
        assert max_abs(rebuilt, a["sample"]) <= 1e-10


def test_classifier_sees_original_timesteps():
    seen = []

    def cond_fn(x, t, **kw):
        seen.append(t.tolist())
        return torch.zeros_like(x)

    d = create_diffusion("linear", 1000, spacing="ddim25")
    x = torch.zeros(2, *SHAPE)
    ddim_step(d, TinyNet(C, C), x, torch.tensor([24, 1]), cond_fn=cond_fn)
    ddpm_step(d, TinyNet(C, C), x, torch.tensor([3, 0]), cond_fn=cond_fn)
    assert seen == [[960, 40], [120, 0]]


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_whole_guided_respaced_loop_matches_oracle(method):
    ours, oracle = pair("linear", 1000, var_type="learned_range", spacing="ddim20" if method == "ddim" else "40")
    net, clf = TinyNet(C, 2 * C, num_classes=K), TinyClassifier(C, K)
    kw = {"y": torch.tensor([1, 0, 2])}
    noise = RecordingNoise([7, 8, 9], SHAPE)
    sampler = ddpm_sample if method == "ddpm" else ddim_sample
    a = sampler(ours, net, (3, *SHAPE), noise=noise, model_kwargs=kw, cond_fn=classifier_cond_fn(clf, 3.0))
    loop = oracle.p_sample_loop if method == "ddpm" else oracle.ddim_sample_loop
    with replay_randn_like(noise.draws[1:]):
        b = loop(net, (3, *SHAPE), noise=noise.draws[0], model_kwargs=kw, cond_fn=reference_cond_fn(clf, 3.0))
    assert max_abs(a, b) <= F32_TOL
    unguided = sampler(ours, net, (3, *SHAPE), noise=RecordingNoise([7, 8, 9], SHAPE), model_kwargs=kw)
    assert float((a - unguided).abs().max()) > 1e-3


@pytest.mark.parametrize("out_channels", [C, 2 * C])
def test_cfg_identities(out_channels):
    net = TinyNet(C, out_channels, num_classes=K)
    x, _, t, kw = _state(100, seed=3)
    y = kw["y"]
    cond, uncond = net(x, t, y=y), net(x, t, y=torch.full_like(y, K))
    assert float((cond - uncond).abs().max()) > 1e-3  # the labels matter
    assert max_abs(ClassifierFreeGuidance(net, 1.0, K)(x, t, y=y), cond) <= 1e-5
    w0 = ClassifierFreeGuidance(net, 0.0, K)(x, t, y=y)
    assert max_abs(w0[:, :C], uncond[:, :C]) <= 1e-5
    w3 = ClassifierFreeGuidance(net, 3.0, K)(x, t, y=y)
    assert max_abs(w3[:, :C], uncond[:, :C] + 3.0 * (cond[:, :C] - uncond[:, :C])) <= 1e-5
    if out_channels == 2 * C:  # learned variance: only the eps half is mixed, the variance is conditional
        assert max_abs(w0[:, C:], cond[:, C:]) <= 1e-5 and max_abs(w3[:, C:], cond[:, C:]) <= 1e-5


def test_cfg_uses_one_batched_forward():
    calls = []
    net = TinyNet(C, C, num_classes=K)

    def counting(x, t, y=None):
        calls.append((x.shape[0], y.tolist()))
        return net(x, t, y=y)

    x, _, t, kw = _state(100)
    ClassifierFreeGuidance(counting, 2.0, K)(x, t, y=kw["y"])
    assert calls == [(8, kw["y"].tolist() + [K] * 4)]
    with pytest.raises(ValueError, match="labels"):
        ClassifierFreeGuidance(counting, 2.0, K)(x, t)


def test_cfg_with_classifier_guidance_and_unconditional_wrapper():
    d = create_diffusion("cosine", 1000, var_type="learned_range", spacing="ddim10")
    net, clf = TinyNet(C, 2 * C, num_classes=K), TinyClassifier(C, K)
    kw = {"y": torch.tensor([0, 1])}
    noise = lambda: RecordingNoise([1, 2], SHAPE)  # noqa: E731
    both = ddim_sample(d, ClassifierFreeGuidance(net, 2.0, K), (2, *SHAPE), noise=noise(), model_kwargs=kw,
                       cond_fn=classifier_cond_fn(clf, 2.0))
    cfg_only = ddim_sample(d, ClassifierFreeGuidance(net, 2.0, K), (2, *SHAPE), noise=noise(), model_kwargs=kw)
    assert torch.isfinite(both).all() and float((both - cfg_only).abs().max()) > 1e-3
    # An unconditional net guided by a classifier: labels reach the classifier, not the net.
    uncond = IgnoreLabels(TinyNet(C, 2 * C))
    out = ddim_sample(d, uncond, (2, *SHAPE), noise=noise(), model_kwargs=kw, cond_fn=classifier_cond_fn(clf, 2.0))
    assert out.shape == (2, *SHAPE)
