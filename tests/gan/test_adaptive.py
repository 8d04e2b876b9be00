"""AdaptiveDiffusion: schedule, slot list, t sampling, controller, noising, state round-trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from beatgans.gan import AdaptiveDiffusion, generator_forces, mode_counts, mode_coverage


def test_schedule_has_leading_identity_and_matches_linspace():
    ad = AdaptiveDiffusion(t_min=50, t_max=50)
    betas = np.linspace(1e-4, 0.02, 50, dtype=np.float64)
    expected = np.concatenate([[1.0], np.cumprod(1 - betas)])
    assert ad.alphas_cumprod.shape == (51,)
    np.testing.assert_allclose(ad.alphas_cumprod.numpy(), expected, rtol=1e-12)
    x = torch.randn(4, 3)
    assert torch.equal(ad.q_sample(x, torch.zeros(4, dtype=torch.long)), x)  # t = 0 is clean


def test_q_sample_formula():
    ad = AdaptiveDiffusion(t_min=100, t_max=100, sigma=0.05)
    x, eps = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 37, 100])
    y = ad.q_sample(x, t, noise=eps)
    for i in range(3):
        a = float(ad.alphas_cumprod[t[i]])
        torch.testing.assert_close(y[i], math.sqrt(a) * x[i] + math.sqrt(1 - a) * 0.05 * eps[i])


def test_slot_list_half_clean_and_batch_half_clean():
    ad = AdaptiveDiffusion(t_min=200, t_max=200, seed=1)
    assert ad.t_list.shape == (64,)
    assert int((ad.t_list == 0).sum()) >= 32
    assert int((ad.t_list[:32] > 0).sum()) == 32  # 32 noisy slots in 1..T (priority never gives 0)
    t = ad.sample_t(20000)
    assert abs(float((t == 0).float().mean()) - 0.5) < 0.02
    assert int(t.max()) <= 200


def test_clean_fraction_configurable():
    ad = AdaptiveDiffusion(t_min=100, t_max=100, num_clean=16, seed=0)
    assert int((ad.t_list == 0).sum()) == 16


def _noisy_frequencies(t_dist: str, T: int, draws: int) -> np.ndarray:
    counts = np.zeros(T + 1)
    ad = AdaptiveDiffusion(t_min=T, t_max=T, t_dist=t_dist, seed=0)
    for _ in range(draws):  # each redraw = a fresh 32-slot list
        ad._build(T)
        counts += np.bincount(ad.t_list[:32].numpy(), minlength=T + 1)
    return counts / counts.sum()


@pytest.mark.parametrize("t_dist", ["uniform", "priority", "priority_paper"])
def test_t_frequencies_match_distribution(t_dist):
    T = 10
    freq = _noisy_frequencies(t_dist, T, 1500)  # 48k draws
    values = np.arange(T + 1, dtype=np.float64)
    w = {"uniform": (values >= 1).astype(float), "priority": np.where(values >= 1, values - 1, 0),
         "priority_paper": np.where(values >= 1, values, 0)}[t_dist]
    expected = w / w.sum()
    assert freq[0] == 0
    np.testing.assert_allclose(freq, expected, atol=0.01)
    if t_dist == "priority":
        assert freq[1] == 0  # the reference code never draws t = 1


def _feed(ad, signs, iterations, batch=64):
    """Run ``iterations`` controller iterations with the same real signs; return the list after each update."""
    lists = []
    for _ in range(iterations):
        ad.accumulate(torch.tensor(signs))
        if ad.step(batch):
            lists.append(ad.t_list.clone())
    return lists


@pytest.mark.parametrize("signs,p,T", [
    ([1.0, 1.0, 1.0, -1.0, 1.0], 0.0, 10),  # r_d exactly at the target: p does not move
    ([-1.0] * 5, 0.0, 10),                  # r_d below the target: p pushed down, sits at the clip 0
    ([1.0] * 5, 1.0, 500),                  # r_d above: p pushed up, sits at the clip 1 (T = t_max)
])
def test_list_redrawn_at_every_update_even_when_T_stays(signs, p, T):
    """The reference's update_T draws a new slot list each time it is called (every 4 iterations),
    so the 32 drawn slots keep changing while p sits at a clip and T does not move."""
    ad = AdaptiveDiffusion(t_min=10, t_max=500, ada_kimg=0.01 if p == 1.0 else 100, interval=4, seed=5)
    _feed(ad, signs, 40)  # reach the clip first (one update takes p from 0 to 1 with ada_kimg=0.01)
    assert (ad.p, ad.T) == (p, T)
    before = ad.t_list.clone()
    lists = _feed(ad, signs, 20)
    assert len(lists) == 5 and (ad.p, ad.T) == (p, T)
    for previous, current in zip([before, *lists], lists):
        assert not torch.equal(previous[:32], current[:32])  # 32 fresh draws from 1..T each time
        assert int(current[:32].min()) >= 1 and int(current[:32].max()) <= T and (current[32:] == 0).all()
    # no update between two controller ticks: iterations 1..3 after an update leave the list alone
    mid = ad.t_list.clone()
    _feed(ad, signs, 3)
    assert torch.equal(ad.t_list, mid)


def test_on_T_change_option_keeps_the_list_until_T_moves():
    ad = AdaptiveDiffusion(t_min=10, t_max=1000, ada_kimg=100, interval=4, t_list_redraw="on_T_change")
    first = ad.t_list.clone()
    _feed(ad, [1.0, 1.0, 1.0, -1.0, 1.0], 8)  # r_d at the target: p and T stay, so does the list
    _feed(ad, [-1.0] * 5, 8)                  # p pushed against its clip at 0: T stays
    assert ad.p == 0.0 and ad.T == 10 and torch.equal(ad.t_list, first)
    _feed(ad, [1.0] * 5, 4)  # one update up: 64 * 4 / 1e5 -> T = 10 + round(0.00256 * 990) = 13
    assert ad.T == 13 and not torch.equal(ad.t_list, first)
    with pytest.raises(ValueError, match="t_list_redraw"):
        AdaptiveDiffusion(t_list_redraw="never")


@pytest.mark.parametrize("t_list_redraw", ["every_update", "on_T_change"])
def test_resume_mid_run_continues_the_same_lists(t_list_redraw):
    """A controller restored from state_dict() mid-interval draws exactly the lists and slots the
    uninterrupted one does (its private generator travels with the state)."""
    def make(seed):
        return AdaptiveDiffusion(ada_kimg=1.0, seed=seed, t_list_redraw=t_list_redraw)

    signs = [[1.0 if (i * 7 + j) % 5 else -1.0 for j in range(6)] for i in range(30)]
    straight, first = make(3), make(3)
    for s in signs[:13]:  # stop one iteration after an update, with signs pending
        for ad in (straight, first):
            ad.accumulate(torch.tensor(s))
            ad.step(64)
            ad.sample_t(8)
    resumed = make(99)
    resumed.load_state_dict(first.state_dict())
    for s in signs[13:]:
        for ad in (straight, resumed):
            ad.accumulate(torch.tensor(s))
            ad.step(64)
        assert torch.equal(straight.sample_t(8), resumed.sample_t(8))
        assert torch.equal(straight.t_list, resumed.t_list) and (straight.p, straight.T) == (resumed.p, resumed.T)


def _hand_controller(signs_per_iter, batch, interval=4, kimg=100.0, target=0.6, t_min=10, t_max=1000):
    p, acc, n, out = 0.0, 0.0, 0, []
    for i, s in enumerate(signs_per_iter, start=1):
        acc += sum(s)
        n += len(s)
        if i % interval == 0:
            r = acc / n
            p = min(max(p + np.sign(r - target) * batch * interval / (kimg * 1000), 0.0), 1.0)
            acc, n = 0.0, 0
        out.append((p, t_min + round(p * (t_max - t_min))))
    return out


def test_controller_matches_hand_computation():
    ad = AdaptiveDiffusion(ada_kimg=1.0)  # large steps: 64 * 4 / 1000 = 0.256 per update
    rng = np.random.default_rng(0)
    seq = []
    for i in range(24):
        frac = 0.95 if i < 12 else 0.1  # overfit first (T up), then underfit (T down)
        seq.append([1.0 if u < frac else -1.0 for u in rng.random(16)])
    expected = _hand_controller(seq, batch=64, kimg=1.0)
    Ts = []
    for s, (p, T) in zip(seq, expected):
        ad.accumulate(torch.tensor(s))
        ad.step(64)
        assert ad.p == pytest.approx(p, abs=1e-12)
        assert ad.T == T
        Ts.append(ad.T)
    assert max(Ts) > 10 and Ts[-1] < max(Ts)


def test_controller_direction_and_bounds():
    up = AdaptiveDiffusion(ada_kimg=0.1, t_min=10, t_max=500)
    for _ in range(200):
        up.accumulate(torch.ones(8))  # r_d = 1 > 0.6: D overfits, more noise
        up.step(64)
    assert up.p == 1.0 and up.T == 500
    down = AdaptiveDiffusion(ada_kimg=0.1, t_min=10, t_max=500, p=0.5)
    T0 = down.T
    for _ in range(4):
        down.accumulate(-torch.ones(8))
        down.step(64)
    assert down.T < T0
    for _ in range(200):
        down.accumulate(-torch.ones(8))
        down.step(64)
    assert down.p == 0.0 and down.T == 10


def test_accumulates_over_all_real_passes():
    ad = AdaptiveDiffusion(ada_kimg=1.0)
    # three passes per iteration; only the mean over all of them decides the sign
    for _ in range(4):
        ad.accumulate(torch.ones(10))
        ad.accumulate(-torch.ones(10))
        ad.accumulate(torch.tensor([1.0] * 9 + [-1.0]))
        ad.step(8)
    assert ad.last_r_d == pytest.approx((10 - 10 + 8) / 30)
    assert ad.p == 0.0  # 0.267 < 0.6: p pushed down, clipped at 0


def test_noise_disabled_is_identity():
    ad = AdaptiveDiffusion(noise_enabled=False, ada_kimg=0.1)
    x = torch.randn(16, 2, requires_grad=True)
    y, t = ad(x)
    assert y is x and torch.equal(t, torch.zeros(16, dtype=torch.long))
    for _ in range(8):
        ad.accumulate(torch.ones(4))
        ad.step(64)
    assert ad.p == 0.0 and ad.T == ad.t_min and ad.last_r_d == 1.0


def test_gradient_flows_through_noise():
    ad = AdaptiveDiffusion(t_min=500, t_max=500, sigma=0.5)
    x = torch.randn(32, 2, requires_grad=True)
    y, t = ad(x)
    y.sum().backward()
    abar = ad.alphas_cumprod[t].float()
    torch.testing.assert_close(x.grad, abar.sqrt()[:, None].expand(32, 2))


def test_state_dict_roundtrip_restores_everything():
    a = AdaptiveDiffusion(ada_kimg=1.0, seed=3)
    for _ in range(10):
        a.accumulate(torch.ones(8))
        a.step(64)
    a.accumulate(torch.tensor([1.0, -1.0, 1.0]))
    state = a.state_dict()
    b = AdaptiveDiffusion(ada_kimg=1.0, seed=99)
    b.load_state_dict(state)
    assert (b.p, b.T, b.num_steps, b.sign_sum, b.sign_count) == (a.p, a.T, a.num_steps, a.sign_sum, a.sign_count)
    assert torch.equal(a.t_list, b.t_list) and torch.equal(a.alphas_cumprod, b.alphas_cumprod)
    assert torch.equal(a.sample_t(100), b.sample_t(100))  # private RNG restored too
    for ad in (a, b):
        ad.accumulate(-torch.ones(8))
        ad.step(64)
        ad.step(64)
    assert (a.p, a.T) == (b.p, b.T) and torch.equal(a.t_list, b.t_list)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        AdaptiveDiffusion(t_dist="triangle")
    with pytest.raises(ValueError):
        AdaptiveDiffusion(t_min=20, t_max=10)


def test_mode_coverage_counts():
    centers = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    pts = torch.cat([torch.zeros(30, 2), torch.tensor([[2.0, 0.1]]).repeat(10, 1), torch.full((10, 2), 5.0)])
    cov = mode_coverage(pts, centers, std=0.05, min_count=5)
    # (2, 0.1) is 2 std from its centre: high quality; (5, 5) is far from everything
    assert cov["modes_covered"] == 2.0 and cov["num_modes"] == 3.0
    assert cov["hq_share"] == pytest.approx(0.8)
    assert mode_coverage(pts, centers, std=0.05, min_count=11)["modes_covered"] == 1.0
    assert mode_counts(pts, centers, std=0.05).tolist() == [30, 10, 0]
    # (2, 0.1) is 2 std out: inside 3 std, outside 1.5 std
    assert mode_counts(pts, centers, std=0.05, radius=1.5).tolist() == [30, 0, 0]


def test_pickles_with_its_generator_state():
    """ddp_spawn pickles the module to its ranks; the private generator must arrive in the same state."""
    import pickle

    d = AdaptiveDiffusion(seed=3)
    d.p = 0.5
    d._build(d._T_from_p(0.5))
    torch.randint(0, 10, (3,), generator=d.generator)  # advance it
    clone = pickle.loads(pickle.dumps(d))
    assert isinstance(clone.generator, torch.Generator) and torch.equal(clone.t_list, d.t_list)
    assert clone.p == d.p and clone.T == d.T
    assert torch.equal(torch.randint(0, 1000, (8,), generator=clone.generator),
                       torch.randint(0, 1000, (8,), generator=d.generator))


class _LinearD(torch.nn.Module):
    """logit = w . x + b, ignoring t: its generator-loss pull is known in closed form."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = torch.tensor(w), float(b)

    def forward(self, x, t, y=None):
        return x @ self.w + self.b


