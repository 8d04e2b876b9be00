"""Closed forms, identities and agreement with scipy, torchmetrics and torch-fidelity on the same features."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from beatgans.metrics import functional as MF
from beatgans.metrics.feature_metrics import FrechetDistance, InceptionScore, KernelDistance, PrecisionRecall

REL = 1e-6


def _feats(n, d, seed, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift)


def _fid_metric(gen, ref, batch=None):
    m = FrechetDistance(gen.shape[1])
    mu, sigma = ref.mean(0).numpy(), np.cov(ref.numpy(), rowvar=False)
    m.set_reference(mu, sigma)
    for chunk in gen.split(batch or len(gen)):
        m.update(chunk)
    return float(m.compute()["fid"])


# ---------------------------------------------------------------- Frechet distance closed forms

def test_frechet_closed_form_shifted_identity_gaussians():
    d, m = 6, np.arange(6) * 0.5
    # N(0, I) vs N(m, I): the covariance terms cancel exactly, leaving |m|^2.
    assert MF.frechet_distance(np.zeros(d), np.eye(d), m, np.eye(d)) == pytest.approx(float(m @ m), rel=1e-12)
    # Scaled covariances: tr(a^2 I + b^2 I - 2ab I) = d (a - b)^2.
    assert MF.frechet_distance(np.zeros(d), 4 * np.eye(d), np.zeros(d), np.eye(d)) == pytest.approx(d * 1.0)


def test_fid_same_set_zero_symmetric_and_matches_scipy_sqrtm():
    x, y = _feats(400, 8, 0), _feats(300, 8, 1, shift=0.3, scale=1.5)
    assert abs(_fid_metric(x, x)) < 1e-8
    forward, backward = _fid_metric(x, y), _fid_metric(y, x)
    assert forward == pytest.approx(backward, rel=1e-9)
    mu1, s1 = x.mean(0).numpy(), np.cov(x.numpy(), rowvar=False)
    mu2, s2 = y.mean(0).numpy(), np.cov(y.numpy(), rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    direct = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert forward == pytest.approx(direct, rel=REL)


def test_fid_invariant_to_order_and_batching():
    x, y = _feats(257, 5, 2), _feats(200, 5, 3, shift=1.0)
    base = _fid_metric(x, y)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    assert _fid_metric(x[perm], y, batch=17) == pytest.approx(base, rel=1e-10)
    assert _fid_metric(x, y, batch=1) == pytest.approx(base, rel=1e-10)


def test_fid_matches_torch_fidelity_statistics_to_metric():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    x, y = _feats(300, 10, 4), _feats(350, 10, 5, shift=0.2, scale=0.8)
    ours = _fid_metric(x, y)
    theirs = fid_statistics_to_metric(fid_features_to_statistics(x), fid_features_to_statistics(y), False)
    assert ours == pytest.approx(theirs["frechet_inception_distance"], rel=REL)


def test_fid_matches_torchmetrics_with_custom_feature_module():
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Identity(torch.nn.Module):
        num_features = 7

        def forward(self, x):
            return x

    x, y = _feats(300, 7, 6), _feats(280, 7, 7, shift=-0.4)
    tm = FrechetInceptionDistance(feature=Identity(), reset_real_features=False)
    tm.update(y, real=True)
    tm.update(x, real=False)
    assert _fid_metric(x, y) == pytest.approx(float(tm.compute()), rel=REL)


# ---------------------------------------------------------------- Inception Score

def test_inception_score_matches_torch_fidelity_without_shuffle():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = _feats(40, 12, 8, scale=3.0)
    m = InceptionScore(split_size=10)
    for chunk in logits.split(7):
        m.update(chunk)
    ours = m.compute()
    theirs = isc_features_to_metric(logits, splits=4, shuffle=False)
    assert float(ours["is"]) == pytest.approx(theirs["inception_score_mean"], rel=REL)
    assert float(ours["is_std"]) == pytest.approx(theirs["inception_score_std"], rel=REL)


def test_inception_score_closed_forms():
    # Confident, uniformly spread predictions over K classes give IS = K; identical predictions give 1.
    k = 5
    confident = torch.eye(k, dtype=torch.float64).repeat(4, 1) * 60.0
    assert MF.inception_score(confident)[0] == pytest.approx(k, rel=1e-9)
    assert MF.inception_score(torch.zeros(20, k))[0] == pytest.approx(1.0, rel=1e-12)


# ---------------------------------------------------------------- precision / recall

def _pr(gen, ref, block=10000):
    m = PrecisionRecall(k=3, block_size=block)
    m.set_reference(ref)
    m.update(gen)
    out = m.compute()
    return float(out["precision"]), float(out["recall"])


def test_precision_recall_matches_torch_fidelity_part_and_full():
    from torch_fidelity.metric_prc import prc_features_to_metric

    gen, ref = _feats(150, 6, 9, shift=0.5), _feats(120, 6, 10)
    ours = _pr(gen, ref, block=32)  # several row blocks
    for save_ram in (True, False):
        theirs = prc_features_to_metric(gen, ref, prc_neighborhood=3, prc_batch_size=50, save_cpu_ram=save_ram,
                                        verbose=False)
        assert ours == pytest.approx((theirs["precision"], theirs["recall"]), rel=REL)
    assert 0.0 < ours[0] < 1.0 and 0.0 < ours[1] < 1.0  # a non-trivial case


def test_precision_recall_identities():
    x = _feats(100, 4, 11)
    assert _pr(x, x) == (1.0, 1.0)
    far = _feats(100, 4, 12, shift=1e3)
    assert _pr(far, x) == (0.0, 0.0)
    # A collapsed generator: every sample near one real point -> inside the real manifold, covering little of it.
    collapsed = x[:1] + 1e-3 * _feats(100, 4, 13)
    precision, recall = _pr(collapsed, x)
    assert precision == 1.0 and recall < 0.1


def test_blocking_does_not_change_radii_or_precision_recall():
    x, y = _feats(90, 3, 14), _feats(80, 3, 15, shift=0.4)
    # Matrix-multiply blocking changes float64 round-off only.
    torch.testing.assert_close(MF.knn_radii(x, 3, block_size=7), MF.knn_radii(x, 3, block_size=1000),
                               rtol=1e-12, atol=1e-12)
    assert _pr(x, y, block=7) == _pr(x, y, block=1000)


# ---------------------------------------------------------------- KID

def test_kid_matches_torch_fidelity():
    from torch_fidelity.metric_kid import kid_features_to_metric

    gen, ref = _feats(60, 5, 15, shift=0.3), _feats(70, 5, 16)
    m = KernelDistance(subsets=10, subset_size=40)
    m.set_reference(ref)
    m.update(gen[:25])
    m.update(gen[25:])
    ours = m.compute()
    theirs = kid_features_to_metric(gen, ref, kid_subsets=10, kid_subset_size=40, kid_kernel="poly",
                                    kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1,
                                    rng_seed=2020, verbose=False)
    assert float(ours["kid"]) == pytest.approx(theirs["kernel_inception_distance_mean"], rel=REL)
    assert float(ours["kid_std"]) == pytest.approx(theirs["kernel_inception_distance_std"], rel=REL)
    assert float(ours["kid"]) > 0.0
