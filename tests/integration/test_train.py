"""End-to-end training through the real config tree: a few steps, resume equivalence, NaN stop, config checks."""

import json
import math

import pytest
import torch

from beatgans.cli.train import ConfigError, train


def _weights(path):
    sd = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in sd.items() if k.startswith(("net.", "ema."))}


def test_few_step_training_writes_run_contract(tiny_train_cfg, tmp_path):
    cfg = tiny_train_cfg("callbacks.sample_grid.every_n_steps=2", out=tmp_path / "run")
    metrics = train(cfg)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["global_step"] == 3 and math.isfinite(saved["train/loss"])
    assert metrics["global_step"] == 3
    assert (run / "samples" / "final_grid.png").is_file() and (run / "samples" / "grid_step0000002.png").is_file()
    # EMA weights differ from the raw weights after training but stay close.
    sd = _weights(run / "checkpoints" / "last.ckpt")
    key = next(k for k in sd if k.startswith("net.") and sd[k].dtype.is_floating_point and sd[k].abs().sum() > 0)
    assert not torch.equal(sd[key], sd["ema.shadows.0." + key[4:]])


def test_resume_equals_straight_run(tiny_train_cfg, tmp_path):
    """2N steps straight == N steps, resume from last.ckpt, N more (weights, EMA, optimizer, RNG)."""
    # 1797 * 0.95 train digits / batch 16 -> 106 steps per epoch; N = 3 resumes mid-epoch.
    common = ["task.ema_rates=[0.9]", "callbacks.model_checkpoint.every_n_train_steps=3"]
    straight = tiny_train_cfg(*common, "trainer.max_steps=6", out=tmp_path / "straight")
    train(straight)
    first = tiny_train_cfg(*common, "trainer.max_steps=3", out=tmp_path / "resumed")
    train(first)
    second = tiny_train_cfg(*common, "trainer.max_steps=6", "ckpt_path=last", out=tmp_path / "resumed")
    train(second)
    a = _weights(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    b = _weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_nan_loss_stops_without_overwriting_last_checkpoint(tiny_train_cfg, tmp_path, monkeypatch):
    from beatgans.diffusion import GaussianDiffusion
    from beatgans.lit.diffusion_module import NonFiniteLossError

    run = tmp_path / "nan"
    train(tiny_train_cfg("trainer.max_steps=2", out=run))
    real = GaussianDiffusion.training_losses
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):  # the second training step of the resumed run diverges
        calls["n"] += 1
        out = real(self, *args, **kwargs)
        if calls["n"] >= 2:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(GaussianDiffusion, "training_losses", poisoned)
    cfg = tiny_train_cfg("trainer.max_steps=6", "ckpt_path=last", out=run)

    with pytest.raises(NonFiniteLossError, match="training loss became"):
        train(cfg)
    # Checkpoints are written every step here: last.ckpt is the last good step (3), never the NaN one (4).
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.dtype.is_floating_point)
    assert not (run / "checkpoints" / "step0000004.ckpt").exists()


def test_config_errors_are_clear(tiny_train_cfg, tmp_path):
    with pytest.raises(ConfigError, match="output channels"):
        train(tiny_train_cfg("diffusion.var_type=learned_range", out=tmp_path / "a"))
    with pytest.raises(ConfigError, match="null_class"):
        train(tiny_train_cfg("task.p_uncond=0.1", out=tmp_path / "b"))
    from beatgans.cli.resume import ResumeError

    with pytest.raises(ResumeError, match="no checkpoint"):
        train(tiny_train_cfg("ckpt_path=last", out=tmp_path / "c"))


def test_bf16_precision_and_gradient_accumulation(tiny_train_cfg, tmp_path, monkeypatch):
    from beatgans.nets.ema import EMA

    calls = {"n": 0}
    real = EMA.update

    def counting(self, net):
        calls["n"] += 1
        return real(self, net)

    monkeypatch.setattr(EMA, "update", counting)
    cfg = tiny_train_cfg("trainer.precision=bf16-mixed", "trainer.accumulate_grad_batches=2", "trainer.max_steps=2",
                         "callbacks.sample_grid.on_train_end=false", out=tmp_path / "bf16")
    metrics = train(cfg)
    assert metrics["global_step"] == 2 and math.isfinite(metrics["train/loss"])
    assert calls["n"] == 2  # one EMA update per optimizer step, not per micro-batch


def test_metrics_callback_during_training_lands_in_metrics_json(tiny_train_cfg, tmp_path):
    cfg = tiny_train_cfg("metrics=fid", "callbacks.sample_metrics.every_n_steps=2",
                         "callbacks.sample_metrics.num_samples=12", "callbacks.sample_metrics.steps=3",
                         "callbacks.sample_grid.on_train_end=false", out=tmp_path / "m")
    train(cfg)
    saved = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert saved["metrics/fid"] > 0 and math.isfinite(saved["metrics/fid"])
