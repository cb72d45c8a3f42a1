"""Analyse finished runs: ``python -m rlvr_exp.analyze <run dir> [<run dir> ...]``.

One run folder: writes ``<run>/analysis/report.md`` (the three questions of arXiv 2508.02260,
answered with the run's numbers), its PNG plots and ``high_entropy_tokens.csv``, and logs the
PNGs to the run's offline W&B run when it has one (``--no-wandb`` to skip).
Several run folders, or a sweep (multirun) folder: overlays their curves by strategy and writes
``comparison.md`` (final metrics per strategy, mean ± std over seeds) to ``--out``; the table is
also printed. ``--each`` also writes every run's own report; ``--pair ppl:ppl_high`` (repeatable) adds
each method minus its control, paired by seed.
Exit codes: 0 done, 2 a folder is not a run (no metrics.jsonl) or a run has no token dumps.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlvr_exp import run_files as rf
from rlvr_exp.analysis.compare import compare_runs
from rlvr_exp.analysis.report import analyze_run
from rlvr_exp.analysis.runs import AnalysisInputError, expand, is_run_dir, is_sweep_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlvr_exp.analyze", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders and/or sweep (multirun) folders")
    parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=None,
                        help="log the plots to the run's offline W&B run (default: on when <run>/wandb exists)")
    parser.add_argument("--out", type=Path, default=None,
                        help="comparison output folder (default: <sweep>/analysis, else ./analysis_compare)")
    parser.add_argument("--each", action="store_true", help="with several runs, also write each run's report")
    parser.add_argument("--pair", action="append", default=[], metavar="METHOD:CONTROL", type=_pair,
                        help="with several runs, also report METHOD minus CONTROL paired by seed; each names one arm "
                             "by its logger.job_type (e.g. ppl:ppl_high); repeat for more pairs")
    return parser.parse_args(argv)


def _pair(text: str) -> tuple[str, str]:
    method, sep, control = text.partition(":")
    if not sep or not method or not control or ":" in control:
        raise argparse.ArgumentTypeError(f"{text!r} is not METHOD:CONTROL; name two arms by their logger.job_type, "
                                         "e.g. --pair ppl:ppl_high")
    return method, control


def _report(run_dir: Path, wandb: bool | None) -> None:
    use_wandb = (run_dir / rf.WANDB).is_dir() if wandb is None else wandb
    print(f"wrote {analyze_run(run_dir, wandb=use_wandb)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run_dirs = expand(args.runs)
        if len(args.runs) == 1 and is_run_dir(args.runs[0]):
            _report(args.runs[0], args.wandb)
            return 0
        if args.each:
            for run_dir in run_dirs:
                if is_run_dir(run_dir):
                    _report(run_dir, args.wandb)
        sweep = len(args.runs) == 1 and is_sweep_dir(args.runs[0])
        out = args.out or (args.runs[0] / rf.ANALYSIS if sweep else Path.cwd() / "analysis_compare")
        print(compare_runs(run_dirs, out, args.pair))
        print(f"wrote {out / 'comparison.md'}")
    except AnalysisInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
