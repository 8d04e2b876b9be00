"""Find the jobs of run and multirun directories and read what each one recorded.

A job is a directory holding `metrics.json` (written by beatgans-train, -sample, -eval or -nll). Beside it
Hydra leaves `.hydra/config.yaml` (the resolved config) and `.hydra/overrides.yaml` (the command-line
overrides, e.g. `guidance.scale=4`); the CSV logger leaves the training history in `csv/metrics.csv`.
"""

from __future__ import annotations

import csv
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from beatgans.report.keys import canonical_metrics
from beatgans.utils.logging import get_logger

log = get_logger(__name__)

# Overrides that say where a job writes, not what it computes: never a setting.
_LOCATION_PREFIXES = ("hydra.", "paths.")


@dataclass
class Job:
    """One finished job: its directory, overrides {key: value}, resolved config and canonical metrics."""

    path: Path
    overrides: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, float]
    history_files: list[Path] = field(default_factory=list)

    @property
    def task(self) -> str | None:
        """The entry point that wrote this job (`task_name`: train, sample, evaluate, nll), when recorded."""
        return self.config.get("task_name")

    def setting(self, key: str) -> Any:
        """The value of `key` for this job: its override when given, else the dotted path in the config."""
        if key in self.overrides:
            return self.overrides[key]
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def parse_overrides(lines: list[str]) -> dict[str, Any]:
    """`["guidance.scale=4", "++trainer.max_time=null"]` -> {"guidance.scale": 4, "trainer.max_time": None}.

    Values are parsed as YAML scalars so that `10` sorts after `2`; location overrides (hydra.*, paths.*)
    and deletions (`~key`) are left out.
    """
    out: dict[str, Any] = {}
    for line in lines:
        if "=" not in line or line.startswith("~"):
            continue
        key, value = line.split("=", 1)
        key = key.lstrip("+")
        if key.startswith(_LOCATION_PREFIXES):
            continue
        try:
            out[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            out[key] = value
    return out


def load_job(path: Path) -> Job:
    """Read one job directory (metrics.json required; config and overrides optional)."""
    metrics = json.loads((path / "metrics.json").read_text())
    hydra = path / ".hydra"
    overrides = yaml.safe_load((hydra / "overrides.yaml").read_text()) if (hydra / "overrides.yaml").is_file() else []
    config = yaml.safe_load((hydra / "config.yaml").read_text()) if (hydra / "config.yaml").is_file() else {}
    history = sorted(p for p in path.glob("csv*/**/metrics.csv"))
    return Job(path=path, overrides=parse_overrides(overrides or []), config=config or {},
               metrics=canonical_metrics(metrics), history_files=history)


def find_jobs(patterns: list[str], base: Path | None = None) -> list[Job]:
    """Every job under the directories matching `patterns` (globs, relative to `base` or the cwd).

    A pattern may name a job, a multirun directory (jobs `0/`, `1/`, ...) or any folder above them; jobs
    are found recursively and each is read once. Raises FileNotFoundError naming the pattern that matched
    nothing, and ValueError when no job at all was found.
    """
    seen: dict[Path, Job] = {}
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() or base is None else str(base / pattern)
        roots = sorted(Path(p) for p in glob.glob(full, recursive=True))
        if not roots:
            raise FileNotFoundError(f"runs: {pattern!r} matches no file or directory; pass the run or multirun "
                                    "directory the sweep wrote (e.g. outputs/<name>/sample).")
        for root in roots:
            files = [root] if root.name == "metrics.json" else sorted(root.rglob("metrics.json"))
            for f in files:
                job_dir = f.parent.resolve()
                if job_dir not in seen and not any(part.startswith(".") for part in f.relative_to(root).parts[:-1]):
                    seen[job_dir] = load_job(job_dir)
    if not seen:
        raise ValueError(f"runs: no metrics.json under {patterns}; each job writes one when it finishes.")
    log.info("report: %d jobs from %s", len(seen), ", ".join(patterns))
    return list(seen.values())


def select_tasks(jobs: list[Job], tasks: list[str] | None) -> list[Job]:
    """The jobs written by the entry points `tasks` (all jobs when None).

    A training run holds its later results (`<run>/results/sample/...`, `<run>/results/nll/...`), so a report
    over run directories finds training, sampling and nll jobs side by side; `tasks` picks which to tabulate.
    Raises ValueError, naming the tasks that were found, when none is left.
    """
    if not tasks:
        return jobs
    kept = [j for j in jobs if j.task in tasks]
    if not kept:
        found = sorted({str(j.task) for j in jobs})
        raise ValueError(f"tasks: no job of {tasks} among the {len(jobs)} found (their tasks: {', '.join(found)}).")
    return kept


def read_history(job: Job, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of metric `key` (canonical or alias) from the job's CSV-logger history, step order."""
    points: dict[float, float] = {}
    for path in job.history_files:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                numeric = {}
                for k, v in row.items():
                    try:
                        numeric[k] = float(v)
                    except (TypeError, ValueError):
                        continue
                values = canonical_metrics(numeric)
                if key in values and "step" in numeric:
                    points[numeric["step"]] = values[key]
    steps = sorted(points)
    return steps, [points[s] for s in steps]
