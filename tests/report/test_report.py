"""beatgans-report on synthetic run directories: aggregation numbers, seed grouping, missing metrics, paper
columns, LaTeX that is balanced and escaped, figures written, the alias table, and the command line."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from beatgans.cli.report import main as report_main
from beatgans.report import canonical_metrics, find_jobs, parse_spec, write_report
from beatgans.report.spec import SpecError
from beatgans.report.table import build_table, latex_escape, to_csv, to_latex, to_markdown

# (model, scale, seed) -> metrics.json; the `cond` / scale 4 / seed 2 job lacks recall on purpose.
FID = {("uncond", 0): [12.0, 14.0, 16.0], ("uncond", 4): [10.0, 11.0, 12.0],
       ("cond", 0): [8.0, 9.0, 13.0], ("cond", 4): [7.0, 7.5, 8.0]}


def make_job(path: Path, overrides: list[str], metrics: dict, history: list[dict] | None = None) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"sampler": {"steps": 50}, "seed": 0}))
    (path / "metrics.json").write_text(json.dumps(metrics))
    if history:
        (path / "csv").mkdir()
        with open(path / "csv" / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["epoch", "step", "train/loss"])
            w.writeheader()
            w.writerows(history)
    return path


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A Hydra-like multirun: 2 models x 2 scales x 3 seeds = 12 jobs, numbered 0..11."""
    root = tmp_path / "multirun"
    n = 0
    for (model, scale), fids in FID.items():
        for seed, fid in enumerate(fids):
            metrics = {"fid": fid, "precision": 0.5 + 0.1 * seed, "recall": 0.9 - 0.1 * seed, "sampler": "ddpm",
                       "guidance": {"scale": scale}}
            if (model, scale, seed) == ("cond", 4, 2):
                del metrics["recall"]
            history = [{"epoch": 0, "step": s, "train/loss": 1.0 / (s + 1)} for s in range(0, 50, 10)]
            make_job(root / str(n), [f"run=outputs/{model}", f"guidance.scale={scale}", f"seed={seed}",
                                     "hydra.sweep.dir=x", "num_samples=300"], metrics, history)
            n += 1
    return root


SPEC = {
    "name": "t4", "title": "Table 4 (digits)",
    "rows": [{"key": "run", "label": "model", "values": {"outputs/uncond": "unconditional",
                                                         "outputs/cond": "conditional"}},
             {"key": "guidance.scale", "label": "scale"}],
    "metrics": [{"key": "fid", "label": "FID", "fmt": ".2f"}, {"key": "recall", "label": "R_k", "fmt": ".3f"}],
    "paper": {"label": "paper", "rows": [{"where": {"model": "unconditional", "scale": 0}, "fid": 26.21},
                                         {"where": {"model": "conditional", "scale": 4}, "fid": 9.11}]},
    "plots": [{"kind": "vs_param", "x": "guidance.scale", "metrics": ["fid", "recall"], "file": "fid.png"},
              {"kind": "precision_recall", "x": "guidance.scale", "file": "pr.png"},
              {"kind": "history", "metric": "train/loss", "file": "loss.png"}],
}


def test_rows_group_seeds_and_aggregate(sweep, caplog):
    jobs = find_jobs([str(sweep)])
    assert len(jobs) == 12
    table = build_table(jobs, parse_spec(SPEC))
    # rows ordered by the spec's value order, then numerically; seeds pooled into n = 3
    assert [r.display for r in table.rows] == [["unconditional", "0"], ["unconditional", "4"],
                                               ["conditional", "0"], ["conditional", "4"]]
    assert [len(r.jobs) for r in table.rows] == [3, 3, 3, 3]
    cell = table.rows[2].cells["fid"]  # conditional, s = 0: 8, 9, 13
    assert cell.mean == pytest.approx(10.0)
    assert cell.std == pytest.approx(np.std([8.0, 9.0, 13.0], ddof=1))  # sample std = sqrt(7)
    assert cell.n == 3
    # the missing recall is counted, shown with its n, and warned about
    assert table.missing == {"fid": 0, "recall": 1}
    assert table.rows[3].cells["recall"].n == 2
    assert any("'recall' is missing in 1 of 12" in rec.message for rec in caplog.records)
    assert table.common == {"num_samples": 300}


def test_markdown_and_csv_show_paper_beside_ours(sweep):
    table = build_table(find_jobs([str(sweep)]), parse_spec(SPEC))
    md = to_markdown(table, "T4")
    lines = md.splitlines()
    assert lines[2] == "| model | scale | n | FID (paper) | FID (ours) | R_k |"
    assert lines[4] == "| unconditional | 0 | 3 | 26.21 | 14.00 ± 2.00 | 0.800 ± 0.100 |"
    assert lines[7] == "| conditional | 4 | 3 | 9.11 | 7.50 ± 0.50 | 0.850 ± 0.071 (n=2) |"
    assert "Missing: recall in 1 of 12 runs." in md
    rows = list(csv.DictReader(to_csv(table).splitlines()))
    assert rows[0]["fid_paper"] == "26.21" and rows[1]["fid_paper"] == ""
    assert float(rows[3]["recall_mean"]) == pytest.approx(0.85) and rows[3]["recall_n"] == "2"


