"""The Diffusion-GAN experiment configs compose, and their task builds the intended objects."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from beatgans.gan import AdaptiveDiffusion
from beatgans.lit.diffusion_gan import DiffusionGANModule

CONF = str(Path(__file__).resolve().parents[2] / "conf")
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


def test_toy_configs_follow_the_recorded_protocol():
    """conf/experiment/toy holds the protocol of experiments/diffusion_gan_toy/loop.py's 10k table."""
    import inspect
    import sys

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
    from loop import train_toy

    defaults = {k: v.default for k, v in inspect.signature(train_toy).parameters.items()}
    for name in ("toy/diffusion_gan_25gaussians", "toy/gan_25gaussians"):
        cfg = _compose(name)
        iterations = cfg.trainer.max_steps // 2  # G and D optimizer steps per iteration
        assert iterations == 10_000 and cfg.data.batch_size == defaults["batch"]
        assert cfg.data.num_points == cfg.data.batch_size * iterations  # fresh points for every batch
        for opt in (cfg.task.g_optimizer, cfg.task.d_optimizer):
            assert opt.lr == defaults["lr"] and tuple(opt.betas) == defaults["betas"]
        assert cfg.task.r1_gamma == 0 and cfg.task.ema_rate == 0.999 and cfg.task.eval_std == defaults["data_std"]
        assert cfg.task.diffusion.target == defaults["target"] and cfg.task.diffusion.sigma == 0.05


def test_toy_experiment_trains_through_the_cli(tmp_path):
    """beatgans-train experiment=toy/diffusion_gan_25gaussians end to end (shrunk): metrics.json, history,
    scatter plot and csv rows with the controller state."""
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
    assert metrics["gan/iterations"] == 20 and 0 <= metrics["toy/modes_covered"] <= 25
    assert len(json.loads((tmp_path / "gan_history.json").read_text())) >= 1
    assert (tmp_path / "samples" / "scatter_it0000020.png").is_file()
    rows = [r for r in csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))) if r.get("gan/T")]
    assert len(rows) == 4 and all(10 <= float(r["gan/T"]) <= 1000 for r in rows)


def test_toy_loop_fixed_dataset_epochs(tmp_path):
    """loop.py's finite-data option (balanced grid sampling: exactly size/25 points per mode), and a
    short run trains on it."""
    import json
    import sys

    import torch

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
    from loop import train_toy

    from beatgans.data.toy2d import gaussian_grid_modes, sample_gaussian_grid

    pts, _ = sample_gaussian_grid(250, std=0.01, spacing=2.0, generator=torch.Generator().manual_seed(0), balanced=True)
    nearest = torch.cdist(pts, gaussian_grid_modes(2.0)).argmin(1)
    assert pts.shape == (250, 2) and torch.bincount(nearest, minlength=25).tolist() == [10] * 25
    with pytest.raises(ValueError, match="multiple of 25"):
        sample_gaussian_grid(26, std=0.01, generator=torch.Generator(), balanced=True)
    m = train_toy(tmp_path, seed=0, noise_enabled=True, sigma=0.05, iterations=30, batch=40, z_dim=5,
                  dataset_size=100, log_every=10)
    assert m["dataset_size"] == 100 and m["z_dim"] == 5 and m["iterations"] == 30
    assert len(json.loads((tmp_path / "gan_history.json").read_text())) == 3


def test_ct_protocol_presets_match_the_loop_runs():
    """toy/*_ct presets hold the third protocol recorded in experiments/diffusion_gan_toy (run.py --tag ct)."""
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


