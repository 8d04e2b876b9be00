"""Figures from an aggregated table: a metric against a swept parameter, the precision-recall trade-off, and a
logged metric against the training step. matplotlib's object API (no pyplot), so no GUI backend is touched."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from beatgans.report.runs import read_history
from beatgans.report.table import Row, Table
from beatgans.utils.logging import get_logger

log = get_logger(__name__)


def x_index(table: Table, x: str) -> int:
    for i, k in enumerate(table.row_keys):
        if x in (k.key, k.label):
            return i
    raise ValueError(f"plot x={x!r} is not a row of the table (rows: {[k.key for k in table.row_keys]}); "
                     "add it to the spec's rows.")


def _lines(table: Table, x: str | None) -> dict[str, list[Row]]:
    """Rows grouped into lines: one per combination of the row keys other than `x`."""
    xi = x_index(table, x) if x else None
    lines: dict[str, list[Row]] = {}
    for r in table.rows:
        name = ", ".join(d for i, d in enumerate(r.display) if i != xi) or "runs"
        lines.setdefault(name, []).append(r)
    return lines


def _label(table: Table, key: str) -> str:
    return next((m.label for m in table.metrics if m.key == key), key)


def plot_vs_param(table: Table, x: str, metrics: list[str], path: Path, title: str = "") -> Path:
    """One panel per metric: mean (± std error bars) against the numeric swept key `x`, one line per model."""
    xi = x_index(table, x)
    fig = Figure(figsize=(3.2 * len(metrics), 3.0), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, key in zip(axes, metrics):
        for name, rows in _lines(table, x).items():
            pts = [(float(r.values[xi]), r.cells[key]) for r in rows
                   if key in r.cells and r.cells[key].mean is not None and r.values[xi] is not None]
            if not pts:
                continue
            pts.sort(key=lambda p: p[0])
            ax.errorbar([p[0] for p in pts], [p[1].mean for p in pts], yerr=[p[1].std or 0.0 for p in pts],
                        marker="o", capsize=3, label=name)
        ax.set_xlabel(table.row_keys[xi].label)
        ax.set_ylabel(_label(table, key))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_precision_recall(table: Table, path: Path, x: str | None = None, precision: str = "precision",
                          recall: str = "recall", title: str = "") -> Path:
    """Precision against recall, one point per setting, connected along `x` within each line and labelled."""
    xi = x_index(table, x) if x else None
    fig = Figure(figsize=(4.0, 3.6), layout="constrained")
    ax = fig.subplots()
    for name, rows in _lines(table, x).items():
        pts = [r for r in rows if r.cells.get(precision) and r.cells[precision].mean is not None
               and r.cells.get(recall) and r.cells[recall].mean is not None]
        if not pts:
            continue
        ax.plot([r.cells[recall].mean for r in pts], [r.cells[precision].mean for r in pts], marker="o", label=name)
        if xi is not None:
            for r in pts:
                ax.annotate(r.display[xi], (r.cells[recall].mean, r.cells[precision].mean), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel(_label(table, recall))
    ax.set_ylabel(_label(table, precision))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or "precision-recall trade-off", fontsize=9)
    return _save(fig, path)


def plot_history(table: Table, metric: str, path: Path, title: str = "") -> Path:
    """`metric` (e.g. train/loss) against the training step from each job's CSV history, coloured by setting."""
    fig = Figure(figsize=(4.5, 3.2), layout="constrained")
    ax = fig.subplots()
    colors = [f"C{i % 10}" for i in range(len(table.rows))]
    drawn = 0
    for color, r in zip(colors, table.rows):
        for i, job in enumerate(r.jobs):
            steps, values = read_history(job, metric)
            if steps:
                ax.plot(steps, values, color=color, alpha=0.8, lw=1,
                        label=(", ".join(r.display) or "run") if i == 0 else None)
                drawn += 1
    if not drawn:
        log.warning("report: no job has a logged history of %r (CSV logger's metrics.csv); %s stays empty.",
                    metric, path)
    ax.set_xlabel("step")
    ax.set_ylabel(_label(table, metric))
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)
    ax.set_title(title or metric, fontsize=9)
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path

