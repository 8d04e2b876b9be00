"""`beatgans-sample sampler=dpm_solver` with classifier guidance and CFG on the tiny trained guidance runs (a
learned-variance conditional model and a noisy classifier): the guided eps reaches the solver, the classifier
sees the solver's original timesteps, and CFG at scale 1 is the conditional model."""

import numpy as np

import beatgans.cli.sample as sample_cli
from beatgans.diffusion import create_diffusion, solver_timesteps
from tests.conftest import compose


def _cfg(run, out, *extra):
    return compose("sample", [f"run={run}", "sampler=dpm_solver", "sampler.steps=6", "num_samples=6",
                              "batch_size=6", *extra], output_dir=out)


def test_classifier_guidance_through_dpm_solver(guidance_runs, tmp_path, monkeypatch):
    r = guidance_runs
    clf = ["guidance=classifier", f"guidance.classifier_run={r['clf']}"]
    seen = []
    real_load = sample_cli.load_classifier

    def spy_load(*args):
        model, cfg = real_load(*args)
        forward = model.forward
        model.forward = lambda x, t: seen.append(t.clone()) or forward(x, t)
        return model, cfg

    monkeypatch.setattr(sample_cli, "load_classifier", spy_load)
    none, _, _ = sample_cli.generate(_cfg(r["cond"], tmp_path))
    zero, _, info = sample_cli.generate(_cfg(r["cond"], tmp_path, *clf, "guidance.scale=0"))
    strong, _, _ = sample_cli.generate(_cfg(r["cond"], tmp_path, *clf, "guidance.scale=50"))
    assert np.array_equal(none, zero) and not np.array_equal(none, strong)
    assert info["nfe"] == 6 and info["sampler"] == "dpm_solver"
    grid = solver_timesteps(create_diffusion("linear", 50), 6, "time_uniform")
    assert [int(t[0]) for t in seen] == grid * 2  # scale 0 and scale 50 runs


def test_cfg_through_dpm_solver(guidance_runs, tmp_path):
    r = guidance_runs
    cond, _, _ = sample_cli.generate(_cfg(r["cond"], tmp_path, "sampler.order=3"))
    w1, _, info = sample_cli.generate(_cfg(r["cond"], tmp_path, "sampler.order=3", "guidance=cfg",
                                           "guidance.scale=1"))
    w4, _, _ = sample_cli.generate(_cfg(r["cond"], tmp_path, "sampler.order=3", "guidance=cfg", "guidance.scale=4"))
    assert np.abs(w1.astype(int) - cond.astype(int)).max() <= 1  # uint8: equal up to float rounding
    assert not np.array_equal(w4, cond) and info["nfe"] == 6