def test_toy_loop_fixed_t_arm_keeps_the_noise_at_its_maximum(tmp_path):
    """run.py's diffusion_gan_fixedT1000 ablation: p starts at 1 and the frozen controller never moves
    T off 1000, whatever r_d does; the default arm starts at t_min. forces.py analyses the run."""
    import json
    import sys

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
    from loop import train_toy
    from run import ARMS

    m = train_toy(tmp_path / "fixed", seed=0, iterations=40, batch=20, z_dim=3, log_every=4,
                  **ARMS["diffusion_gan_fixedT1000"])
    history = json.loads((tmp_path / "fixed" / "gan_history.json").read_text())
    assert m["p0"] == 1.0 and m["T"] == 1000 and [h["T"] for h in history] == [1000] * 10
    assert all(h["p"] == 1.0 for h in history)
    from forces import analyse, plot  # the force diagnostic runs on that run's saved nets

    res = analyse(tmp_path / "fixed", ARMS["diffusion_gan_fixedT1000"], samples=200, draws=2, mixture_draws=2)
    assert list(res["per_step"]) == ["0", "10", "50", "100", "200", "300", "500", "700", "1000"]
    assert res["off_mode"] == len(res["_pts"]) > 0 and res["training_mixture"]["norm"] > 0
    assert res["num_clean"] == 32 and res["t_dist"] == "priority"
    plot(tmp_path / "forces.png", res)
    assert (tmp_path / "forces.png").stat().st_size > 1000
    m = train_toy(tmp_path / "adaptive", seed=0, iterations=4, batch=20, z_dim=3, log_every=4, **ARMS["diffusion_gan"])
    assert m["p0"] == 0.0 and m["T"] <= 11 and m["num_clean"] == 32  # one controller update away from t_min = 10
    m = train_toy(tmp_path / "noclean", seed=0, iterations=4, batch=20, z_dim=3, log_every=4,
                  **ARMS["diffusion_gan_fixedT1000_noclean"])
    assert m["num_clean"] == 0 and m["T"] == 1000


