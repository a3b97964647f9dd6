"""`python -m reports RUN_DIR [RUN_DIR ...] [-o DIR] [--fluency-budget B]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import UserError
from reports.build import build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    parser.add_argument("run_dirs", nargs="+", help="run directories (several: side by side)")
    parser.add_argument("-o", "--output", help="report folder (default: the first run's report/)")
    parser.add_argument(
        "--fluency-budget",
        type=float,
        help="re-choose operating points with perplexity <= B x unsteered (default: the run's)",
    )
    args = parser.parse_args(argv)
    try:
        path = build_report(
            [Path(p) for p in args.run_dirs],
            Path(args.output) if args.output else None,
            fluency_budget=args.fluency_budget,
        )
    except UserError as error:
        print(f"steerbench: error: {error}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
