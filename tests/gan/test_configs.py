"""The Diffusion-GAN experiment configs compose, and their task builds the intended objects."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from beatgans.gan import AdaptiveDiffusion
from beatgans.lit.diffusion_gan import DiffusionGANModule

REPO = Path(__file__).resolve().parents[2]
CONF = str(REPO / "src" / "beatgans" / "conf")
EXPERIMENTS = ["toy/diffusion_gan_25gaussians", "toy/gan_25gaussians", "toy/diffusion_gan_25gaussians_target02",
               "toy/diffusion_gan_25gaussians_ct", "toy/gan_25gaussians_ct",
               "digits/diffusion_gan", "digits/gan", "cifar10/diffusion_gan_dcgan", "cifar10/gan_dcgan",
               "cifar10/diffusion_gan_sngan", "cifar10/gan_sngan"]


def _compose(name: str, *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}", *overrides])


def test_experiments_compose_with_matching_baselines():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        for name in EXPERIMENTS:
            cfg = compose("train", overrides=[f"experiment={name}"])
            assert cfg.task._target_.endswith("DiffusionGANModule"), name
            assert cfg.task.diffusion.noise_enabled == (not name.split("/")[1].startswith("gan")), name


@pytest.mark.parametrize("name", ["toy/diffusion_gan_25gaussians", "digits/gan"])
def test_task_instantiates(name):
    cfg = _compose(name, "net.generator.base=8" if name.startswith("digits") else "net.generator.hidden=8")
    module = instantiate(cfg.task)
    assert isinstance(module, DiffusionGANModule) and isinstance(module.diffusion, AdaptiveDiffusion)
    assert module.diffusion.noise_enabled == name.startswith("toy")
    if name.startswith("toy"):
        assert module.eval_modes.shape == (25, 2)
        dm = instantiate(cfg.data)
        assert dm.num_classes is None


def test_toy_experiment_trains_through_the_cli(tmp_path):
    """beatgans-train experiment=toy/diffusion_gan_25gaussians end to end (shrunk): metrics.json, history,
    scatter plot and csv rows with the controller state; the toy analysis scripts (modes.py, forces.py)
    read the run's Lightning checkpoint. Golden values of this seed: T climbs 13 -> 23 (r_d = 1 above
    the 0.6 target at every update) and one mode is covered after 20 iterations."""
    import csv
    import json

    from beatgans.cli.train import train
    from tests.conftest import compose

    cfg = compose("train", ["experiment=toy/diffusion_gan_25gaussians", "trainer.max_steps=40",
                            "data.num_points=1280", "data.batch_size=64", "task.plot_every=20",
                            "task.eval_samples=500", "logger=csv", "trainer.log_every_n_steps=5",
                            "trainer.enable_progress_bar=false", "print_config=false",
                            "net.generator.hidden=16", "net.discriminator.hidden=16"], output_dir=tmp_path)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    assert not [w for w in caught if "in eval mode" in str(w.message)]  # only the EMA shadows are eval
    assert not [w for w in caught if "no `validation_step`" in str(w.message)]  # GAN tasks do not validate
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["gan/iterations"] == 20 and metrics["toy/modes_covered"] == 1 and metrics["gan/T"] == 23
    assert len(json.loads((tmp_path / "gan_history.json").read_text())) >= 1
    assert (tmp_path / "samples" / "scatter_it0000020.png").is_file()
    rows = [r for r in csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))) if r.get("gan/T")]
    assert [float(r["gan/T"]) for r in rows] == [13.0, 15.0, 18.0, 23.0]
    import sys

    sys.path.insert(0, str(REPO / "experiments" / "diffusion_gan_toy"))
    from forces import analyse
    from modes import per_mode

    res = per_mode(tmp_path)  # 100 samples per mode from the raw and EMA generators of last.ckpt
    assert res["spacing"] == 2.0 and res["G"].shape == (25,) and (int(res["G"].sum()), int(res["EMA G"].sum())) == (
        1245, 1329)
    forces = analyse(tmp_path, samples=200, draws=2, mixture_draws=2)
    assert forces["T"] == 23 and list(forces["per_step"]) == ["0", "10"] and forces["off_mode"] == 118


def test_balanced_grid_sampling():
    """Balanced grid sampling (the ct protocol's finite set): exactly n / 25 points per mode."""
    import torch

    from beatgans.data.toy2d import gaussian_grid_modes, sample_gaussian_grid

    pts, _ = sample_gaussian_grid(250, std=0.01, spacing=2.0, generator=torch.Generator().manual_seed(0), balanced=True)
    nearest = torch.cdist(pts, gaussian_grid_modes(2.0)).argmin(1)
    assert pts.shape == (250, 2) and torch.bincount(nearest, minlength=25).tolist() == [10] * 25
    with pytest.raises(ValueError, match="multiple of 25"):
        sample_gaussian_grid(26, std=0.01, generator=torch.Generator(), balanced=True)


def test_ct_protocol_presets_hold_the_recorded_protocol():
    """toy/*_ct presets hold the protocol recorded in experiments/diffusion_gan_toy/README.md."""
    import torch

    from beatgans.data.toy2d import gaussian_grid_modes

    for name in ("toy/diffusion_gan_25gaussians_ct", "toy/gan_25gaussians_ct"):
        cfg = _compose(name)
        assert cfg.trainer.max_steps // 2 == 100_000 and cfg.data.num_points == 2000 and cfg.data.batch_size == 100
        assert cfg.net.generator.z_dim == 50 and cfg.task.r1_gamma == 0
        for opt in (cfg.task.g_optimizer, cfg.task.d_optimizer):
            assert opt.lr == 2e-4 and tuple(opt.betas) == (0.9, 0.999)
        assert abs(cfg.data.params.spacing - 2 / 2.828) < 1e-12 and abs(cfg.task.eval_std - 0.05 / 2.828) < 1e-12
        dm = instantiate(cfg.data)
        dm.setup("fit")
        pts = torch.stack([dm._train[i][0] for i in range(len(dm._train))])
        modes = instantiate(cfg.task.eval_modes)
        torch.testing.assert_close(modes, gaussian_grid_modes(2 / 2.828))
        nearest = torch.cdist(pts, modes).min(1)
        assert len(pts) == 2000 and torch.bincount(nearest.indices, minlength=25).tolist() == [80] * 25
        assert nearest.values.max() < 6 * cfg.task.eval_std


def test_only_ema_in_eval_mode():
    """beatgans-train hides Lightning's eval-mode warning only when the eval modules are the EMA shadows."""
    import torch

    from beatgans.cli.train import only_ema_in_eval_mode

    module = instantiate(_compose("toy/diffusion_gan_25gaussians", "net.generator.hidden=8").task)
    assert only_ema_in_eval_mode(module)
    module.discriminator.eval()  # a user's frozen part: the warning must stay
    assert not only_ema_in_eval_mode(module)
    assert not only_ema_in_eval_mode(torch.nn.Linear(2, 2))


def test_even_grid_has_no_central_line():
    """A 6x6 grid samples 36 balanced modes; no row or column of an even grid passes through the centre."""
    import sys

    import torch

    sys.path.insert(0, str(REPO / "experiments" / "diffusion_gan_toy"))
    from lines import empty_lines

    from beatgans.data.toy2d import gaussian_grid_modes, sample_gaussian_grid

    centres = gaussian_grid_modes(0.707, 6)
    assert centres.shape == (36, 2) and centres[:, 0].abs().min() == pytest.approx(0.3535)
    pts, _ = sample_gaussian_grid(144, std=0.01, spacing=0.707, grid=6, generator=torch.Generator().manual_seed(0),
                                    balanced=True)
    assert torch.bincount(torch.cdist(pts, centres).argmin(1), minlength=36).tolist() == [4] * 36
    names, stray = empty_lines(torch.zeros(36), centres)
    assert len(names) == 12 and stray == [] and not any("+0.00" in n for n in names)


def test_toy_lines_census_names_empty_rows_and_columns(tmp_path):
    """lines.py names the grid lines with no covered mode and the other uncovered modes: the middle
    column empty, one stray corner below the threshold, the EMA G's row y = -0.71 empty; and tallies
    the empty lines per arm by their distance from the centre."""
    import json
    import sys

    sys.path.insert(0, str(REPO / "experiments" / "diffusion_gan_toy"))
    from lines import by_distance, census, empty_lines

    from beatgans.data.toy2d import gaussian_grid_modes

    modes = gaussian_grid_modes(0.707)
    g = [0 if abs(float(x)) < 1e-6 else 50 for x, _ in modes]  # middle column empty
    g[0] = 19  # corner (-1.41, -1.41): one short of covered, on no empty line
    ema = [0 if abs(float(y) + 0.707) < 1e-3 else 40 for _, y in modes]  # row y = -0.71 empty
    ema[12] = 20  # the centre: exactly at the threshold, covered
    assert empty_lines(g, modes) == (["column x = +0.00"], [(-1.41, -1.41)])
    assert empty_lines(ema, modes) == (["row y = -0.71"], [])
    assert empty_lines([50] * 25, modes) == ([], [])
    four_corners = [50 if abs(float(x)) > 1 and abs(float(y)) > 1 else 0 for x, y in modes]
    assert len(empty_lines(four_corners, modes)[0]) == 6  # the three inner rows and three inner columns
    (tmp_path / "modes_armA_seed3.json").write_text(json.dumps({"G": g, "EMA G": ema, "modes": modes.tolist()}))
    table = census(tmp_path).splitlines()
    assert len(table) == 3
    assert table[2] == ("| armA | 3 | 19 | column x = +0.00 | (-1.41, -1.41) | 20 | row y = -0.71 | - |")
    full = [50] * 25
    (tmp_path / "modes_armA_seed4.json").write_text(
        json.dumps({"G": four_corners, "EMA G": full, "modes": modes.tolist()}))
    tally = by_distance(tmp_path).splitlines()
    assert tally[2:] == ["| armA | G | 2 | 2 | 0.00: 3, 0.71: 4 |",  # seed 3's middle column + the corners run's 6
                         "| armA | EMA G | 2 | 1 | 0.71: 1 |"]  # seed 3's row y = -0.71; seed 4 covers all


def test_toy_gap_pull_on_a_known_discriminator():
    """forces.gap_pull finds the missing column and measures the pull toward it: with D(x) = -x_0^2
    (highest on the empty middle column) and the clean view, a sample at x_0 = -0.1 in the gap is
    pulled toward it with exactly 2 * 0.1 * sigmoid(0.01), and every sample on the neighbouring
    columns is pulled toward it too."""
    import sys

    import torch

    sys.path.insert(0, str(REPO / "experiments" / "diffusion_gan_toy"))
    from forces import gap_pull

    from beatgans.data.toy2d import gaussian_grid_modes
    from beatgans.gan import AdaptiveDiffusion

    spacing, std = 0.707, 0.0177
    modes = gaussian_grid_modes(spacing)
    column = modes[:, 0].abs() < 1e-6  # ids 2, 7, 12, 17, 22
    on_modes = modes[~column].repeat_interleave(100, 0)  # 2,000 samples on the 20 other modes
    in_gap = modes[column].repeat_interleave(8, 0) + torch.tensor([-0.1, 0.0])  # 40 in the column's cells
    points = torch.cat([on_modes, in_gap])

    def D(x, t, c):
        return -x[:, 0] ** 2

    res = gap_pull(points, D, AdaptiveDiffusion(noise_enabled=False), modes, std, spacing, mixture_draws=2)
    assert res["missing"] == [2, 7, 12, 17, 22]
    assert res["gap"]["n"] == 40 and abs(res["gap"]["share"] - 40 / 2040) < 1e-6
    expected = 0.2 * torch.sigmoid(torch.tensor(0.01)).item()
    assert abs(res["gap"]["toward"] - expected) < 1e-5 and abs(res["gap"]["norm"] - expected) < 1e-5
    assert res["gap"]["share_toward"] == 1.0
    assert res["neighbours"]["n"] == 1000 and res["neighbours"]["share_toward"] == 1.0  # the x = +-0.707 columns
    assert abs(res["d_clean_missing"] - 0.5) < 1e-6
    covered = torch.sigmoid(-modes[~column, 0] ** 2).mean().item()
    assert abs(res["d_clean_covered"] - covered) < 1e-6


def test_sigma02_preset_freezes_t_at_500():
    """toy/diffusion_gan_25gaussians_ct_sigma02: T frozen at 500, no clean slots, uniform t, sigma 0.2,
    on the ct protocol, for 400k iterations (the README's best arm)."""
    import torch

    cfg = _compose("toy/diffusion_gan_25gaussians_ct_sigma02")
    assert cfg.trainer.max_steps // 2 == 400_000 and cfg.data.num_points == 2000 and cfg.net.generator.z_dim == 50
    ours = instantiate(cfg.task.diffusion)
    assert (ours.sigma, ours.num_clean, ours.t_dist, ours.t_max, ours.p, ours.T, ours.noise_enabled) == (
        0.2, 0, "uniform", 500, 1.0, 500, True)
    assert ours.ada_kimg == float("inf")
    assert (ours.sample_t(4096) > 0).all()  # every D input noised
    for _ in range(64):
        ours.accumulate(torch.full((100,), -5.0))  # D calls every real fake: an adaptive p would fall
        ours.step(100)
    assert ours.T == 500 and ours.p == 1.0


