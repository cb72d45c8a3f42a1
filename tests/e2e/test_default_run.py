"""The embedded default, exactly as the README runs it (minutes: marked slow).

Run with ``python -m pytest -m slow tests/e2e/test_default_run.py``."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_default_run_learns(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    subprocess.run([sys.executable, "-m", "rlvr_exp.train", f"hydra.run.dir={tmp_path}"], cwd=REPO, env=env,
                   check=True, timeout=1800)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["val/accuracy_final"] - summary["val/accuracy_initial"] >= 0.20, summary
    assert summary["entropy/mean_final"] < summary["entropy/mean_initial"]
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert (tmp_path / "tokens").is_dir() and (tmp_path / "checkpoints").is_dir()
