"""Spec + jobs -> the report's files: `<name>.csv`, `<name>.md`, `<name>.tex` and the spec's PNG figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from beatgans.report.plots import plot_history, plot_precision_recall, plot_vs_param, x_index
from beatgans.report.runs import Job
from beatgans.report.spec import PlotSpec, ReportSpec
from beatgans.report.table import Table, build_table, to_csv, to_latex, to_markdown
from beatgans.utils.io import atomic_write
from beatgans.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class Report:
    table: Table
    tables: dict[str, Path]     # "csv" | "md" | "tex" -> file
    figures: list[Path]


def _write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def draw_plot(table: Table, plot: PlotSpec, out: Path) -> Path:
    """Draw one figure of the spec into `out / plot.file`."""
    path = out / plot.file
    if plot.kind == "vs_param":
        return plot_vs_param(table, plot.x, plot.metrics, path, plot.title)
    if plot.kind == "precision_recall":
        precision, recall = plot.metrics if len(plot.metrics) == 2 else ("precision", "recall")
        return plot_precision_recall(table, path, plot.x, precision, recall, plot.title)
    return plot_history(table, plot.metrics[0], path, plot.title)


def write_report(spec: ReportSpec, jobs: list[Job], out: Path | None = None) -> Report:
    """Aggregate `jobs` as `spec` says and write the tables and figures into `out` (default: spec.out)."""
    out = Path(out or spec.out)
    table = build_table(jobs, spec)
    for plot in spec.plots:  # a plot naming a key the table lacks fails here, before anything is written
        if plot.kind != "history" and plot.x:
            x_index(table, plot.x)
    tables = {
        "csv": _write_text(out / f"{spec.name}.csv", to_csv(table)),
        "md": _write_text(out / f"{spec.name}.md", to_markdown(table, spec.title)),
        "tex": _write_text(out / f"{spec.name}.tex", to_latex(table, spec.title)),
    }
    figures = [draw_plot(table, plot, out) for plot in spec.plots]
    log.info("report: %d settings from %d jobs -> %s", len(table.rows), len(jobs), out)
    return Report(table, tables, figures)