def test_toy_loop_progress_points_leave_training_unchanged(tmp_path, monkeypatch):
    """loop.py records coverage at every eighth of a run; that sampling draws its own latents, so a
    run's first half is the same trajectory as a run of half the length (the ct200k runs' 100k point).
    The single-change arms of run.py carry exactly one reference setting back."""
    import json
    import sys

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
    import run
    from loop import train_toy
    from run import ARMS

    kw = dict(seed=1, batch=20, z_dim=3, log_every=4, dataset_size=100, spacing=0.707, data_std=0.0177)
    arm = "diffusion_gan_uniformT500_noclean"
    monkeypatch.setattr(run, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    long = train_toy(run.run_dir(arm, 1, "long"), iterations=48, **kw, **ARMS[arm])
    short = train_toy(run.run_dir(arm, 1, "short"), iterations=24, **kw, **ARMS[arm])
    assert [p["iteration"] for p in long["progress"]] == [6, 12, 18, 24, 30, 36, 42]
    assert [p["iteration"] for p in short["progress"]] == [3, 6, 9, 12, 15, 18, 21]
    h_long = json.loads((run.run_dir(arm, 1, "long") / "gan_history.json").read_text())
    h_short = json.loads((run.run_dir(arm, 1, "short") / "gan_history.json").read_text())
    assert h_long[:6] == h_short and len(h_long) == 12  # bit-identical losses and D outputs up to iteration 24
    mid = long["progress"][3]
    for k in ("modes_covered", "hq_share", "ema_modes_covered", "ema_hq_share"):
        assert mid[k] == short[k]
    # run.py's aggregation over the seeds that finished: the table marks the partial mean, and the
    # coverage curve is drawn from the progress points
    table = run.aggregate([0, 1], 48, "long")
    assert f"| {arm} | 1 | {long['modes_covered']:.0f}/25 |" in table and "(1 of 2 seeds)" in table
    assert (tmp_path / "results" / "long" / "coverage.png").stat().st_size > 1000
    defaults = {"p": 0.0, "ada_kimg": 100.0, "num_clean": 32, "t_dist": "priority"}  # train_toy's
    lead_full = {**defaults, **ARMS[arm]}
    for single, back in (("diffusion_gan_uniformT500", {"num_clean": 32}),
                         ("diffusion_gan_uniform_noclean", {"p": 0.0, "ada_kimg": 100.0}),
                         ("diffusion_gan_priorityT500_noclean", {"t_dist": "priority"})):
        with_defaults = {**defaults, **ARMS[single]}
        assert {k for k in lead_full if lead_full[k] != with_defaults[k]} == set(back)
        assert all(with_defaults[k] == v for k, v in back.items())


@pytest.mark.parametrize("grid", [5, 6])
def test_toy_modes_counts_the_saved_generators(tmp_path, grid):
    """modes.py loads a run's raw and EMA generators from nets.pt and counts their samples per mode
    (100 per mode of the run's grid): generators whose last layer is zeroed and biased to one centre
    put all of them on it. A run's metrics without "grid" (those before the option) mean 5x5."""
    import json
    import sys

    import torch

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
    from modes import per_mode, plot

    from beatgans.data.toy2d import gaussian_grid_modes
    from beatgans.nets.toy import ToyGenerator

    spacing, std = 0.707, 0.0177
    centres = gaussian_grid_modes(spacing, grid)
    nets = {"z_dim": 4}
    for key, k in (("generator", 3), ("ema_generator", 17)):
        G = ToyGenerator(z_dim=4)
        with torch.no_grad():
            G.out.weight.zero_()
            G.out.bias.copy_(centres[k] + torch.tensor([1.5 * std, 0.0]))  # 1.5 std off: still within 3
        nets[key] = G.state_dict()
    nets["discriminator"] = {}
    torch.save(nets, tmp_path / "nets.pt")
    metrics = {"spacing": spacing, "data_std": std, **({} if grid == 5 else {"grid": grid})}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    res = per_mode(tmp_path)
    assert torch.equal(res["modes"], centres)
    for name, k in (("G", 3), ("EMA G", 17)):
        expected = torch.zeros(grid * grid, dtype=torch.long)
        expected[k] = 100 * grid * grid
        assert torch.equal(res[name], expected)
    plot(tmp_path / "modes.png", res)
    assert (tmp_path / "modes.png").stat().st_size > 1000


def test_toy_loop_even_grid(tmp_path, monkeypatch):
    """loop.py's ``grid``: a 6x6 run trains on 36 balanced modes, and its metrics, table row and
    line census count 36 modes; no row or column of an even grid passes through the centre."""
    import json
    import sys

    import torch

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
    import run
    from lines import empty_lines
    from loop import train_toy

    from beatgans.data.toy2d import gaussian_grid_modes, sample_gaussian_grid

    centres = gaussian_grid_modes(0.707, 6)
    assert centres.shape == (36, 2) and centres[:, 0].abs().min() == pytest.approx(0.3535)
    pts, _ = sample_gaussian_grid(144, std=0.01, spacing=0.707, grid=6, generator=torch.Generator().manual_seed(0),
                                    balanced=True)
    assert torch.bincount(torch.cdist(pts, centres).argmin(1), minlength=36).tolist() == [4] * 36
    arm = "diffusion_gan_uniformT500_noclean_sigma0.2"
    monkeypatch.setattr(run, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    out = run.run_dir(arm, 0, "g6test")
    m = train_toy(out, seed=0, iterations=8, batch=36, z_dim=3, log_every=4, dataset_size=144, spacing=0.707,
                  data_std=0.0177, grid=6, **run.ARMS[arm])
    assert m["grid"] == 6 and m["num_modes"] == 36 and m["ema_num_modes"] == 36
    assert json.loads((out / "metrics.json").read_text())["grid"] == 6
    table = run.aggregate([0], 8, "g6test")
    assert f"| {arm} | 0 | {m['modes_covered']:.0f}/36 |" in table
    names, stray = empty_lines(torch.zeros(36), centres)
    assert len(names) == 12 and stray == [] and not any("+0.00" in n for n in names)


def test_toy_lines_census_names_empty_rows_and_columns(tmp_path):
    """lines.py names the grid lines with no covered mode and the other uncovered modes: the middle
    column empty, one stray corner below the threshold, the EMA G's row y = -0.71 empty; and tallies
    the empty lines per arm by their distance from the centre."""
    import json
    import sys

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
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
    (tmp_path / "modes_armA_seed4.json").write_text(json.dumps({"G": four_corners, "EMA G": full, "modes": modes.tolist()}))
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

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
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


def test_toy_loop_continues_from_a_finished_run(tmp_path):
    """loop.py's ``init_from`` loads G, D and the EMA G of a finished run: with lr 0 the continued
    raw G is the source's, so its coverage numbers and saved weights match exactly, while the EMA
    G, whose shadow starts from the source's, keeps moving toward the (unchanged) raw G. The
    sigma-0.2 arm differs from the lead arm in sigma alone."""
    import json
    import sys

    import torch

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
    from loop import train_toy
    from run import ARMS

    lead, wide = ARMS["diffusion_gan_uniformT500_noclean"], ARMS["diffusion_gan_uniformT500_noclean_sigma0.2"]
    assert {k: v for k, v in wide.items() if k != "sigma"} == {k: v for k, v in lead.items() if k != "sigma"}
    assert (lead["sigma"], wide["sigma"]) == (0.05, 0.2)
    wider = ARMS["diffusion_gan_uniformT500_noclean_sigma0.5"]
    assert {**wider, "sigma": 0.05} == lead and wider["sigma"] == 0.5
    kw = dict(batch=20, z_dim=3, log_every=4, dataset_size=100, spacing=0.707, data_std=0.0177)
    src = train_toy(tmp_path / "src", seed=0, iterations=40, lr=2e-3, **kw, **lead)
    cont = train_toy(tmp_path / "cont", seed=0, iterations=8, lr=0.0, init_from=tmp_path / "src", **kw, **wide)
    assert (cont["modes_covered"], cont["hq_share"]) == (src["modes_covered"], src["hq_share"])
    assert cont["init_from"] == str(tmp_path / "src") and cont["sigma"] == 0.2 and src["init_from"] is None
    a, b = (torch.load(tmp_path / d / "nets.pt") for d in ("src", "cont"))
    for net in ("generator", "discriminator"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net])
    assert not all(torch.equal(a["ema_generator"][k], b["ema_generator"][k]) for k in a["ema_generator"])
    train_toy(tmp_path / "fresh", seed=0, iterations=8, lr=0.0, **kw, **wide)  # the same run without init_from
    fresh = torch.load(tmp_path / "fresh" / "nets.pt")["generator"]
    assert not all(torch.equal(fresh[k], a["generator"][k]) for k in fresh)
    assert json.loads((tmp_path / "cont" / "metrics.json").read_text())["iterations"] == 8
    with pytest.raises(ValueError, match="z_dim 3"):
        train_toy(tmp_path / "bad", seed=0, iterations=1, init_from=tmp_path / "src", **{**kw, "z_dim": 4}, **wide)


def test_toy_loop_g_out_gain_scales_only_the_initial_output_weights(tmp_path):
    """``g_out_gain``: G's initial output weights are multiplied (bias and the rest untouched, no RNG
    drawn), so with lr 0 the saved G is the gain-1 G with its last weight scaled, and the first
    samples spread from a centre blob (std ~0.08) to about the grid's spread."""
    import sys

    import torch

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
    from loop import train_toy

    kw = dict(seed=3, noise_enabled=False, sigma=0.05, iterations=1, batch=20, z_dim=50, lr=0.0, log_every=1)
    m1 = train_toy(tmp_path / "g1", **kw)
    m12 = train_toy(tmp_path / "g12", g_out_gain=12.0, **kw)
    assert m1["g_out_gain"] == 1.0 and m12["g_out_gain"] == 12.0
    g1, g12 = (torch.load(tmp_path / d / "nets.pt")["generator"] for d in ("g1", "g12"))
    for k in g1:
        want = g1[k] * 12 if k == "out.weight" else g1[k]
        assert torch.equal(g12[k], want), k
    from beatgans.nets.toy import ToyGenerator

    G = ToyGenerator(z_dim=50)
    z = torch.randn(4000, 50, generator=torch.Generator().manual_seed(0))
    spread = []
    for state in (g1, g12):
        G.load_state_dict(state)
        with torch.no_grad():
            spread.append(G(z).std(0).mean().item())
    assert spread[0] < 0.2 and 0.7 < spread[1] < 1.5


def test_toy_loop_lr_d_moves_only_the_discriminator(tmp_path):
    """``lr_d``: D's own Adam lr. With lr 0 for G and a positive lr_d, after a few iterations G is
    exactly its initial self while D has moved; lr_d = None keeps the single lr (D frozen too)."""
    import sys

    import torch

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
    from loop import train_toy

    kw = dict(seed=1, noise_enabled=True, sigma=0.2, iterations=3, batch=20, z_dim=4, lr=0.0, log_every=1)
    same = train_toy(tmp_path / "same", **kw)
    ttur = train_toy(tmp_path / "ttur", lr_d=1e-3, **kw)
    assert same["lr_d"] == 0.0 and ttur["lr_d"] == 1e-3
    a, b = (torch.load(tmp_path / d / "nets.pt") for d in ("same", "ttur"))
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])
    moved = [k for k in a["discriminator"] if not torch.equal(a["discriminator"][k], b["discriminator"][k])]
    assert "body.0.weight" in moved


