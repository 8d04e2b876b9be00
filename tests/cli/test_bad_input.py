"""Issue 21: bad input refused in one sentence before any work; eval reads only what it recognises."""

from __future__ import annotations

import json

import numpy as np
import pytest

from beatgans.utils.errors import UserError
from beatgans.utils.io import save_samples_npz


def _unet(**kw):
    from beatgans.nets import UNet

    args = dict(image_size=8, in_channels=1, model_channels=32, num_res_blocks=1, attention_resolutions=[4],
                channel_mult=[1, 1])
    return UNet(**{**args, **kw})


@pytest.mark.parametrize("bad", [[3], [16]])
def test_attention_resolution_matching_no_level_is_refused(bad):
    with pytest.raises(UserError, match=rf"\[{bad[0]}\] match no feature-map resolution of this 8px net, whose "
                                        r"levels work at \[8, 4\] px"):
        _unet(attention_resolutions=bad)


def test_width_not_a_multiple_of_the_groups_is_refused_for_unet_and_classifier():
    from beatgans.nets import EncoderClassifier

    with pytest.raises(UserError, match=r"gives level widths \[48, 48\], but every width must be a positive "
                                        r"multiple of 32"):
        _unet(model_channels=48)
    with pytest.raises(UserError, match=r"level widths \[32, 48\]"):
        _unet(channel_mult=[1, 1.5])
    with pytest.raises(UserError, match="multiple of 32"):
        EncoderClassifier(image_size=8, in_channels=1, model_channels=40, num_classes=10, num_res_blocks=1,
                          attention_resolutions=[4], channel_mult=[1, 1])


def test_instantiated_user_error_becomes_one_line_and_exit_2(capsys):
    from hydra.utils import instantiate

    from beatgans.cli.errors import EXIT_USER_ERROR, exit_on_user_error

    @exit_on_user_error
    def main():
        instantiate({"_target_": "beatgans.nets.UNet", "image_size": 8, "in_channels": 1, "model_channels": 32,
                     "num_res_blocks": 1, "attention_resolutions": [3], "channel_mult": [1, 1]})

    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == EXIT_USER_ERROR and err.count("\n") == 1
    assert err.startswith("Error: net.attention_resolutions=[3]: [3] match no feature-map resolution")

    @exit_on_user_error
    def bug():
        raise ValueError("a bug keeps its traceback")

    with pytest.raises(ValueError, match="a bug"):
        bug()


def test_unwritable_output_directory_is_named():
    from beatgans.cli.rundirs import check_writable

    # /proc refuses new files even for root, like a read-only mount.
    with pytest.raises(UserError, match=r"The output directory /proc/beatgans_x/run is not writable .* at /proc\)"):
        check_writable("/proc/beatgans_x/run")


def test_claimed_directory_cannot_be_claimed_again(tmp_path):
    from beatgans.cli.rundirs import claim_fresh_dir

    claim_fresh_dir(tmp_path / "a")
    with pytest.raises(UserError, match=r"is not empty \(it holds .hydra\)"):
        claim_fresh_dir(tmp_path / "a")
    (tmp_path / "b").mkdir()  # an empty directory made by the user is fine
    assert claim_fresh_dir(tmp_path / "b") == tmp_path / "b"


def test_run_ids_differ_between_processes():
    import subprocess
    import sys

    code = "from beatgans.cli.rundirs import RUN_ID; print(RUN_ID)"
    ids = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
           for _ in range(2)}
    assert len(ids) == 2


# --- beatgans-eval inputs ------------------------------------------------------------------------------


def test_nchw_and_garbage_npz_are_named(tmp_path):
    from beatgans.metrics.evaluate import load_samples

    nchw = save_samples_npz(tmp_path / "nchw.npz", np.zeros((4, 1, 8, 8), np.uint8), None)
    with pytest.raises(UserError, match=rf"Samples file {nchw}: arr_0 has shape \(4, 1, 8, 8\) but must be NHWC.*"
                                        r"looks like NCHW"):
        load_samples(nchw)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match=rf"Samples file {garbage} could not be read as an .npz"):
        load_samples(garbage)


