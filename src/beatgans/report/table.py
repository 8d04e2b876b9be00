"""Aggregate jobs into one row per setting (mean ± std over seeds, with n) and render CSV, Markdown, LaTeX."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from beatgans.report.runs import Job
from beatgans.report.spec import MetricColumn, ReportSpec, RowKey
from beatgans.utils.logging import get_logger

log = get_logger(__name__)

MISSING = "–"


@dataclass
class Cell:
    """Mean and sample standard deviation (ddof = 1; None for n < 2) of one metric over n jobs."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Cell:
        if not values:
            return cls(None, None, 0)
        arr = np.asarray(values, dtype=np.float64)
        return cls(float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else None, len(arr))


@dataclass
class Row:
    """One distinct setting: its raw values (per row key), display strings, jobs and cells per metric."""

    values: tuple
    display: list[str]
    jobs: list[Job]
    cells: dict[str, Cell] = field(default_factory=dict)
    paper: dict[str, float] = field(default_factory=dict)


@dataclass
class Table:
    row_keys: list[RowKey]
    metrics: list[MetricColumn]
    rows: list[Row]
    missing: dict[str, int]          # metric key -> number of jobs that lack it
    num_jobs: int
    common: dict[str, Any]           # overrides every job shares (shown under the table)
    paper_label: str = "paper"

    def has_paper(self, key: str) -> bool:
        return any(key in r.paper for r in self.rows)


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def infer_row_keys(jobs: list[Job], seed_keys: list[str]) -> tuple[list[RowKey], dict[str, Any]]:
    """Swept keys (overrides whose value differs between jobs, seeds excluded) and the shared overrides."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys and k not in seed_keys]
    swept = [k for k in keys if len({_hashable(j.overrides.get(k)) for j in jobs}) > 1]
    common = {k: jobs[0].overrides[k] for k in keys if k not in swept}
    return [RowKey(k, k) for k in swept], common


def _sort_key(row_key: RowKey, value: Any) -> tuple:
    if row_key.values is not None and value in row_key.values:
        return (0, list(row_key.values).index(value), "")
    if value is None:
        return (1, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (2, float(value), "")
    return (3, 0, str(value))


def _paper_matches(row: Row, row_keys: list[RowKey], where: dict) -> bool:
    for name, want in where.items():
        idx = next((i for i, k in enumerate(row_keys) if name in (k.label, k.key)), None)
        if idx is None:
            return False
        if row.display[idx] != str(want) and _hashable(row.values[idx]) != _hashable(want):
            return False
    return True


def build_table(jobs: list[Job], spec: ReportSpec) -> Table:
    """Group `jobs` by setting (seeds pooled), aggregate every metric, attach the paper's numbers.

    Jobs lacking a metric are counted in `Table.missing` and logged as a warning; their cells show n of the
    jobs that had it. A paper row that matches no setting is warned about, never dropped silently.
    """
    row_keys, common = infer_row_keys(jobs, spec.seed_keys)
    if spec.rows is not None:
        row_keys = spec.rows
        common = {k: v for k, v in common.items() if k not in {r.key for r in row_keys}}
    if spec.metrics is not None:
        metrics = spec.metrics
    else:
        names = sorted({k for j in jobs for k in j.metrics})
        metrics = [MetricColumn(k, k) for k in names]
    groups: dict[tuple, list[Job]] = {}
    raw: dict[tuple, tuple] = {}
    for job in jobs:
        values = tuple(job.setting(k.key) for k in row_keys)
        key = tuple(_hashable(v) for v in values)
        groups.setdefault(key, []).append(job)
        raw.setdefault(key, values)
    order = sorted(groups, key=lambda g: tuple(_sort_key(k, v) for k, v in zip(row_keys, raw[g])))
    rows = []
    for g in order:
        row = Row(raw[g], [k.display(v) for k, v in zip(row_keys, raw[g])], sorted(groups[g], key=lambda j: j.path))
        row.cells = {m.key: Cell.of([j.metrics[m.key] for j in row.jobs if m.key in j.metrics]) for m in metrics}
        rows.append(row)
    missing = {m.key: sum(m.key not in j.metrics for j in jobs) for m in metrics}
    for key, count in missing.items():
        if count:
            lacking = [str(j.path) for j in jobs if key not in j.metrics][:3]
            log.warning("report: metric %r is missing in %d of %d jobs (shown as %s), e.g. %s",
                        key, count, len(jobs), MISSING, ", ".join(lacking))
    for entry in spec.paper_rows:
        where = entry["where"]
        hits = [r for r in rows if _paper_matches(r, row_keys, where)]
        if not hits:
            log.warning("report: paper row %s matches no setting of the runs; its numbers are not shown.", where)
        for r in hits:
            r.paper.update({k: float(v) for k, v in entry.items() if k != "where"})
    return Table(row_keys, metrics, rows, missing, len(jobs), common, spec.paper_label)


def format_cell(cell: Cell, fmt: str, row_n: int) -> str:
    """`mean ± std` (std only for n >= 2), `(n=k)` when fewer jobs than the row has, `–` when none."""
    if cell.n == 0 or cell.mean is None:
        return MISSING
    text = format(cell.mean, fmt)
    if cell.std is not None:
        text += " ± " + format(cell.std, fmt)
    if cell.n < row_n:
        text += f" (n={cell.n})"
    return text


def table_cells(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header and body as display strings; a metric with paper numbers gets `<label> (paper)` beside it."""
    header = [k.label for k in table.row_keys] + ["n"]
    for m in table.metrics:
        if table.has_paper(m.key):
            header += [f"{m.label} ({table.paper_label})", f"{m.label} (ours)"]
        else:
            header.append(m.label)
    body = []
    for r in table.rows:
        line = list(r.display) + [str(len(r.jobs))]
        for m in table.metrics:
            if table.has_paper(m.key):
                line.append(format(r.paper[m.key], m.fmt) if m.key in r.paper else MISSING)
            line.append(format_cell(r.cells[m.key], m.fmt, len(r.jobs)))
        body.append(line)
    return header, body


