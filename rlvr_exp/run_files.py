"""The run folder, a contract (docs/method.md section 8): the names of the files a run writes and the
columns of its per-token record. Writers and readers import these; no module spells them itself.

    <run dir>/
      metrics.jsonl          one JSON object per logged step, {"step": k, ...}   logging/run_logger.py
      summary.json           the end-of-run summary; present = the job finished  logging/run_logger.py
      config_resolved.yaml   the resolved config                                 train.py
      choices.json           Hydra's runtime choices (the shaper list included)  train.py
      job.json               {"overrides": [...]}: the job that owns the folder  jobs.py
      error.txt              time, overrides and traceback of a failed attempt   jobs.py
      attempts/<k:03d>/      an earlier failed attempt's leftovers               jobs.py
      .hydra/overrides.yaml  Hydra's record of the command line                  Hydra
      tokens/step_<k:06d>.parquet        the per-token record (TOKEN_COLUMNS)    logging/token_dump.py
      tokens/step_<k:06d>.rank_<R>.parquet   the same, one file per rank under torchrun
      checkpoints/step_<k:06d>/policy/   weights and tokenizer                   checkpoint.py
      checkpoints/step_<k:06d>/trainer_state.pt   the rest of the run's state    checkpoint.py
      wandb/                 W&B's files (offline runs: offline-run-*)           W&B
      wandb_sent.json        {"run_id": ..., "step": k}: the last step sent to W&B  logging/run_logger.py
      analysis/              the report of ``python -m rlvr_exp.analyze``        analysis/report.py
      dashboard/spec.json    the dashboard spec (also beside a sweep folder)     dashboard/spec.py
      dashboard/urls.json    the published workspace and report URLs             dashboard/publish.py
"""
from __future__ import annotations

from pathlib import Path

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CONFIG = "config_resolved.yaml"
CHOICES = "choices.json"
JOB = "job.json"
ERROR = "error.txt"
ATTEMPTS = "attempts"
HYDRA_OVERRIDES = ".hydra/overrides.yaml"
TOKENS = "tokens"
CHECKPOINTS = "checkpoints"
CHECKPOINT_POLICY = "policy"
CHECKPOINT_STATE = "trainer_state.pt"
WANDB = "wandb"
WANDB_SENT = "wandb_sent.json"
ANALYSIS = "analysis"
DASHBOARD = "dashboard"
DASHBOARD_SPEC = "spec.json"
DASHBOARD_URLS = "urls.json"

#: Step folders and files (checkpoints, token dumps) are ``step_<6 digits>``, so names sort by step.
STEP_GLOB = "step_*"

#: The per-token record: one row per response token (padding excluded), docs/method.md section 8.
TOKEN_COLUMNS = ("step", "sample", "group", "position", "rel_position", "token_id", "logp_old", "entropy",
                 "advantage_raw", "advantage", "in_loss", "reward", "correct", "response_len", "logppl",
                 "delta_logp")
#: Columns added to the record after its first version: records written before them lack them, and
#: readers must accept such files (the analysis then leaves out what needs them).
LATER_TOKEN_COLUMNS = ("delta_logp",)


def step_name(step: int) -> str:
    """``step_<step:06d>``: the name of a step's checkpoint folder or token file (without suffix)."""
    return f"step_{step:06d}"


def token_file(run_dir: Path, step: int, shard: int | None = None) -> Path:
    """``<run_dir>/tokens/step_<step:06d>.parquet``, or rank ``shard``'s ``...rank_<shard>.parquet``."""
    suffix = ".parquet" if shard is None else f".rank_{shard}.parquet"
    return Path(run_dir) / TOKENS / f"{step_name(step)}{suffix}"


def token_files(run_dir: Path) -> list[Path]:
    """The run's token dumps (every rank's), in step order."""
    return sorted((Path(run_dir) / TOKENS).glob(f"{STEP_GLOB}.parquet"))
