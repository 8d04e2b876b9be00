"""`beatgans-report`: one table (CSV, Markdown, LaTeX) and the spec's figures from run / multirun directories.

    beatgans-report experiments/adm_table4_digits/report.yaml               # the runs the spec names
    beatgans-report experiments/adm_table4_digits/report.yaml outputs/t4/sample   # other runs, same spec
    beatgans-report multirun/2026-01-01_12-00-00 --out report/               # no spec: every metric, every swept key
    beatgans-report spec.yaml --wandb-project beatgans                       # also a wandb Table + images

A positional argument ending in .yaml/.yml is the spec (docs/report.md); the others are run directories or
globs, which replace the spec's `runs`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from beatgans.report import Report, ReportSpec, SpecError, find_jobs, load_spec, select_tasks, write_report
from beatgans.report.table import table_cells
from beatgans.utils.logging import get_logger

log = get_logger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="beatgans-report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="a report spec (.yaml) and/or run or multirun directories (globs)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: the spec's `out`)")
    ap.add_argument("--wandb-project", default=None, help="also log the table and figures to this wandb project")
    ap.add_argument("--tasks", nargs="+", default=None,
                    help="only jobs of these entry points (train, sample, evaluate, nll; default: the spec's `tasks`, "
                         "else all): a training run holds its later results under <run>/results/")
    return ap.parse_args(argv)


def resolve(args: argparse.Namespace) -> ReportSpec:
    """The spec (from its file, else the defaults) with the command line's runs and output folder applied."""
    specs = [p for p in args.paths if p.endswith((".yaml", ".yml"))]
    if len(specs) > 1:
        raise SpecError(f"give one report spec, not {len(specs)} ({', '.join(specs)}).")
    spec = load_spec(specs[0]) if specs else ReportSpec()
    runs = [p for p in args.paths if p not in specs]
    if runs:
        spec.runs = runs
    if not spec.runs:
        raise SpecError("no runs: list run directories on the command line or under `runs:` in the spec.")
    if args.out is not None:
        spec.out = args.out
    if args.wandb_project:
        spec.wandb_project = args.wandb_project
    if args.tasks:
        spec.tasks = list(args.tasks)
    return spec


def log_to_wandb(spec: ReportSpec, report: Report) -> str:
    """Log the table as a wandb.Table and each figure as a wandb.Image in one run of `spec.wandb_project`.

    WANDB_MODE=offline (or no credentials) logs offline like every entry point. Returns the run's directory.
    """
    import wandb

    from beatgans.cli.common import configure_wandb_mode

    configure_wandb_mode(spec.out)
    header, body = table_cells(report.table)
    run = wandb.init(project=spec.wandb_project, name=spec.name, job_type="report", dir=str(spec.out),
                     config={"runs": spec.runs, "jobs": report.table.num_jobs}, reinit=True)
    try:
        run.log({f"{spec.name}/table": wandb.Table(columns=header, data=body),
                 **{f"{spec.name}/{p.stem}": wandb.Image(str(p)) for p in report.figures}})
        return run.dir
    finally:
        run.finish()


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        spec = resolve(args)
        jobs = select_tasks(find_jobs(spec.runs), spec.tasks)
    except (SpecError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2
    try:
        report = write_report(spec, jobs)
    except ValueError as err:  # a plot that names a key the table lacks
        log.error("%s", err)
        return 2
    sys.stdout.write(report.tables["md"].read_text())
    for path in [*report.tables.values(), *report.figures]:
        log.info("wrote %s", path)
    if spec.wandb_project:
        log.info("wandb: %s", log_to_wandb(spec, report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