def test_toy_loop_hidden_sets_both_widths_and_modes_reads_it(tmp_path):
    """``hidden``: both nets' hidden layers get that width, metrics.json and nets.pt record it,
    modes.py rebuilds the nets at the saved width (its counts equal the loop's own metrics), and a
    continuation from a run of another width is refused with both widths named."""
    import sys

    import torch

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
    from loop import train_toy
    from modes import per_mode

    kw = dict(seed=0, noise_enabled=True, sigma=0.2, iterations=6, batch=20, z_dim=3, lr=1e-3, log_every=2)
    m = train_toy(tmp_path / "w32", hidden=32, **kw)
    assert m["hidden"] == 32
    nets = torch.load(tmp_path / "w32" / "nets.pt")
    assert nets["hidden"] == 32
    assert nets["generator"]["body.0.weight"].shape == (32, 3) and nets["generator"]["out.weight"].shape == (2, 32)
    assert nets["discriminator"]["body.2.weight"].shape == (32, 32)
    counts = per_mode(tmp_path / "w32")
    assert int((counts["G"] >= 20).sum()) == m["modes_covered"]
    assert int((counts["EMA G"] >= 20).sum()) == m["ema_modes_covered"]
    with pytest.raises(ValueError, match="width 32.*128"):
        train_toy(tmp_path / "bad", init_from=tmp_path / "w32", **{**kw, "iterations": 1})


