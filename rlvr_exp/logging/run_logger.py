"""Where metrics go: ``metrics.jsonl`` in the run folder, a W&B run, and a progress bar."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm.auto import tqdm

from rlvr_exp.faults import json_safe
from rlvr_exp.logging import wandb_guard
from rlvr_exp.logging.wandb_labels import wandb_labels
from rlvr_exp.run_files import METRICS, SUMMARY

log = logging.getLogger(__name__)
WANDB_MODES = ("online", "offline", "disabled")
BAR_KEYS = {"reward/mean": "reward", "train/accuracy": "acc", "entropy/mean": "ent", "val/accuracy": "val"}


class RunLogger:
    """Writes one JSON object per logged step to ``metrics.jsonl`` (append, so a resumed run
    continues its file) and mirrors it to W&B. Nothing happens in the constructor: ``start``
    opens the W&B run, ``finish`` closes it (call it in ``finally``)."""

    def __init__(
        self, project: str = "rlvr_exp", mode: str = "offline", entity: str | None = None,
        group: str | None = None, job_type: str | None = None, name: str | None = None,
        tags: list[str] | tuple[str, ...] | None = (), progress_bar: bool = True, init_timeout_s: float = 15.0,
    ) -> None:
        if mode not in WANDB_MODES:
            raise ValueError(f"logger.mode must be one of {WANDB_MODES}, got {mode!r}")
        self.project, self.mode, self.entity, self.group = project, mode, entity, group
        self.job_type, self.name, self.tags, self.progress_bar = job_type, name, list(tags or []), progress_bar
        self.init_timeout_s = init_timeout_s
        self.run = None
        self.run_dir: Path | None = None
        self._bar: tqdm | None = None
        self._last_bar: dict[str, float] = {}

    def start(
        self, run_dir: Path, config: dict, total_steps: int, initial_step: int = 0, run_id: str | None = None
    ) -> str | None:
        """Opens the W&B run (resuming ``run_id`` when given) and the progress bar. ``config`` is the
        run's full config (``build.run_config``): the W&B group, job type and tags come from it
        (``logging/wandb_labels.py``), so a sweep's runs group by sweep and arm."""
        self.run_dir = Path(run_dir)
        if self.mode != "disabled":
            import wandb

            labels = wandb_labels(config, self.group, self.job_type, self.tags)
            kwargs = dict(
                project=self.project, entity=self.entity, group=labels.group, job_type=labels.job_type,
                name=self.name, tags=labels.tags, config=config, dir=str(self.run_dir),
                id=run_id, resume="allow" if run_id else None, reinit="finish_previous",
            )
            self.run = wandb_guard.init(wandb, self.mode, self.init_timeout_s, kwargs)
        if self.progress_bar:
            self._bar = tqdm(total=total_steps, initial=initial_step, desc="rl", dynamic_ncols=True)
        return self.run.id if self.run is not None else None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        # NaN and infinities are kept, as "nan"/"inf"/"-inf" strings in the file (rlvr_exp/faults.py)
        clean = {k: (v if isinstance(v, str) else float(v)) for k, v in metrics.items() if v is not None}
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps({"step": step, **{k: json_safe(v) for k, v in clean.items()}}) + "\n")
        if self.run is not None:
            wandb_guard.call("log", self.run.log, clean, step=step)
        if self._bar is not None:
            self._last_bar.update({short: clean[k] for k, short in BAR_KEYS.items() if k in clean})
            self._bar.set_postfix({k: f"{v:.3f}" for k, v in self._last_bar.items()}, refresh=False)
            if step > 0:  # step 0 is the evaluation before RL
                self._bar.update(1)

    @property
    def has_run(self) -> bool:
        """True while a W&B run is open (media are only built then)."""
        return self.run is not None

    def log_media(self, step: int, items: dict[str, object]) -> None:
        """Tables, histograms, images: W&B objects built by the caller (skipped without a run)."""
        if self.run is not None:
            wandb_guard.call("log media", self.run.log, items, step=step)

    def cut_back(self, run_dir: Path, step: int) -> None:
        """Drop the rows of ``run_dir/metrics.jsonl`` logged after ``step`` (a resumed run
        continues from its checkpoint's step)."""
        metrics = Path(run_dir) / METRICS
        if metrics.exists():
            rows = [r for r in metrics.read_text().splitlines() if r and json.loads(r)["step"] <= step]
            metrics.write_text("".join(r + "\n" for r in rows))

    def summary(self, values: dict[str, float]) -> None:
        (self.run_dir / SUMMARY).write_text(json.dumps(values, indent=2, sort_keys=True))
        if self.run is not None:
            wandb_guard.call("summary", self.run.summary.update, values)

    def finish(self, exit_code: int = 0) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.run is not None:
            wandb_guard.call("finish", self.run.finish, exit_code=exit_code)
            self.run = None


class SilentLogger(RunLogger):
    """The logger of every rank but 0 under torchrun: no W&B run, no files, no progress bar
    (rank 0 logs the run's metrics, which are reduced over ranks)."""

    def __init__(self) -> None:
        super().__init__(mode="disabled", progress_bar=False)

    def start(self, run_dir: Path, config: dict, total_steps: int, initial_step: int = 0,
              run_id: str | None = None) -> str | None:
        self.run_dir = Path(run_dir)
        return None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def cut_back(self, run_dir: Path, step: int) -> None:
        pass

    def summary(self, values: dict[str, float]) -> None:
        pass
