"""Results computed after training (samples, their evaluation, bits/dim) sent to the wandb run of the training
run they belong to.

A training run logged to wandb keeps its run id in `<run>/wandb_run_id.txt` (`beatgans.lit.loggers`). When
`beatgans-sample`, `beatgans-eval` or `beatgans-nll` works on such a run, `attach_results` resumes that wandb
run by id and logs one history row: every numeric entry of the result's `metrics.json` under `<kind>/` (e.g.
`sample/fid`, `sample/guidance.scale`, `nll/bpd`), `trainer/global_step` set to the checkpoint's step (the
record's `ckpt_step`, so the point sits at that step on charts against `trainer/global_step`), the sample
grid as an image, and a key/value table of the whole record (paths, sampler, guidance). Each result adds a
row; none replaces another. The result's `metrics.json` then records `wandb_run_id`.

`wandb=auto` (the default of the three entry points) attaches when the run was tracked by wandb and does
nothing otherwise; `wandb=false` never attaches; `wandb=true` insists (one error when the run has no wandb
id). Offline (no credentials, or WANDB_MODE=offline) the row goes into `<result dir>/wandb/offline-run-*`,
which `wandb sync` merges into the training run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from beatgans.cli.loading import RunError, load_run_config
from beatgans.utils.errors import UserError
from beatgans.utils.io import WANDB_ID_FILE
from beatgans.utils.logging import get_logger
from beatgans.utils.nested import flatten

log = get_logger(__name__)


def training_wandb_run(run_dir: str | os.PathLike | None) -> dict[str, Any] | None:
    """{id, project, entity} of the wandb run that tracked the training run `run_dir`, or None when it had none."""
    if not run_dir:
        return None
    run = Path(str(run_dir))
    id_file = run / WANDB_ID_FILE
    if not id_file.is_file():
        return None
    try:  # the newest launch's config (a resume may have changed the logger)
        config = OmegaConf.to_container(load_run_config(run))
    except RunError:
        config = {}
    node = ((config or {}).get("logger") or {}).get("wandb") or {}
    return {"id": id_file.read_text().strip(), "project": node.get("project") or "beatgans",
            "entity": node.get("entity")}


def history_row(kind: str, metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a result record under `<kind>/` (nested blocks dotted; booleans, strings and
    non-finite numbers left out: they go to the record table)."""
    return {f"{kind}/{k}": v for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def wants_wandb(mode: Any) -> bool | None:
    """`wandb=` setting -> True (insist), None (auto) or False (never)."""
    if mode in (None, "auto"):
        return None
    if mode in (True, "true", "always"):
        return True
    if mode in (False, "false", "never", "off"):
        return False
    raise UserError(f"wandb={mode!r}: use auto (attach when the training run used wandb), true or false.")


def check_wandb(mode: Any, run_dir: str | os.PathLike | None = None, needs_run: bool = True) -> None:
    """Refuse, before any work, a bad `wandb=` value and `wandb=true` without a run wandb tracked
    (`needs_run=False`: the run is known only later, as for beatgans-eval)."""
    if not wants_wandb(mode) or not needs_run:
        return
    if not run_dir:
        raise UserError("wandb=true attaches results to a training run's wandb run: pass run=<training run dir> "
                        "(a bare ckpt has none), or set wandb=auto.")
    if training_wandb_run(run_dir) is None:
        raise UserError(f"wandb=true but the training run {run_dir} was not tracked by wandb (no "
                        f"{WANDB_ID_FILE}); train with logger=wandb, or set wandb=auto.")


def attach_results(kind: str, metrics: dict[str, Any], run_dir: str | os.PathLike | None, out_dir: str | os.PathLike,
                   mode: Any = "auto", images: dict[str, str | os.PathLike] | None = None,
                   wandb_dir: str | os.PathLike | None = None) -> str | None:
    """Log one result of `kind` ("sample" | "eval" | "nll") into the training run's wandb run (see module doc).

    `metrics` is the record written to `out_dir/metrics.json`; `images` maps names to PNG files (e.g. the grid);
    wandb's own files go to `wandb_dir` (default `out_dir`). Returns the wandb run id, or None when nothing was
    attached.
    """
    insist = wants_wandb(mode)
    if insist is False:
        return None
    check_wandb(mode, run_dir)  # wandb=true without a tracked run: the same refusal as before the work
    target = training_wandb_run(run_dir)
    if target is None:
        return None
    import wandb

    from beatgans.cli.common import configure_wandb_mode
    from beatgans.utils.io import update_json

    out_dir = Path(out_dir)
    wandb_dir = Path(wandb_dir or out_dir)
    mode_used = configure_wandb_mode(wandb_dir)
    row: dict[str, Any] = history_row(kind, metrics)
    if isinstance(metrics.get("ckpt_step"), int):  # the checkpoint's training step (sample / nll record it)
        row["trainer/global_step"] = metrics["ckpt_step"]
    record = [[k, str(v)] for k, v in sorted(flatten(metrics).items())]
    try:
        run = wandb.init(id=target["id"], project=target["project"], entity=target["entity"], resume="allow",
                         dir=str(wandb_dir))  # name, group and job type stay the training run's
        try:
            row[f"{kind}/record"] = wandb.Table(columns=["key", "value"], data=record)
            for name, path in (images or {}).items():
                if path and Path(str(path)).is_file():
                    row[f"{kind}/{name}"] = wandb.Image(str(path))
            run.log(row)
        finally:
            run.finish()
    except Exception as err:  # the results are on disk already; wandb=auto must not turn them into a failure
        if insist:
            raise
        log.warning("wandb: could not log the %s results to run %s (%s: %s); they are in %s. Rerun with "
                    "WANDB_MODE=offline to keep a syncable copy, or wandb=false.", kind, target["id"],
                    type(err).__name__, err, out_dir / "metrics.json")
        return None
    update_json(out_dir / "metrics.json", {"wandb_run_id": target["id"]})
    log.info("wandb: %s results logged to run %s (project %s, %s)%s", kind, target["id"], target["project"],
             mode_used, f"; upload with `wandb sync {wandb_dir}/wandb/offline-run-*`" if mode_used == "offline" else "")
    return target["id"]