def test_sigma02_preset_is_the_loop_arm():
    """toy/diffusion_gan_25gaussians_ct_sigma02 builds the AdaptiveDiffusion of run.py's
    diffusion_gan_uniformT500_noclean_sigma0.2 arm (T frozen at 500, no clean slots, uniform t,
    sigma 0.2) on the ct protocol, for 400k iterations."""
    import sys

    import torch

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
    from run import ARMS

    cfg = _compose("toy/diffusion_gan_25gaussians_ct_sigma02")
    assert cfg.trainer.max_steps // 2 == 400_000 and cfg.data.num_points == 2000 and cfg.net.generator.z_dim == 50
    ours = instantiate(cfg.task.diffusion)
    ref = AdaptiveDiffusion(seed=0, **ARMS["diffusion_gan_uniformT500_noclean_sigma0.2"])
    for key in ("sigma", "num_clean", "t_dist", "t_max", "p", "ada_kimg", "T", "noise_enabled"):
        assert getattr(ours, key) == getattr(ref, key), key
    assert ours.T == 500 and ours.sigma == 0.2 and ours.num_clean == 0
    assert (ours.sample_t(4096) > 0).all()  # every D input noised
    for _ in range(64):
        ours.accumulate(torch.full((100,), -5.0))  # D calls every real fake: an adaptive p would fall
        ours.step(100)
    assert ours.T == 500 and ours.p == 1.0


