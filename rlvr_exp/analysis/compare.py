"""The comparison of several runs (a sweep): which strategy ends best? Final metrics per strategy
(mean ± std over seeds), each arm against plain GRPO paired by seed (:mod:`rlvr_exp.analysis.paired`)
in ``comparison.md``, and their curves overlaid in ``compare_curves.png``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rlvr_exp import run_files as rf
from rlvr_exp.analysis import plots
from rlvr_exp.analysis.paired import paired_table, pairs_table
from rlvr_exp.analysis.runs import load_run, strategy_labels
from rlvr_exp.dashboard.links import dashboard_lines

FINAL_KEYS = ("val/accuracy_final", "val/accuracy_gain", "entropy/mean_final")


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "n/a"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def compare_runs(run_dirs: list[Path], out_dir: Path, pairs: list[tuple[str, str]] = ()) -> str:
    """Write ``out_dir/comparison.md`` and ``out_dir/compare_curves.png`` for several run folders
    (a failed job, without summary.json or even metrics.jsonl, is listed, not fatal); returns the
    markdown table of final metrics per strategy: n seeds, mean ± std (ddof 1) over seeds. Each
    (method, control) in ``pairs``, named by ``logger.job_type`` or label, adds a row of method minus
    control, paired by seed; a name that matches no arm, or several, raises before anything is written."""
    runs = [load_run(Path(d)) for d in run_dirs if (Path(d) / rf.METRICS).is_file()]
    failed = [f"`{d}`: no metrics.jsonl (failed before its first step)" for d in run_dirs
              if not (Path(d) / rf.METRICS).is_file()]
    labels = strategy_labels(runs)
    against = pairs_table(runs, labels, list(pairs))
    failed += [f"`{r.path}` ({label}): no summary.json (failed or unfinished)"
               for r, label in zip(runs, labels) if r.summary is None]
    head = "| strategy | n seeds | " + " | ".join(f"{k} (mean ± std)" for k in FINAL_KEYS) + " | unfinished |"
    table = [head, "|---|---|" + "---|" * len(FINAL_KEYS) + "---|"]
    for label in dict.fromkeys(labels):
        group = [r for r, lab in zip(runs, labels) if lab == label]
        done = [r.summary for r in group if r.summary is not None]
        cells = [_mean_std([s[k] for s in done if k in s]) for k in FINAL_KEYS]
        table.append(f"| {label} | {len(done)} | " + " | ".join(cells) + f" | {len(group) - len(done)} |")
    markdown = "\n".join(table)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = list(zip(labels, [r.rows for r in runs]))
    same = [" = ".join(f"`{label}`" for label in g) for g in plots.coinciding(curves) if len(g) > 1]
    if runs:
        plots.compare_curves(curves, out_dir / "compare_curves.png")
    paired = paired_table(runs, labels)
    body = [f"# Comparison of {len(run_dirs)} runs", "", markdown, "",
            *(["Each arm minus plain GRPO, paired by seed (95% Student-t interval of the mean difference):", "",
               paired, ""] if paired else []),
            *(["Each method minus its control, paired by seed (95% Student-t interval of the mean difference):", "",
               against, ""] if against else []),
            *([f"Identical curves (validation accuracy and entropy, every seed): {'; '.join(same)}.", ""] if same else []),
            "Failed or unfinished jobs: " + ("none." if not failed else ""), *[f"- {f}" for f in failed], "",
            "Runs: " + ", ".join(f"`{r.path}`" for r in runs), *dashboard_lines(*sorted({r.path.parent for r in runs})), "",
            "![curves](compare_curves.png)"]
    (out_dir / "comparison.md").write_text("\n".join(body) + "\n")
    return markdown
