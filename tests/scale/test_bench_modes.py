"""beatgans-bench modes at tiny sizes: each runs and writes its JSON keys (timings are not asserted)."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from beatgans.cli.bench import run_bench, summary_lines
from beatgans.cli.common import CONFIG_DIR

NET = ["net.image_size=16", "net.model_channels=32", "net.channel_mult=[1,2]", "net.num_res_blocks=1",
       "net.attention_resolutions=[8]", "net.num_head_channels=32", "net.num_classes=5", "net.dropout=0.0"]
CLF = ["classifier.image_size=16", "classifier.model_channels=32", "classifier.channel_mult=[1,2]",
       "classifier.num_res_blocks=1", "classifier.attention_resolutions=[8]", "classifier.num_head_channels=32",
       "classifier.num_classes=5"]


def _run(tmp_path, *overrides):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="bench", overrides=[f"output={tmp_path}/bench.json", "warmup=0", "repeats=2",
                                                      "batch_size=2", *overrides])
    result = run_bench(cfg)
    assert json.loads((tmp_path / "bench.json").read_text())["mode"] == result["mode"]
    assert len(summary_lines(result)) >= 2
    return result


def test_sample_mode_times_ours_and_the_oracle_loop(tmp_path):
    pytest.importorskip("guided_diffusion")
    r = _run(tmp_path, "mode=sample", "sample.steps=3", *NET, *CLF)
    assert set(r["loops"]) == {"ours", "oracle"} and r["steps"] == 3
    for e in r["loops"].values():
        assert e["images_per_s"] == pytest.approx(2 / e["wall_s_median"]) and len(e["wall_s"]) == 2
    assert r["paired_ratio_ours_over_oracle"]["min"] > 0


def test_lightning_mode_reports_both_loops_and_the_overhead(tmp_path):
    r = _run(tmp_path, "mode=lightning", "net=digits_unet", "net.image_size=8", "net.model_channels=32",
             "net.channel_mult=[1,1]", "net.attention_resolutions=[4]", "net.num_head_channels=32",
             "lightning.steps=3", "lightning.warmup=1", "lightning.num_timesteps=50")
    assert set(r["steps_per_s"]) == {"lightning", "bare"}
    assert all(len(v["values"]) == 2 and v["median"] > 0 for v in r["steps_per_s"].values())
    ratio = r["overhead_bare_over_lightning"]["median"]
    assert r["overhead_percent_median"] == pytest.approx(100 * (ratio - 1))


def test_loader_mode_counts_images_and_workers(tmp_path):
    r = _run(tmp_path, "mode=loader", "loader.num_images=4", "loader.source_size=[80,60]", "loader.image_size=32",
             "loader.batch_size=2", "loader.workers=[0]", "repeats=1")
    assert set(r["images_per_s_by_workers"]) == {"0"} and r["images_per_s_per_worker"] > 0
    acc = r["accelerator"]
    # ADM ImageNet-256 (554M parameters): 6.36e12 FLOPs per training image (forward + backward, 2 per MAC)
    assert 6.3e12 < acc["train_flops_per_image"] < 6.4e12
    assert r["workers_needed"] >= 1


def test_unknown_mode_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="mode must be one of train, sample, lightning, loader"):
        _run(tmp_path, "mode=speed")
