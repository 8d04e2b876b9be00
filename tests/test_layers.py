"""The layer contract: the pure layers never import Lightning or Hydra, and sampling never needs the Lightning layer."""

import subprocess
import sys

from tests.conftest import REPO


def _loaded(modules: str) -> set[str]:
    code = f"import sys; import {modules}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "src")}).stdout.split()
    return set(out)


def test_pure_layers_import_neither_lightning_nor_hydra():
    loaded = _loaded("beatgans.diffusion, beatgans.nets, beatgans.gan, beatgans.metrics, beatgans.report")
    assert not {m for m in loaded if m.split(".")[0] in ("lightning", "pytorch_lightning", "hydra")}


def test_sampling_and_loading_do_not_import_the_lightning_layer():
    loaded = _loaded("beatgans.cli.sample, beatgans.cli.loading, beatgans.cli.cascade, beatgans.cli.latent")
    assert not {m for m in loaded if m.startswith("beatgans.lit") or m.split(".")[0] == "lightning"}