def test_latex_is_balanced_and_escaped(sweep):
    spec = dict(SPEC, metrics=[{"key": "fid", "label": "FID_50k & 100%", "fmt": ".1f"}])
    tex = to_latex(build_table(find_jobs([str(sweep)]), parse_spec(spec)), "caption #1")
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert [ln for ln in tex.splitlines() if ln.startswith("\\") and "rule" in ln] == [
        r"\toprule", r"\midrule", r"\bottomrule"]
    body = re.sub(r"\\[{}&%$#_]", "", tex)  # escaped specials are fine
    assert body.count("{") == body.count("}")
    assert "&" not in re.sub(r" & ", "", body.split(r"\toprule")[1].split(r"\bottomrule")[0])
    assert r"FID\_50k \& 100\%" in tex and r"14.0 $\pm$ 2.0" in tex
    assert latex_escape("a_b ~ ^ \\ –") == r"a\_b \textasciitilde{} \textasciicircum{} \textbackslash{} --"
    header_cols = tex.splitlines()[3].count(" & ") + 1
    assert header_cols == len("llrrr")  # model, scale, n, FID (paper), FID (ours)


def test_write_report_files_and_figures(sweep, tmp_path):
    spec = parse_spec(SPEC, base=tmp_path)
    report = write_report(spec, find_jobs([str(sweep)]), out=tmp_path / "results")
    assert sorted(p.name for p in report.tables.values()) == ["t4.csv", "t4.md", "t4.tex"]
    for fig in report.figures:
        assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 5000
    assert [f.name for f in report.figures] == ["fid.png", "pr.png", "loss.png"]


def test_inferred_rows_exclude_seed_and_location(sweep):
    table = build_table(find_jobs([str(sweep)]), parse_spec({}))
    assert [k.key for k in table.row_keys] == ["run", "guidance.scale"]
    assert [m.key for m in table.metrics] == ["fid", "precision", "recall"]  # strings / dicts are not metrics


def test_aliases_map_every_entry_point_onto_one_key():
    assert canonical_metrics({"final/fid": 3.0, "metrics/is": 2.0, "nll/total_bpd": 1.5, "val/bpd": 9.0,
                              "train/loss": 0.1, "ok": True, "path": "x"}) == {
        "fid": 3.0, "is": 2.0, "bpd": 1.5, "train/loss": 0.1}
    # the canonical key wins over an alias; val/bpd is used when beatgans-nll did not run
    assert canonical_metrics({"fid": 1.0, "final/fid": 2.0, "val/bpd": 4.0}) == {"fid": 1.0, "bpd": 4.0}


def test_bad_input_is_one_sentence(sweep, tmp_path):
    with pytest.raises(SpecError, match="unknown field"):
        parse_spec({"metric": ["fid"]})
    with pytest.raises(SpecError, match="kind: one of"):
        parse_spec({"plots": [{"kind": "bars", "file": "a.png"}]})
    with pytest.raises(SpecError, match="not a Python format spec"):
        parse_spec({"metrics": [{"key": "fid", "fmt": "%.2f"}]})
    with pytest.raises(FileNotFoundError, match="matches no file"):
        find_jobs([str(tmp_path / "nope")])
    out = tmp_path / "never"
    bad = dict(SPEC, plots=[{"kind": "vs_param", "x": "sampler.eta", "metrics": ["fid"], "file": "a.png"}])
    with pytest.raises(ValueError, match="not a row of the table"):
        write_report(parse_spec(bad), find_jobs([str(sweep)]), out=out)
    assert not out.exists()  # nothing written before the check


def test_cli_writes_tables_and_exit_codes(sweep, tmp_path, capsys):
    spec_path = tmp_path / "report.yaml"
    spec_path.write_text(yaml.safe_dump(dict(SPEC, runs=[str(sweep)], out="results")))
    assert report_main([str(spec_path)]) == 0
    assert "| unconditional | 0 | 3 | 26.21 |" in capsys.readouterr().out
    assert (tmp_path / "results" / "t4.tex").is_file() and (tmp_path / "results" / "loss.png").is_file()
    assert report_main([str(tmp_path / "missing.yaml")]) == 2
    assert report_main([str(spec_path), str(tmp_path / "no_runs_here")]) == 2


def test_cli_logs_to_wandb_offline(sweep, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert report_main([str(sweep), "--out", str(tmp_path / "r"), "--wandb-project", "beatgans-test"]) == 0
    runs = list((tmp_path / "r" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


def test_spec_tasks_field_and_its_check():
    assert parse_spec({"tasks": "sample"}).tasks == ["sample"]
    assert parse_spec({"tasks": ["train", "nll"]}).tasks == ["train", "nll"]
    assert parse_spec({}).tasks is None
    with pytest.raises(SpecError, match="tasks: give a list of entry points"):
        parse_spec({"tasks": [1]})
