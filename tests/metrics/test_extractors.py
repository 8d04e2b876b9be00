"""Feature extractors: Inception's real loading path with random weights, the digits CNN, quantisation."""

from __future__ import annotations

import pytest
import torch

from beatgans.metrics import extractors as E
from beatgans.metrics.digits import digits_classifier, load_digits_cnn, state_hash, train_digits_cnn


@pytest.fixture(scope="module")
def random_inception_file(tmp_path_factory):
    """torch-fidelity's Inception with PyTorch's default random init, saved as a weights file (no download)."""
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    mp = pytest.MonkeyPatch()
    mp.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
    mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    mp.undo()
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


def test_inception_loads_weights_file_and_gives_three_feature_shapes(random_inception_file, monkeypatch):
    monkeypatch.delenv("INCEPTION_WEIGHTS", raising=False)
    ex = E.build_extractor("inception", inception_weights=str(random_inception_file), allow_download=False)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    out = ex(images)
    assert out["pool"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert out["spatial"].shape == (2, 17 * 17 * 7)
    assert len(ex.weights_hash) == 16
    # The file's weights were really loaded (not a fresh random init).
    saved = torch.load(random_inception_file)
    assert torch.equal(ex.net.fc.weight, saved["fc.weight"])
    # Spatial = first 7 channels of Mixed_6d.branch1x1 (TF's mixed_6/conv), NHWC-flattened.
    grabbed = {}
    hook = ex.net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: grabbed.setdefault("o", o))
    ex(images[:1])
    hook.remove()
    torch.testing.assert_close(ex(images[:1])["spatial"][0], grabbed["o"][0, :7].permute(1, 2, 0).reshape(-1))
    # Grey-scale repeats to RGB; the same file is also found through INCEPTION_WEIGHTS.
    monkeypatch.setenv("INCEPTION_WEIGHTS", str(random_inception_file))
    ex2 = E.InceptionExtractor(allow_download=False)
    grey = images[:, :1]
    torch.testing.assert_close(ex2(grey)["pool"], ex2(grey.expand(-1, 3, -1, -1))["pool"])


def test_inception_missing_file_gives_one_clear_sentence(tmp_path, monkeypatch):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError) as err:
        E.InceptionExtractor(missing, allow_download=False)
    msg = str(err.value)
    assert str(missing) in msg and E.INCEPTION_FILE in msg and "metrics.inception_weights" in msg
    monkeypatch.delenv("INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="downloading is off"):
        E.InceptionExtractor(None, allow_download=False)


def test_quantisation_is_adm_truncation_and_float_equals_uint8_input():
    x = torch.tensor([-1.5, -1.0, -0.996, 0.0, 0.999, 1.0, 2.0])
    # ((x + 1) * 127.5) = [-63.75, 0, 0.51, 127.5, 254.87, 255, 382.5] -> clamp -> truncate
    assert E.quantize_uint8(x).tolist() == [0, 0, 0, 127, 254, 255, 255]
    ex = E.RandomExtractor(in_channels=1)
    imgs = torch.rand(3, 1, 8, 8) * 2 - 1
    a, b = ex(imgs), ex(E.quantize_uint8(imgs))
    for key in ("pool", "logits", "spatial"):
        assert torch.equal(a[key], b[key])
    assert b["spatial"].shape == (3, ex.dims["spatial"])


def test_digits_network_is_deterministic_cached_and_accurate():
    net = load_digits_cnn(8)
    assert net.heldout_accuracy > 0.9
    again = train_digits_cnn(8)  # same recipe, same seed -> same weights
    assert state_hash(again) == state_hash(net)
    assert digits_classifier(8) is not net and state_hash(digits_classifier(8)) == state_hash(net)  # from cache
    from beatgans.data.digits import load_digits

    x, y = load_digits(8)
    ex = E.build_extractor("digits", image_size=8)
    feats = ex(x[:64])
    assert feats["pool"].shape == (64, 128) and feats["logits"].shape == (64, 10)
    assert (feats["logits"].argmax(1) == y[:64]).float().mean() > 0.9
    with pytest.raises(ValueError, match="image_size"):
        ex(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))


def test_target_accuracy_of_real_digits_and_of_wrong_labels():
    from beatgans.data.digits import load_digits
    from beatgans.metrics.digits import target_accuracy

    x, y = load_digits(8)
    u8 = E.quantize_uint8(x[:300]).permute(0, 2, 3, 1).numpy()
    assert target_accuracy(u8, y[:300].numpy()) > 0.9
    assert target_accuracy(x[:300], y[:300]) == target_accuracy(u8, y[:300])  # float input is quantised alike
    assert target_accuracy(u8, ((y[:300] + 1) % 10).numpy()) < 0.1
