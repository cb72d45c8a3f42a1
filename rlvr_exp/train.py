"""Entry point: ``python -m rlvr_exp.train [overrides]``. Builds, fits, returns the metric that
a Hydra sweeper optimises (``optimized_metric``, default ``val/accuracy_final``)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
import transformers
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rlvr_exp.build import build

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    transformers.utils.logging.disable_progress_bar()
    if cfg.trainer.num_threads:
        torch.set_num_threads(int(cfg.trainer.num_threads))
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (run_dir / "choices.json").write_text(json.dumps(dict(HydraConfig.get().runtime.choices), indent=2))
    trainer = build(cfg, run_dir)
    summary = trainer.fit()
    log.info("summary: %s", {k: summary[k] for k in sorted(summary) if k.startswith(("val/accuracy", "entropy/mean_"))})
    value = summary.get(cfg.optimized_metric)
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