def test_generator_forces_closed_form():
    """With sigma = 0 the noising is x -> sqrt(abar_t) x, so the pull of softplus(-D) on a fake is
    sigmoid(-logit) * sqrt(abar_t) * w exactly, per sample and per step."""
    d = AdaptiveDiffusion(t_min=200, t_max=200, sigma=0.0)
    D = _LinearD([0.5, -2.0], 0.3)
    x = torch.tensor([[0.1, 0.2], [1.0, -1.0], [-0.4, 0.9]])
    for t in (0, 50, 200):
        a = math.sqrt(d.alphas_cumprod[t].item())
        logit = a * (x @ D.w) + D.b
        want = torch.sigmoid(-logit)[:, None] * a * D.w
        torch.testing.assert_close(generator_forces(x, D, d, t, draws=3), want)
    steps = torch.tensor([0, 50, 200])  # one step per sample
    a = d.alphas_cumprod[steps].sqrt().float()
    want = torch.sigmoid(-(a * (x @ D.w) + D.b))[:, None] * a[:, None] * D.w
    torch.testing.assert_close(generator_forces(x, D, d, steps, draws=2), want)
    # with noise the pull is the average over draws, and it shrinks with sqrt(abar_t)
    d_noisy = AdaptiveDiffusion(t_min=1000, t_max=1000, sigma=0.05)
    f0 = generator_forces(x, D, d_noisy, 0).norm(dim=1)
    f1000 = generator_forces(x, D, d_noisy, 1000, draws=8, generator=torch.Generator().manual_seed(0)).norm(dim=1)
    assert (f1000 < 0.1 * f0).all()
    with pytest.raises(ValueError, match="0..200"):
        generator_forces(x, D, d, 201)
