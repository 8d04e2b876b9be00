"""beatgans-eval end to end on the bundled digits: .npz, image folder and run directory inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from beatgans.cli.common import CONFIG_DIR
from beatgans.cli.evaluate import evaluate
from beatgans.metrics import ReferenceStats, load_samples
from beatgans.utils.io import save_samples_npz


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BEATGANS_CACHE", str(tmp_path / "cache"))


def _digits_u8(n: int, size: int = 8) -> np.ndarray:
    from beatgans.data.digits import load_digits
    from beatgans.metrics import quantize_uint8

    return quantize_uint8(load_digits(size)[0][:n]).permute(0, 2, 3, 1).numpy()


def _cfg(samples, *extra):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("evaluate", [f"samples={samples}", "data=digits", "data.image_size=8", "progress=false",
                                    "device=cpu", *extra])


def test_eval_npz_against_digits_writes_metrics_json_and_caches_reference(tmp_path):
    real = save_samples_npz(tmp_path / "real" / "samples.npz", _digits_u8(300), None)
    rng = np.random.default_rng(0)
    noise = save_samples_npz(tmp_path / "noise" / "samples.npz", rng.integers(0, 256, (300, 8, 8, 1), np.uint8), None)
    good = evaluate(_cfg(real, "metrics=fid_is_pr"))
    bad = evaluate(_cfg(noise, "metrics=fid_is_pr"))
    written = json.loads((tmp_path / "real" / "metrics.json").read_text())
    assert written["fid"] == pytest.approx(good["fid"]) and written["num_samples"] == 300
    assert written["eval_extractor"] == "digits" and {"is", "precision", "recall"} <= set(written)
    assert good["fid"] < bad["fid"] / 10 and good["precision"] > 0.9 > bad["precision"]
    cached = list((tmp_path / "cache" / "reference").glob("*.npz"))
    assert len(cached) == 1
    meta = ReferenceStats.load(cached[0]).metadata
    assert (meta["dataset"], meta["count"], meta["resolution"], meta["extractor"]) == ("digits", 1797, 8, "digits")
    # A reference made for another setting is refused with a clear message.
    with pytest.raises(ValueError, match="resolution=8 \\(wanted 16\\)"):
        ReferenceStats.load(cached[0], {"resolution": 16})


def test_image_folder_and_run_directory_inputs(tmp_path):
    from PIL import Image

    images = _digits_u8(20)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img[..., 0]).save(folder / f"{i:03d}.png")
    loaded, labels, out_dir = load_samples(folder)
    np.testing.assert_array_equal(loaded, images)
    assert labels is None and out_dir == folder
    run = tmp_path / "run"
    save_samples_npz(run / "samples" / "samples.npz", images, np.arange(20) % 10)
    result = evaluate(_cfg(run, "metrics=fid"))
    assert set(json.loads((run / "metrics.json").read_text())) >= {"fid", "num_samples", "eval_samples"}
    assert result["num_samples"] == 20
    with pytest.raises(FileNotFoundError, match="neither"):
        load_samples(tmp_path / "missing.npz")
