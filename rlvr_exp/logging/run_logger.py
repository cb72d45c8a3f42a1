"""Where metrics go: ``metrics.jsonl`` in the run folder, a W&B run, and a progress bar.

Nothing reaches W&B twice. A resumed run recomputes the steps between its checkpoint and the kill,
which the killed process had already sent to the same W&B run (an offline W&B run resumed with
``resume="allow"`` does not know it is resumed: it writes a second ``offline-run-*`` folder with
the same id, and would hold those steps twice; online, W&B drops steps below the run's current one
with a warning, but only those its server received). So the logger notes in ``wandb_sent.json`` the
last step it sent to which W&B run, before sending it, and a logger that reopens that run sends
only later steps: each step reaches W&B at most once (a kill between the note and the send loses
that one step from W&B, never doubles it). The recomputed steps still go to ``metrics.jsonl``,
which :meth:`RunLogger.cut_back` first cut to the checkpoint, so it holds one line per step. On CPU
the recomputed values equal the sent ones; on GPU non-deterministic kernels can make them differ in
the last digits, and then W&B keeps the first values and ``metrics.jsonl`` the recomputed ones.
W&B's own rewind (``resume_from="<id>?_step=k"``) is a server-side preview feature, not available
offline, so it is not used.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from tqdm.auto import tqdm

from rlvr_exp.faults import json_safe
from rlvr_exp.logging import wandb_guard
from rlvr_exp.logging.wandb_labels import wandb_labels
from rlvr_exp.run_files import METRICS, SUMMARY, WANDB_SENT

log = logging.getLogger(__name__)
WANDB_MODES = ("online", "offline", "disabled")
BAR_KEYS = {"reward/mean": "reward", "train/accuracy": "acc", "entropy/mean": "ent", "val/accuracy": "val"}


class RunLogger:
    """Writes one JSON object per logged step to ``metrics.jsonl`` (append, so a resumed run
    continues its file) and mirrors it to W&B, each step once (see the module docstring). Nothing
    happens in the constructor: ``start`` opens the W&B run, ``finish`` closes it (call it in
    ``finally``)."""

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
        self.run_id: str | None = None  # the open W&B run's id
        self.sent_step = -1  # the last step the open W&B run holds; later ones are sent
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
            self.run_id = self.run.id
            self.sent_step = self._already_sent() if run_id else -1
            if self.sent_step > initial_step:
                log.info("W&B run %s already holds steps up to %d: steps %d-%d go to %s only", self.run_id,
                         self.sent_step, initial_step + 1, self.sent_step, METRICS)
        if self.progress_bar:
            self._bar = tqdm(total=total_steps, initial=initial_step, desc="rl", dynamic_ncols=True)
        return self.run_id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        # NaN and infinities are kept, as "nan"/"inf"/"-inf" strings in the file (rlvr_exp/faults.py)
        clean = {k: (v if isinstance(v, str) else float(v)) for k, v in metrics.items() if v is not None}
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps({"step": step, **{k: json_safe(v) for k, v in clean.items()}}) + "\n")
        if self.run is not None and step > self.sent_step:
            self._note_sent(step)
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
        if self.run is not None and step > self.sent_step:
            wandb_guard.call("log media", self.run.log, items, step=step)

    def _already_sent(self) -> int:
        """The last step the reopened W&B run holds: what ``wandb_sent.json`` says was sent to it
        (-1 when it names another run or is absent), or, online, the server's last step."""
        path = self.run_dir / WANDB_SENT
        try:
            note = json.loads(path.read_text())
            noted = int(note["step"]) if note["run_id"] == self.run_id else -1
        except (OSError, ValueError, KeyError, TypeError):
            noted = -1
        return max(noted, self.run.starting_step - 1)

    def _note_sent(self, step: int) -> None:
        """Write ``wandb_sent.json`` (replaced whole, so a kill never leaves half a note)."""
        path = self.run_dir / WANDB_SENT
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"run_id": self.run_id, "step": step}))
        os.replace(tmp, path)
        self.sent_step = step

    def cut_back(self, run_dir: Path, step: int) -> None:
        """Drop the rows of ``run_dir/metrics.jsonl`` logged after ``step`` (a resumed run
        continues from its checkpoint's step), and a torn last line that a kill cut mid-write."""
        metrics = Path(run_dir) / METRICS
        if not metrics.exists():
            return
        rows = []
        for row in filter(None, metrics.read_text().splitlines()):
            try:
                logged = json.loads(row)["step"]
            except (ValueError, KeyError, TypeError):
                log.warning("%s: dropped a line that is not a logged step (cut by a kill?): %.80s", metrics, row)
                continue
            if logged <= step:
                rows.append(row)
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
            self.run = self.run_id = None


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
