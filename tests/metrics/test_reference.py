"""Reference statistics files: round trip, metadata refusal, ADM reference batches, evaluate_samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from beatgans.metrics import RandomExtractor, ReferenceStats, compute_reference_stats, evaluate_samples, shard_bounds
from beatgans.metrics import functional as MF


def _images(n, seed, size=8, channels=3, lo=0, hi=256):
    return np.random.default_rng(seed).integers(lo, hi, (n, size, size, channels), dtype=np.uint8)


@pytest.fixture(scope="module")
def extractor():
    return RandomExtractor(in_channels=3)


def test_round_trip_and_metadata_refusal(tmp_path, extractor):
    stats = compute_reference_stats(_images(50, 0), extractor, {"dataset": "toy", "split": "train"})
    assert stats.metadata["count"] == 50 and stats.metadata["resolution"] == 8
    path = stats.save(tmp_path / "ref.npz")
    assert not list(tmp_path.glob("*.tmp"))
    back = ReferenceStats.load(path, {"extractor": "random", "dataset": "toy"})
    for key in ("mu", "sigma", "mu_s", "sigma_s", "features"):
        np.testing.assert_array_equal(getattr(back, key), getattr(stats, key))
    assert back.metadata == stats.metadata
    with pytest.raises(ValueError, match=r"dataset='toy' \(wanted 'cifar10'\)"):
        ReferenceStats.load(path, {"dataset": "cifar10"})
    with pytest.raises(ValueError, match="weights_hash"):
        ReferenceStats.load(path, {"weights_hash": "other"})


def test_adm_reference_batch_loads_as_is(tmp_path, extractor):
    images = _images(40, 1)
    mu, sigma = np.zeros(16), np.eye(16)
    np.savez(tmp_path / "VIRTUAL_toy.npz", arr_0=images, mu=mu, sigma=sigma, mu_s=np.zeros(32), sigma_s=np.eye(32))
    ref = ReferenceStats.load(tmp_path / "VIRTUAL_toy.npz", {"extractor": "inception"})
    assert ref.metadata["count"] == 40 and ref.features is None
    np.testing.assert_array_equal(ref.mu, mu)
    # Precision/recall rows are computed from arr_0 on demand.
    feats = ref.ensure_features(extractor)
    assert feats.shape == (40, 16)
    with pytest.raises(ValueError, match="extractor='inception'"):
        ReferenceStats.load(tmp_path / "VIRTUAL_toy.npz", {"extractor": "digits"})


def test_evaluate_samples_matches_formulas(extractor):
    ref_imgs, gen_imgs = _images(60, 2), _images(45, 3, lo=40, hi=200)
    ref = compute_reference_stats(ref_imgs, extractor, {"dataset": "toy"})
    out = evaluate_samples(gen_imgs, ref, ["fid", "sfid", "is", "precision", "recall", "kid"], extractor,
                           batch_size=8, kid_subset_size=20, kid_subsets=5)
    feats = extractor(torch.from_numpy(gen_imgs).permute(0, 3, 1, 2))
    pool = feats["pool"].double().numpy()
    fid = MF.frechet_distance(pool.mean(0), np.cov(pool, rowvar=False), ref.mu, ref.sigma)
    assert out["fid"] == pytest.approx(fid, rel=1e-6)
    assert out["is"] == pytest.approx(MF.inception_score(feats["logits"])[0], rel=1e-6)
    p, r = MF.precision_recall(feats["pool"], torch.from_numpy(ref.features))
    assert (out["precision"], out["recall"]) == (p, r)
    assert {"sfid", "kid", "kid_std", "is_std"} <= set(out) and out["num_samples"] == 45
    same = evaluate_samples(ref_imgs, ref, ["fid"], extractor)
    assert abs(same["fid"]) < 1e-6


def test_shard_bounds_cover_without_padding():
    for n, world in [(10, 3), (2, 2), (7, 4), (5, 1)]:
        bounds = [shard_bounds(n, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        sizes = [e - s for s, e in bounds]
        assert max(sizes) - min(sizes) <= 1
