"""`beatgans-sample` with guidance=classifier / cfg / classifier+cfg on tiny trained runs: the wiring, the
target labels, the refusals, and a Hydra multirun over scales through the real CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf

import beatgans.cli.sample as sample_cli
from beatgans.cli.loading import RunError, check_classifier_matches
from beatgans.diffusion import create_diffusion
from beatgans.diffusion.sampling import respaced
from beatgans.nets import EncoderClassifier, UNet
from tests.conftest import REPO, compose


def _cfg(run, out, *extra):
    return compose("sample", [f"run={run}", "sampler=ddpm", "sampler.steps=5", "num_samples=6", "batch_size=6",
                              *extra], output_dir=out)


def _clf(runs, scale, name="clf"):
    return ["guidance=classifier", f"guidance.classifier_run={runs[name]}", f"guidance.scale={scale}"]


def test_classifier_scale_zero_is_unguided_ddpm_and_scale_moves_samples(guidance_runs, tmp_path):
    r = guidance_runs
    none, lab, _ = sample_cli.generate(_cfg(r["cond"], tmp_path))
    zero, lab0, info = sample_cli.generate(_cfg(r["cond"], tmp_path, *_clf(r, 0)))
    strong, _, _ = sample_cli.generate(_cfg(r["cond"], tmp_path, *_clf(r, 50)))
    # DDPM: mean + variance * 0 * grad is the unguided mean, and the noise is the same per-sample noise.
    assert np.array_equal(none, zero) and np.array_equal(lab, lab0)
    assert not np.array_equal(none, strong)
    assert info["guidance"]["name"] == "classifier" and info["guidance"]["scale"] == 0


@pytest.mark.parametrize("sampler,steps", [("ddpm", 5), ("ddim", 4)])
def test_classifier_sees_original_timesteps_when_respaced(guidance_runs, tmp_path, monkeypatch, sampler, steps):
    seen = []
    real_load = sample_cli.load_classifier

    def spy_load(*args):
        clf, cfg = real_load(*args)
        forward = clf.forward

        def record(x, t):
            seen.append(t.clone())
            return forward(x, t)

        clf.forward = record
        return clf, cfg

    monkeypatch.setattr(sample_cli, "load_classifier", spy_load)
    sample_cli.generate(_cfg(guidance_runs["cond"], tmp_path, *_clf(guidance_runs, 1), f"sampler={sampler}",
                             f"sampler.steps={steps}"))
    ts = sorted({int(v) for t in seen for v in t})
    assert len(ts) == steps and max(ts) > 2 * steps, f"the classifier got respaced indices {ts}, not original steps"
    assert ts == sorted(respaced(create_diffusion("linear", 50), sampler, steps).timestep_map.tolist())


def test_unconditional_model_targets_given_or_uniform_over_classifier_classes(guidance_runs, tmp_path):
    r = guidance_runs
    img, labels, _ = sample_cli.generate(_cfg(r["uncond"], tmp_path, *_clf(r, 2), "classes=[3,7]"))
    assert labels.tolist() == [3, 7, 3, 7, 3, 7] and img.shape == (6, 8, 8, 1)
    _, uniform, _ = sample_cli.generate(_cfg(r["uncond"], tmp_path, *_clf(r, 2), "num_samples=40", "batch_size=40"))
    assert uniform.min() >= 0 and uniform.max() <= 9 and len(set(uniform.tolist())) >= 6
    _, unguided, _ = sample_cli.generate(_cfg(r["uncond"], tmp_path))
    assert unguided is None


def test_cfg_weight_one_is_the_conditional_model_and_both_guidances_combine(guidance_runs, tmp_path):
    r = guidance_runs
    cond, _, _ = sample_cli.generate(_cfg(r["cond"], tmp_path, "classes=[1,2]"))
    w1, _, _ = sample_cli.generate(_cfg(r["cond"], tmp_path, "classes=[1,2]", "guidance=cfg", "guidance.scale=1"))
    w30, _, _ = sample_cli.generate(_cfg(r["cond"], tmp_path, "classes=[1,2]", "guidance=cfg", "guidance.scale=30"))
    both, _, _ = sample_cli.generate(_cfg(r["cond"], tmp_path, "classes=[1,2]", "guidance=classifier+cfg",
                                          f"guidance.classifier_run={r['clf']}", "guidance.scale=50",
                                          "guidance.cfg_scale=30"))
    # w = 1 mixes uncond + 1 * (cond - uncond): the conditional output up to float rounding (one uint8 level).
    assert np.abs(cond.astype(int) - w1.astype(int)).max() <= 1
    assert not np.array_equal(cond, w30) and not np.array_equal(w30, both)


def test_cfg_needs_a_null_class(guidance_runs, tmp_path):
    with pytest.raises(ValueError, match="null class"):
        sample_cli.generate(_cfg(guidance_runs["uncond"], tmp_path, "guidance=cfg"))


def test_refuses_classifier_with_other_T(guidance_runs, tmp_path):
    with pytest.raises(RunError, match=r"T=40 diffusion steps but the diffusion model has T=50"):
        sample_cli.generate(_cfg(guidance_runs["cond"], tmp_path, *_clf(guidance_runs, 1, "clf_t40")))


def _config(schedule, T):
    return OmegaConf.create({"task": {"diffusion": {"_target_": "beatgans.diffusion.create_diffusion",
                                                    "schedule": schedule, "num_timesteps": T}}})


def test_refuses_other_schedule_resolution_or_classes():
    model_diff = create_diffusion("linear", 100).respace("10")  # a respaced model still matches its base
    unet = UNet(8, 1, 32, 1, [], channel_mult=[1], num_classes=10)
    clf = EncoderClassifier(8, 1, 32, 10, 1, [], channel_mult=[1], num_head_channels=32)
    check_classifier_matches(model_diff, unet, _config("linear", 100), clf, _config("linear", 100))
    with pytest.raises(RunError, match=r"different noise schedule \(cosine\) than the diffusion model \(linear\)"):
        check_classifier_matches(model_diff, unet, _config("cosine", 100), clf, _config("linear", 100))
    with pytest.raises(RunError, match="works at 16px but the diffusion model at 8px"):
        check_classifier_matches(model_diff, unet, _config("linear", 100),
                                 EncoderClassifier(16, 1, 32, 10, 1, [], channel_mult=[1], num_head_channels=32))
    with pytest.raises(RunError, match="has 5 classes but the class-conditional diffusion model 10"):
        check_classifier_matches(model_diff, unet, None,
                                 EncoderClassifier(8, 1, 32, 5, 1, [], channel_mult=[1], num_head_channels=32))


def test_multirun_over_scales_writes_one_run_dir_per_scale(guidance_runs, tmp_path):
    cmd = [sys.executable, "-m", "beatgans.cli.sample", "-m", f"run={guidance_runs['uncond']}",
           "guidance=classifier", f"guidance.classifier_run={guidance_runs['clf']}", "guidance.scale=0,1,10",
           "sampler=ddpm", "sampler.steps=4", "num_samples=4", "classes=[0,1]", f"hydra.sweep.dir={tmp_path}"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", WANDB_MODE="offline")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, scale in (("0", 0), ("1", 1), ("2", 10)):
        run = tmp_path / job
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["guidance"]["scale"] == scale and 0.0 <= metrics["target_accuracy"] <= 1.0
        npz = np.load(metrics["samples_npz"])
        assert npz["arr_0"].shape == (4, 8, 8, 1) and npz["arr_1"].tolist() == [0, 1, 0, 1]
        assert (run / "grid.png").is_file() and (run / ".hydra" / "config.yaml").is_file()
