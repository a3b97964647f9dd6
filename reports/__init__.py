"""Reports that read only result files: tables, figures, Markdown/HTML, the CI regression check.

    build_report([run_dir, ...], output=None, fluency_budget=None) -> path of report.md
    run_check(args) -> exit code (args as parsed by `steerbench check`)

`python -m reports RUN_DIR ... [-o DIR] [--fluency-budget B]` builds a report with a re-applied
fluency budget (the `steerbench report` command builds it with the run's own choices).
"""

from reports.build import build_report
from reports.check import run_check

__all__ = ["build_report", "run_check"]