def test_toy_summary_groups_runs_by_setting_and_history(tmp_path):
    """summary.py keeps the runs of one protocol, follows --init-from back so 400k+400k is its own
    setting, counts an identical rerun once and refuses a rerun that disagrees, and tabulates the
    per-seed EMA G modes, the means and how many seeds cover every mode."""
    import json
    import sys

    sys.path.insert(0, str(Path(CONF).parent / "experiments" / "diffusion_gan_toy"))
    from summary import CT_PROTOCOL, group, label, load_runs, parse_name, table

    arm = "diffusion_gan_uniformT500_noclean_sigma0.2"
    assert parse_name(f"ct400k_{arm}_seed3") == (arm, 3)  # the longest arm, not diffusion_gan_uniformT500_noclean
    assert parse_name("gan_seed0") == ("gan", 0)
    assert parse_name("ct_notanarm_seed0") is None

    def put(name, iterations, ema, raw, hq=0.8, init=None, **over):
        d = tmp_path / name
        d.mkdir()
        m = {**CT_PROTOCOL, "iterations": iterations, "grid": 5, "hidden": 128, "modes_covered": raw,
             "ema_modes_covered": ema, "hq_share": hq - 0.1, "ema_hq_share": hq, **over}
        if init:
            m["init_from"] = f"/elsewhere/runs/{init}"  # only the directory name counts
        (d / "metrics.json").write_text(json.dumps(m))

    put(f"t400_{arm}_seed0", 400_000, 20, 18, hq=0.7)
    put(f"t400_{arm}_seed1", 400_000, 25, 22, hq=0.9)
    put(f"rerun_{arm}_seed1", 400_000, 25, 22, hq=0.9)  # identical rerun: counted once
    put(f"t800_{arm}_seed0", 400_000, 25, 24, init=f"t400_{arm}_seed0")
    put(f"slow_{arm}_seed0", 400_000, 14, 14, lr_d=5e-5)
    put("t400_gan_seed0", 400_000, 4, 4)
    put("other_gan_seed0", 400_000, 9, 9, batch=512)  # another protocol: left out
    (tmp_path / f"live_{arm}_seed2").mkdir()  # unfinished: no final coverage yet
    (tmp_path / f"live_{arm}_seed2" / "metrics.json").write_text(json.dumps({**CT_PROTOCOL, "iterations": 1}))

    runs = load_runs(tmp_path)
    assert f"live_{arm}_seed2" not in runs
    assert [r.name for r in runs[f"t800_{arm}_seed0"].history] == [f"t400_{arm}_seed0", f"t800_{arm}_seed0"]
    groups = group(runs, CT_PROTOCOL, grid=5)
    assert [label(k) for k in groups] == [
        "plain GAN, 400k", f"{arm}, D lr x0.25, 400k", f"{arm}, 400k", f"{arm}, 400k+400k"]
    rows = table(groups).splitlines()[2:]
    assert rows[2] == f"| {arm}, 400k | 0, 1 | 20, 25 | 22.5/25 | 20.0/25 | 1 of 2 | 0.800 | rerun, t400 |"
    assert rows[3] == f"| {arm}, 400k+400k | 0 | 25 | 25.0/25 | 24.0/25 | 1 of 1 | 0.800 | t800 |"

    put(f"bad_{arm}_seed1", 400_000, 24, 22, hq=0.9)  # same setting and seed, another result
    with pytest.raises(ValueError, match="different results"):
        group(load_runs(tmp_path), CT_PROTOCOL, grid=5)
    put(f"orphan_{arm}_seed4", 400_000, 20, 20, init="missing_run")
    with pytest.raises(ValueError, match="missing_run"):
        load_runs(tmp_path)
