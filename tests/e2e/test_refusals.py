"""A refused config, through the real CLI: one clear line, exit code 2, no run folder left behind."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize(("override", "says"), [
    ("trainer.lr=-1.0", "trainer.lr must be > 0, got -1.0"),
    ("trainer.resume_from=/nowhere/run", "trainer.resume_from=/nowhere/run: no checkpoint there"),
    ("+trainer.lerning_rate=1.0e-5", "did you mean trainer.lr"),
])
def test_refused_config_prints_one_message_and_leaves_no_folder(tmp_path, override, says):
    run = tmp_path / "runs" / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr_exp.train", override, f"hydra.run.dir={run}"], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}, capture_output=True, text=True,
        timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert out.count(says) == 1 and "Traceback" not in out and out.count("\n") <= 2, out
    assert not run.exists() and not run.parent.exists()


@pytest.mark.parametrize(("args", "key"), [
    (["hydra.run.dir={f}/run"], "hydra.run.dir"),
    (["-m", "hydra.sweep.dir={f}/sweep", "seed=0,1"], "hydra.sweep.dir"),
])
def test_output_folder_that_cannot_be_made_is_one_line(tmp_path, args, key):
    """A regular file where a parent folder should be (root writes anywhere, so chmod cannot make
    an unwritable folder): refused before Hydra makes the folder, naming the path and the key."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr_exp.train", *(a.format(f=blocker) for a in args)], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}, capture_output=True, text=True,
        timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"refused: the output folder {blocker}/" in out and f"{blocker} is a file, not a folder" in out
    assert f"point {key} at a writable place" in out
    assert "Traceback" not in out and out.count("\n") == 1, out
    assert blocker.read_text() == "a file\n" and sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder"]


def test_numerical_fault_stops_with_one_line_and_exit_3(tmp_path, model_cache):
    """``trainer.lr=1.0e+30``: no torch.multinomial traceback on the console; error.txt keeps it."""
    from tests.conftest import FAST

    run = tmp_path / "run"
    args = [a for a in FAST if not a.startswith(("trainer.lr=", "trainer.checkpoint_every="))]
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr_exp.train", *args, "trainer.steps=3", "trainer.lr=1.0e+30",
         "trainer.checkpoint_every=1", f"model.cache_dir={model_cache}", f"hydra.run.dir={run}"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"},
        capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out[-3000:]
    assert "stopped: numerical fault at step 2: " in out and "Traceback" not in out and "multinomial" not in out
    assert "step_000001" in out and (run / "error.txt").is_file()


def test_plain_typo_names_the_closest_keys(tmp_path):
    """Without ``+`` Hydra refuses the key itself; the CLI then names the closest valid keys."""
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr_exp.train", "shaper=ppl", "shaper.ppl.alpah=0.1",
         f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 1
    assert "shaper.ppl.alpah is not a setting of shaper.ppl; did you mean shaper.ppl.alpha?" in proc.stderr
