"""The dashboard spec of a run or sweep folder: plain JSON-ready data, built without network.

It holds the runs (W&B run id, arm = job type, seed, tags, ``choice/*`` config), how they group
(W&B group = sweep name, one colour per arm, seeds averaged with their std as the band), and the
sections and panels of ``panels.py`` from the union of the keys the runs log (a key logged by one
arm only, ``shaper/ppl/*``, still has data to show). ``publish.py`` turns it into a W&B workspace
and report.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlvr_exp import run_files as rf
from rlvr_exp.analysis.runs import AnalysisInputError, Run, expand, is_run_dir, load_run, not_a_run_message
from rlvr_exp.dashboard.links import DASHBOARD_DIR, SPEC_FILE
from rlvr_exp.dashboard.panels import Keys, build_sections
from rlvr_exp.dashboard.wandb_file import media_keys
from rlvr_exp.logging.wandb_labels import choice_config, wandb_labels

SPEC_VERSION = 1
# One colour per arm, in arm order (matplotlib's tab10, the colours of analyze's plots).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
GROUPING = {"by": "job_type", "aggregate": "mean", "spread": "stddev"}


def metric_keys(run: Run) -> frozenset[str]:
    """Keys with a numeric value in at least one row of the run's metrics.jsonl (``step`` aside)."""
    return frozenset(k for row in run.rows for k, v in row.items()
                     if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool))


def run_entry(run: Run, root: Path) -> dict[str, Any]:
    """One run of the spec: where it is, how W&B knows it, and its choices."""
    choices = choice_config(run.choices, list(run.config["shaper"]))
    logger = run.config["logger"]
    labels = wandb_labels({**run.config, **choices}, logger["group"], logger["job_type"], list(logger["tags"] or []))
    runs = sorted(p.name for p in (run.path / rf.WANDB).glob("offline-run-*") if p.is_dir())
    return {"folder": run.path.relative_to(root).as_posix() if run.path != root else ".",
            "run_id": runs[-1].rsplit("-", 1)[1] if runs else None, "group": labels.group,
            "job_type": labels.job_type, "seed": run.seed, "tags": labels.tags, "choices": choices,
            "finished": run.summary is not None}


def load_runs(folder: Path) -> list[Run]:
    """The runs of a run folder or a sweep folder (jobs without metrics.jsonl skipped); raises
    :class:`AnalysisInputError` when there is none."""
    runs = [load_run(d) for d in expand([folder]) if is_run_dir(d)]
    if not runs:
        raise AnalysisInputError(not_a_run_message(folder) + " (no job of the sweep logged a step)")
    return runs


def build_spec(folder: Path, project: str | None = None, entity: str | None = None) -> dict[str, Any]:
    """The dashboard spec of ``folder`` (module docstring); ``project`` and ``entity`` default to
    the runs' ``logger.project`` and ``logger.entity``."""
    folder = Path(folder)
    runs = load_runs(folder)
    entries = [run_entry(r, folder) for r in runs]
    keys = Keys(metrics=frozenset().union(*map(metric_keys, runs)),
                media={k: t for r in runs for k, t in media_keys(r.path).items()})
    sections, left_out = build_sections(keys)
    arms = list(dict.fromkeys(e["job_type"] for e in entries))
    groups = sorted({e["group"] for e in entries if e["group"]})
    filters: dict[str, list[str]] = {}
    for entry in entries:
        for key, value in entry["choices"].items():
            filters.setdefault(key, [])
            if value not in filters[key]:
                filters[key].append(value)
    group = groups[0] if len(groups) == 1 else None
    title = group or folder.resolve().name
    return {
        "spec_version": SPEC_VERSION, "title": f"rlvr_exp: {title}", "source": str(folder),
        "project": project or str(runs[0].config["logger"]["project"]), "entity": entity or runs[0].config["logger"]["entity"],
        "group": group, "runs": entries, "arms": arms,
        "colors": {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(arms)},
        "grouping": GROUPING, "filters": {k: v for k, v in filters.items() if len(v) > 1 or k == "choice/shaper"},
        "sections": sections, "left_out": left_out,
    }


def spec_keys(spec: dict[str, Any]) -> set[str]:
    """Every key that a panel of the spec names."""
    return {k for section in spec["sections"] for panel in section["panels"] for k in panel["keys"]}


def write_spec(spec: dict[str, Any], folder: Path) -> Path:
    """``<folder>/dashboard/spec.json``."""
    out = Path(folder) / DASHBOARD_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / SPEC_FILE
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path