def test_eval_of_a_sweep_evaluates_each_job_and_never_reads_grids(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from beatgans.cli.common import CONFIG_DIR
    from beatgans.cli.evaluate import evaluate
    from beatgans.data.digits import load_digits
    from beatgans.metrics import quantize_uint8
    from beatgans.utils.images import save_grid_png

    monkeypatch.setenv("BEATGANS_CACHE", str(tmp_path / "cache"))
    real = quantize_uint8(load_digits(8)[0][:60]).permute(0, 2, 3, 1).numpy()
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    for job in range(2):
        d = sweep / str(job)
        (d / ".hydra").mkdir(parents=True)
        save_samples_npz(d / "samples_60x8x8x1.npz", real if job == 0 else 255 - real, None)
        save_grid_png(d / "grid.png", np.zeros((4, 100, 100, 3), np.uint8))  # a grid must never be read
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", [f"samples={sweep}", "metrics=fid", "progress=false", "device=cpu"])
    results = evaluate(cfg)
    assert set(results) == {str(sweep / "0"), str(sweep / "1")}
    fids = [json.loads((sweep / str(j) / "metrics.json").read_text())["fid"] for j in range(2)]
    assert fids[0] < fids[1] and all(r["num_samples"] == 60 for r in results.values())
    # A run directory with a grid but no samples file says what it expects.
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    save_grid_png(tmp_path / "run" / "grid.png", np.zeros((4, 8, 8, 1), np.uint8))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", [f"samples={tmp_path / 'run'}", "metrics=fid", "device=cpu"])
    with pytest.raises(UserError, match=r"run or sweep directory without samples .npz files; expected "
                                        r"<run>/samples_\*.npz or <sweep>/<job>/samples_\*.npz"):
        evaluate(cfg)


# --- image folders labelled by sub-folder --------------------------------------------------------------


def _tree(root, classes=("cat", "dog", "fox"), per_class=2):
    from PIL import Image

    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    return root


def test_image_folder_infers_classes_saves_the_mapping_and_refuses_mismatches(tmp_path):
    from omegaconf import OmegaConf

    from beatgans.cli.loading import adopt_data_classes
    from beatgans.data.datamodules import ImageFolderDataModule
    from beatgans.data.image_folder import write_class_index

    root = _tree(tmp_path / "tree")
    dm = ImageFolderDataModule(str(root), image_size=8, channels=1, labels="folder", batch_size=2)
    assert dm.num_classes == 3 and dm.classes == ["cat", "dog", "fox"]
    assert sorted(dm.build().labels.tolist()) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(UserError, match=r"has 3 classes \['cat', 'dog', 'fox'\] but data.num_classes=10; set "
                                        "data.num_classes=3"):
        ImageFolderDataModule(str(root), image_size=8, channels=1, labels="folder", num_classes=10, batch_size=2)
    cfg = OmegaConf.create({"data": {"root": str(root), "num_classes": None},
                            "task": {"num_classes": "${data.num_classes}",
                                     "net": {"num_classes": "${oc.select:data.num_classes,null}"}}})
    run = tmp_path / "run"
    assert adopt_data_classes(cfg, dm) == ["cat", "dog", "fox"]
    assert cfg.task.num_classes == 3 == cfg.task.net.num_classes
    write_class_index(run / "class_index.json", dm.classes)
    assert json.loads((run / "class_index.json").read_text()) == {"cat": 0, "dog": 1, "fox": 2}
    with pytest.raises(UserError):  # a different mapping is never written over the recorded one
        write_class_index(run / "class_index.json", ["dog", "cat", "fox"])
    cfg.task.net.num_classes = 10
    with pytest.raises(UserError, match=r"The data has 3 classes .* but net.num_classes=10"):
        adopt_data_classes(cfg, dm)
    # A flat folder stays unconditional.
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in (root / "cat").iterdir():
        (flat / f.name).write_bytes(f.read_bytes())
    assert ImageFolderDataModule(str(flat), image_size=8, channels=1, labels="folder", batch_size=2).num_classes is None
