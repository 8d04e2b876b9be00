"""Loggers that keep a run's history across resumes: the CSV log is appended to, wandb continues its run."""

from __future__ import annotations

import csv
import os
import secrets
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from beatgans.utils.io import WANDB_ID_FILE
from beatgans.utils.logging import get_logger

log = get_logger(__name__)



class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing `metrics.csv` when a run directory is reused; this one keeps
    it, adopts its header (new columns are merged in) and appends."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(set(header))


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger` whose `metrics.csv` survives resumes: rows are appended, never deleted.

    Rows logged by an interrupted segment after its last checkpoint are kept; the resumed run logs those
    steps again (see docs/runs.md), so a step can appear twice, the later row being the one that led on."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_run_id(run_dir: str | os.PathLike) -> str:
    """The wandb run id of this run directory: read from `<run>/wandb_run_id.txt`, or created and stored there
    on the first launch, so every resume continues the same wandb run."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file():
        run_id = path.read_text().strip()
        log.info("wandb: continuing run %s (id from %s).", run_id, path)
        return run_id
    run_id = secrets.token_hex(4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id
