"""Paper tables and figures from run directories (pure: matplotlib and numpy; no Lightning, no Hydra).

    from beatgans.report import find_jobs, load_spec, write_report
    spec = load_spec("experiments/adm_table4_digits/report.yaml")
    write_report(spec, find_jobs(spec.runs))
"""

from beatgans.report.build import Report, write_report
from beatgans.report.keys import ALIASES, canonical_key, canonical_metrics
from beatgans.report.runs import Job, find_jobs, load_job, select_tasks
from beatgans.report.spec import ReportSpec, SpecError, load_spec, parse_spec
from beatgans.report.table import Table, build_table, to_csv, to_latex, to_markdown

__all__ = ["ALIASES", "Job", "Report", "ReportSpec", "SpecError", "Table", "build_table", "canonical_key",
           "canonical_metrics", "find_jobs", "load_job", "load_spec", "parse_spec", "select_tasks", "to_csv",
           "to_latex", "to_markdown", "write_report"]
