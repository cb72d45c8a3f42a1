"""Upload a report's plots to the run's own (offline) W&B run."""
from __future__ import annotations

from pathlib import Path

from rlvr_exp.analysis.runs import Run, wandb_run_id


def log_to_wandb(run: Run, images: dict[str, Path]) -> None:
    """Log the PNGs to the run's (offline) W&B run, resumed by id; a no-op without one."""
    run_id = wandb_run_id(run.path)
    if run_id is None:
        return
    import wandb

    project = run.config.get("logger", {}).get("project") or "rlvr_exp"
    wb = wandb.init(id=run_id, resume="allow", dir=str(run.path), mode="offline", project=project)
    try:
        # after the run's last step: W&B drops rows logged below a resumed run's step
        step = int(max(r["step"] for r in run.rows)) + 1
        wb.log({f"analysis/{name}": wandb.Image(str(path)) for name, path in images.items()}, step=step)
    finally:
        wb.finish()
