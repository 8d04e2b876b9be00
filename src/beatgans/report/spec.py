"""The report spec: a small YAML file saying which runs, which metrics, which rows, which paper numbers, which plots.

    name: adm_table4_digits
    runs: [outputs/adm_table4_digits/sample]          # globs, relative to the working directory
    out: results                                       # relative to the spec file
    rows:                                              # the settings, in column order
      - {key: run, label: model, values: {outputs/adm_table4_digits/uncond: unconditional}}
      - {key: guidance.scale, label: scale}
    metrics:
      - {key: fid, label: FID, fmt: .2f}
    paper:
      label: paper
      rows:
        - {where: {model: unconditional, scale: 0}, fid: 26.21}
    plots:
      - {kind: vs_param, x: guidance.scale, metrics: [fid, precision, recall], file: fid_vs_scale.png}
      - {kind: precision_recall, file: precision_recall.png}
      - {kind: history, metric: train/loss, file: loss.png}

docs/report.md documents every field. Parsing checks the whole file before any run is read, and each
mistake gets one sentence naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PLOT_KINDS = ("vs_param", "precision_recall", "history")


class SpecError(ValueError):
    """A report spec that cannot work; the message names the field and what to change."""


@dataclass
class RowKey:
    """A setting column: an override key (or config path), its header and optional value names/order."""

    key: str
    label: str
    values: dict[Any, str] | None = None

    def display(self, value: Any) -> str:
        if self.values is not None and value in self.values:
            return str(self.values[value])
        return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


@dataclass
class MetricColumn:
    """A metric column: canonical key (docs/metrics.md), header and Python format spec for its numbers."""

    key: str
    label: str
    fmt: str = ".3f"


@dataclass
class PlotSpec:
    kind: str
    file: str
    metrics: list[str] = field(default_factory=list)
    x: str | None = None
    lines: str | None = None
    title: str = ""


@dataclass
class ReportSpec:
    name: str = "report"
    title: str = ""
    runs: list[str] = field(default_factory=list)
    out: Path = Path("report")
    seed_keys: list[str] = field(default_factory=lambda: ["seed"])
    rows: list[RowKey] | None = None
    metrics: list[MetricColumn] | None = None
    paper_label: str = "paper"
    paper_rows: list[dict[str, Any]] = field(default_factory=list)
    plots: list[PlotSpec] = field(default_factory=list)
    wandb_project: str | None = None
    tasks: list[str] | None = None  # only jobs of these entry points (config task_name: train, sample, nll ...)


_TOP = {"name", "title", "runs", "out", "tasks", "seed_keys", "rows", "metrics", "paper", "plots", "wandb"}


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise SpecError(message)


def _rows(items: Any) -> list[RowKey]:
    _require(isinstance(items, list), "rows: give a list of {key, label, values} entries.")
    out = []
    for item in items:
        item = {"key": item} if isinstance(item, str) else item
        _require(isinstance(item, dict) and "key" in item, f"rows: entry {item!r} needs a `key` (an override).")
        values = item.get("values")
        _require(values is None or isinstance(values, dict), f"rows.{item['key']}.values: give a mapping value: name.")
        out.append(RowKey(str(item["key"]), str(item.get("label", item["key"])), values))
    return out


def _metrics(items: Any) -> list[MetricColumn]:
    _require(isinstance(items, list), "metrics: give a list of {key, label, fmt} entries.")
    out = []
    for item in items:
        item = {"key": item} if isinstance(item, str) else item
        _require(isinstance(item, dict) and "key" in item, f"metrics: entry {item!r} needs a `key`.")
        fmt = str(item.get("fmt", ".3f"))
        try:
            format(1.0, fmt)
        except ValueError:
            raise SpecError(f"metrics.{item['key']}.fmt: {fmt!r} is not a Python format spec (e.g. .3f).") from None
        out.append(MetricColumn(str(item["key"]), str(item.get("label", item["key"])), fmt))
    return out


def _plots(items: Any) -> list[PlotSpec]:
    _require(isinstance(items, list), "plots: give a list of {kind, file, ...} entries.")
    out = []
    for item in items:
        _require(isinstance(item, dict) and item.get("kind") in PLOT_KINDS,
                 f"plots: entry {item!r} needs kind: one of {', '.join(PLOT_KINDS)}.")
        kind = item["kind"]
        _require(str(item.get("file", "")).endswith(".png"), f"plots ({kind}): give `file: <name>.png`.")
        metrics = item.get("metrics") or ([item["metric"]] if "metric" in item else [])
        if kind == "vs_param":
            _require(bool(item.get("x")) and bool(metrics), "plots (vs_param): give `x: <swept key>` and `metrics`.")
        if kind == "history":
            _require(bool(metrics), "plots (history): give `metric: <logged key>` (e.g. train/loss).")
        out.append(PlotSpec(kind, str(item["file"]), [str(m) for m in metrics], item.get("x"), item.get("lines"),
                            str(item.get("title", ""))))
    return out


def parse_spec(data: dict | None, base: Path | None = None) -> ReportSpec:
    """A ReportSpec from the YAML mapping `data`; `out` is resolved against `base` (the spec's folder)."""
    data = data or {}
    _require(isinstance(data, dict), "the report spec must be a YAML mapping (name:, runs:, metrics: ...).")
    unknown = sorted(set(data) - _TOP)
    _require(not unknown, f"report spec: unknown field(s) {unknown}; the fields are {sorted(_TOP)}.")
    runs = data.get("runs") or []
    runs = [runs] if isinstance(runs, str) else [str(r) for r in runs]
    paper = data.get("paper") or {}
    _require(isinstance(paper, dict), "paper: give {label: ..., rows: [{where: {...}, <metric>: number}]}.")
    paper_rows = paper.get("rows") or []
    for row in paper_rows:
        _require(isinstance(row, dict) and isinstance(row.get("where"), dict),
                 f"paper.rows: entry {row!r} needs `where: {{<row label>: <value>}}` and metric numbers.")
    wandb = data.get("wandb") or {}
    tasks = data.get("tasks")
    tasks = [tasks] if isinstance(tasks, str) else tasks
    _require(tasks is None or (isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)),
             "tasks: give a list of entry points whose jobs to read, e.g. [sample] or [train, nll].")
    out = Path(str(data.get("out", "report")))
    if base is not None and not out.is_absolute():
        out = base / out
    return ReportSpec(
        name=str(data.get("name", "report")), title=str(data.get("title", "")), runs=runs, out=out,
        seed_keys=[str(k) for k in data.get("seed_keys", ["seed"])],
        rows=_rows(data["rows"]) if data.get("rows") is not None else None,
        metrics=_metrics(data["metrics"]) if data.get("metrics") is not None else None,
        paper_label=str(paper.get("label", "paper")), paper_rows=paper_rows,
        plots=_plots(data.get("plots") or []),
        wandb_project=wandb.get("project") if isinstance(wandb, dict) else None, tasks=tasks)


def load_spec(path: str | Path) -> ReportSpec:
    """Read and check a report spec file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"report spec {path} does not exist; pass a YAML file (see docs/report.md).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"report spec {path} is not valid YAML: {err}") from None
    return parse_spec(data, base=path.parent)
