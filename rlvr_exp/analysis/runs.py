"""Load finished run folders (``python -m rlvr_exp.train``) and Hydra sweep folders for analysis.

A run folder is laid out as :mod:`rlvr_exp.run_files` says (``metrics.jsonl``, ``summary.json``,
``config_resolved.yaml``, ``choices.json``, ``.hydra/``, the per-token record ``tokens/`` of
docs/method.md section 8, per rank under torchrun and read here the same way, ``checkpoints/`` and
``wandb/``). A sweep
(multirun) folder holds numbered job folders ``0/ 1/ ...``, each a run folder, and
``multirun.yaml``.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from rlvr_exp import run_files as rf

RUN_CONTENTS = (f"{rf.METRICS} (one JSON object per step), {rf.SUMMARY}, {rf.CONFIG}, {rf.CHOICES}, "
                f"{rf.TOKENS}/{rf.STEP_GLOB}.parquet (per-token records, written when trainer.dump_tokens_every>0)")
# Overrides that name the strategy or the seed, or only move files: never part of a label's extras.
_LABEL_KEYS = ("shaper", "stage", "seed")
# How a job ran, not what it trained: never a label, so a rerun under another launcher or thread count
# pairs with the original arm.
_NON_STRATEGY_PREFIXES = ("hydra.", "logger.", "trainer.checkpoint", "trainer.dump", "model.cache_dir",
                          "launcher", "sweep", "trainer.num_threads")


class AnalysisInputError(ValueError):
    """A folder is not what the analysis needs; the message names the folder and what is missing."""


@dataclass
class Run:
    """One run folder, loaded. ``summary`` is None for a failed or unfinished run."""

    path: Path
    rows: list[dict[str, Any]]
    summary: dict[str, Any] | None
    config: dict[str, Any]
    choices: dict[str, Any]
    overrides: list[str] = field(default_factory=list)

    @property
    def token_files(self) -> list[Path]:
        return rf.token_files(self.path)

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    def detector_kwargs(self) -> dict[str, Any] | None:
        """The run's ``stage.detector`` config minus ``_target_`` (None when the run has none)."""
        detector = self.config.get("stage", {}).get("detector")
        if not isinstance(detector, dict):
            return None
        return {k: v for k, v in detector.items() if k != "_target_"}


def is_run_dir(path: Path) -> bool:
    return (Path(path) / rf.METRICS).is_file()


def job_dirs(path: Path) -> list[Path]:
    """The numbered job folders of a sweep folder, in job order ([] when there are none)."""
    jobs = [p for p in Path(path).iterdir() if p.is_dir() and p.name.isdigit()] if Path(path).is_dir() else []
    return sorted(jobs, key=lambda p: int(p.name))


def is_sweep_dir(path: Path) -> bool:
    return not is_run_dir(path) and (bool(job_dirs(path)) or (Path(path) / "multirun.yaml").is_file())


def not_a_run_message(path: Path) -> str:
    what = "does not exist" if not Path(path).exists() else "has no metrics.jsonl"
    return (f"{path}: not a run folder ({what}). A run folder (written by `python -m rlvr_exp.train`) holds "
            f"{RUN_CONTENTS}; a sweep folder holds numbered job folders 0/ 1/ ... of such runs.")


