"""Readable training output: one progress count over the whole run, plain lines off a terminal, no noise."""

import logging
import warnings

from beatgans.cli.train import train


def test_plain_progress_lines_count_steps_over_the_whole_run(tiny_train_cfg, tmp_path, caplog):
    cfg = tiny_train_cfg("trainer.enable_progress_bar=true", "trainer.max_steps=4", "+callbacks.progress.tty=false",
                         "callbacks.progress.every_n_steps=2", "callbacks.sample_grid.on_train_end=false")
    with caplog.at_level(logging.INFO):
        train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "beatgans.lit.progress"]
    steps = [m.split(" |")[0] for m in lines if m.startswith("step ")]
    assert steps == ["step 2/4 (50.0%)", "step 4/4 (100.0%)"]
    assert all("ETA" in m and "train/loss=" in m for m in lines if m.startswith("step "))
    summary = next(m for m in lines if "Total params" in m)
    assert "FLOPs" not in summary and "Flops" not in summary


def test_known_noise_is_filtered_and_lines_print_once(tiny_train_cfg, capsys):
    from beatgans.utils.logging import quiet_lightning

    logging.getLogger().addHandler(handler := logging.StreamHandler())
    try:
        import lightning.pytorch  # noqa: F401  (gives its logger a console handler when root had none)

        logging.getLogger("lightning.pytorch").addHandler(logging.StreamHandler())
        quiet_lightning()
        assert not [h for h in logging.getLogger("lightning.pytorch").handlers if type(h) is logging.StreamHandler]
        from lightning.pytorch.utilities.rank_zero import rank_zero_info

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            quiet_lightning()
            rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
            rank_zero_info("GPU available: False, used: False")
            from lightning.pytorch.utilities import _pytree

            _pytree._tree_flatten(1)  # builds a LeafSpec, which torch deprecates
        err = capsys.readouterr().err
        assert err.count("GPU available") == 1 and "Tip" not in err
        assert not [w for w in caught if "LeafSpec" in str(w.message)]
    finally:
        logging.getLogger().removeHandler(handler)


def test_eta_follows_max_time_when_it_stops_the_run_first():
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import Timer

    from beatgans.lit.progress import StepProgress

    progress = StepProgress(every_n_steps=1, tty=False)
    progress._metrics = lambda trainer: ""
    progress._t0, progress._step0 = __import__("time").monotonic() - 10.0, 0  # 10 steps in 10 s: 1 step/s
    timer = Timer(duration="00:00:01:00")
    timer.time_remaining = lambda stage=None: 30.0
    trainer = SimpleNamespace(global_step=10, max_steps=1000, callbacks=[timer])
    assert "ETA 30s (max_time)" in progress.line(trainer)  # not the ~16 min that max_steps alone implies
    trainer.callbacks = []
    assert "ETA 16m" in progress.line(trainer) and "max_time" not in progress.line(trainer)