def notes(table: Table) -> list[str]:
    """The lines printed under a table: what n and ± mean, shared settings, missing metrics."""
    lines = [f"n: runs per setting (seeds); cells are mean ± sample std over those runs; {MISSING}: not recorded."]
    if table.common:
        lines.append("Shared by every run: " + ", ".join(f"{k}={v}" for k, v in table.common.items()) + ".")
    gaps = [f"{k} in {c} of {table.num_jobs} runs" for k, c in table.missing.items() if c]
    if gaps:
        lines.append("Missing: " + "; ".join(gaps) + ".")
    return lines


def to_markdown(table: Table, title: str = "") -> str:
    header, body = table_cells(table)
    nkeys = len(table.row_keys)
    align = ["---"] * nkeys + ["---:"] * (len(header) - nkeys)
    lines = ([f"### {title}", ""] if title else []) + ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines + [""] + notes(table)) + "\n"


def to_csv(table: Table) -> str:
    """Tidy CSV: setting columns, n, then `<metric>_mean`, `_std`, `_n` (and `_paper`) per metric."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = [k.label for k in table.row_keys] + ["n"]
    for m in table.metrics:
        header += [f"{m.key}_mean", f"{m.key}_std", f"{m.key}_n"]
        if table.has_paper(m.key):
            header.append(f"{m.key}_paper")
    writer.writerow(header)
    for r in table.rows:
        line: list[Any] = list(r.display) + [len(r.jobs)]
        for m in table.metrics:
            c = r.cells[m.key]
            line += ["" if c.mean is None else repr(c.mean), "" if c.std is None else repr(c.std), c.n]
            if table.has_paper(m.key):
                line.append(r.paper.get(m.key, ""))
        writer.writerow(line)
    return buf.getvalue()


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters; `±` becomes `$\\pm$` and the missing mark `--`."""
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    return out.replace("±", r"$\pm$").replace(MISSING, "--")


def to_latex(table: Table, caption: str = "") -> str:
    """A booktabs tabular (\\toprule, \\midrule, \\bottomrule): `\\input` it inside a table environment."""
    header, body = table_cells(table)
    nkeys = len(table.row_keys)
    spec = "l" * nkeys + "r" * (len(header) - nkeys)
    lines = [f"% {latex_escape(caption)}" if caption else "% generated by beatgans-report",
             f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