def expand(paths: list[Path]) -> list[Path]:
    """Run folders stay, sweep folders become their job folders (failed jobs included);
    anything else raises :class:`AnalysisInputError`."""
    out: list[Path] = []
    for path in map(Path, paths):
        if is_run_dir(path):
            out.append(path)
        elif is_sweep_dir(path):
            out.extend(job_dirs(path))
        else:
            raise AnalysisInputError(not_a_run_message(path))
    return out


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows by step; a step logged twice (a resumed run) keeps its last row."""
    by_step: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                by_step[int(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]


def load_run(path: Path) -> Run:
    """Load a run folder; raises :class:`AnalysisInputError` without metrics.jsonl."""
    path = Path(path)
    if not is_run_dir(path):
        raise AnalysisInputError(not_a_run_message(path))
    config_path = path / rf.CONFIG
    config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False) if config_path.is_file() else {}
    overrides_path = path / rf.HYDRA_OVERRIDES
    overrides = list(OmegaConf.load(overrides_path)) if overrides_path.is_file() else []
    return Run(path=path, rows=read_rows(path / rf.METRICS), summary=_read_json(path / rf.SUMMARY),
               config=config, choices=_read_json(path / rf.CHOICES) or {}, overrides=overrides)


def read_tokens(run: Run) -> pa.Table:
    """All token dumps of a run, concatenated (contract columns only); raises when there are none.
    A file written before a :data:`rlvr_exp.run_files.LATER_TOKEN_COLUMNS` column existed reads
    with that column null."""
    files = run.token_files
    if not files:
        raise AnalysisInputError(
            f"{run.path}: no per-token records (tokens/step_*.parquet is missing or empty): "
            "re-run with trainer.dump_tokens_every>0 to write them.")
    return pa.concat_tables([_read_token_file(f) for f in files])


def _read_token_file(path: Path) -> pa.Table:
    present = set(pq.read_schema(path).names)
    table = pq.read_table(path, columns=[c for c in rf.TOKEN_COLUMNS if c in present or c not in rf.LATER_TOKEN_COLUMNS])
    for name in rf.LATER_TOKEN_COLUMNS:
        if name not in present:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.float32()))
    return table.select(list(rf.TOKEN_COLUMNS))


def strategy_label(choices: dict[str, Any], config: dict[str, Any] | None = None) -> str:
    """``{"shaper": "[ppl,position]", "stage": "plateau"}`` -> ``"ppl+position @plateau"``.

    Hydra leaves a list-valued group choice (``shaper=[ppl,position]``) out of
    ``runtime.choices``; the shaper names then come from the resolved config's ``shaper`` keys."""
    shaper = choices.get("shaper")
    if isinstance(shaper, (list, tuple)):
        names = [str(s) for s in shaper]
    elif shaper is not None:
        names = [s.strip() for s in str(shaper).strip("[]").split(",") if s.strip()]
    elif isinstance((config or {}).get("shaper"), dict):
        names = list(config["shaper"])
    else:
        names = ["?"]
    return f"{'+'.join(names) or 'none'} @{choices.get('stage') or '?'}"


def strategy_labels(runs: list[Run]) -> list[str]:
    """One label per run: shaper and stage choices, plus the strategy overrides (from
    .hydra/overrides.yaml) that differ between the runs, so that e.g. an alpha sweep is not
    mistaken for seeds. Seeds and file-only overrides never enter a label."""
    def extras(run: Run) -> dict[str, str]:
        pairs = (o.split("=", 1) for o in run.overrides if "=" in o)
        return {k: v for k, v in pairs
                if k.lstrip("+~") not in _LABEL_KEYS and not k.lstrip("+~").startswith(_NON_STRATEGY_PREFIXES)}

    per_run = [extras(r) for r in runs]
    keys = sorted({k for e in per_run for k in e})
    varying = [k for k in keys if len({e.get(k) for e in per_run}) > 1]
    labels = []
    for run, e in zip(runs, per_run):
        extra = " ".join(f"{k}={e[k]}" for k in varying if k in e)
        labels.append(strategy_label(run.choices, run.config) + (f" {extra}" if extra else ""))
    return labels


def latest_policy_dir(run_dir: Path) -> Path | None:
    """``checkpoints/step_*/policy`` of the last checkpoint, or None."""
    dirs = sorted(p for p in (Path(run_dir) / rf.CHECKPOINTS).glob(f"{rf.STEP_GLOB}/{rf.CHECKPOINT_POLICY}") if p.is_dir())
    return dirs[-1] if dirs else None


def wandb_run_id(run_dir: Path) -> str | None:
    """Run id of the newest ``wandb/offline-run-<date>_<time>-<id>`` folder, or None."""
    runs = sorted(p.name for p in (Path(run_dir) / rf.WANDB).glob("offline-run-*") if p.is_dir())
    return runs[-1].rsplit("-", 1)[1] if runs else None


def token_decoder(run_dir: Path) -> Callable[[int], str] | None:
    """id -> text with the tokenizer saved beside the last checkpoint's policy (None without one)."""
    policy = latest_policy_dir(run_dir)
    if policy is None or not (policy / "tokenizer.json").is_file():
        return None
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(policy))
    return lambda token_id: tokenizer.decode([int(token_id)], skip_special_tokens=False)


def series(rows: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows that hold a numeric ``key``, in step order."""
    pairs = [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
    steps, values = zip(*pairs) if pairs else ((), ())
    return np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)
