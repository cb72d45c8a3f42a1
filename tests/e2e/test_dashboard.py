"""End to end: `python -m rlvr_exp.dashboard` on real runs, through the real CLIs in subprocesses.

A two-arm sweep (`sweep=shaper_ablation experiment=grpo,ppl_position seed=0`, 4 steps each) and one
run with `analysis=off`, all logging offline to W&B; a warm-start capped at 50 steps, cached for the
module, so the three runs take about a minute on a shared 2-core machine. The checks: every panel
names only keys the runs wrote to metrics.jsonl (or media their offline W&B runs logged), panels
whose keys are missing are left out, and the runs are grouped in W&B by sweep and arm."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr_exp.analysis.compare import compare_runs
from rlvr_exp.dashboard.spec import build_spec, spec_keys
from rlvr_exp.dashboard.wandb_file import media_keys, run_record

# slow: three real CLI runs with offline W&B (about 100 s on the idle 2-core machine); the panel rules
# themselves are unit-tested fast (tests/unit/test_dashboard_panels.py). Run: pytest -m slow tests/e2e/test_dashboard.py
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SMALL = ["trainer.steps=4", "trainer.val_every=2", "trainer.dump_tokens_every=2", "analysis.probe_every=2",
         "trainer.checkpoint_every=0", "logger.mode=offline", "logger.progress_bar=false", "model.warmstart.max_steps=50",
         "task.max_operand=9", "task.num_train=84", "task.num_val=16", "trainer.prompts_per_step=8",
         "trainer.prompts_per_minibatch=4", "trainer.samples_per_prompt=4", "trainer.num_threads=1"]


def cli(module: str, args: list[str], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    scratch = cwd / ".scratch"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(scratch),
           "WANDB_CACHE_DIR": str(scratch), "WANDB_DATA_DIR": str(scratch),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra_env}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, model_cache) -> dict[str, Path]:
    cwd = tmp_path_factory.mktemp("dashboard")
    cache = f"model.cache_dir={model_cache}"  # the session's warm-starts (keyed by every setting that shapes them)
    sweep = cli("rlvr_exp.train", ["-m", "sweep=shaper_ablation", "experiment=grpo,ppl_position", "seed=0", cache, *SMALL],
                cwd)
    assert sweep.returncode == 0, (sweep.stdout + sweep.stderr)[-4000:]
    off = cli("rlvr_exp.train", ["analysis=off", cache, f"hydra.run.dir={cwd / 'off'}", *SMALL], cwd)
    assert off.returncode == 0, (off.stdout + off.stderr)[-4000:]
    return {"sweep": cwd / "outputs" / "multirun" / "shaper_ablation", "off": cwd / "off", "cwd": cwd}


def logged(run_dir: Path) -> set[str]:
    """Every key of the run: metrics.jsonl keys and the media of its offline W&B run."""
    keys = {k for line in (run_dir / "metrics.jsonl").read_text().splitlines() for k in json.loads(line)}
    return keys | set(media_keys(run_dir))


def test_sweep_spec_names_only_logged_keys_grouped_by_arm(runs):
    spec = build_spec(runs["sweep"])
    jobs = [runs["sweep"] / "0", runs["sweep"] / "1"]
    union = logged(jobs[0]) | logged(jobs[1])
    assert spec_keys(spec) <= union
    assert spec["group"] == "shaper_ablation" and spec["arms"] == ["grpo", "ppl_position"]
    assert [r["job_type"] for r in spec["runs"]] == ["grpo", "ppl_position"]
    assert set(spec["colors"]) == {"grpo", "ppl_position"} and len(set(spec["colors"].values())) == 2
    assert spec["grouping"] == {"by": "job_type", "aggregate": "mean", "spread": "stddev"}
    assert spec["filters"]["choice/experiment"] == ["grpo", "ppl_position"]
    assert spec["filters"]["choice/shaper"] == ["none", "ppl,position"]
    names = [s["name"] for s in spec["sections"]]
    assert names[:8] == ["Accuracy", "Entropy", "Perplexity", "Stage", "Shapers", "Probe set", "Defects", "Samples"]
    keys = spec_keys(spec)
    # a key that one arm logs has its panel: PPL's weights come from the ppl_position job only
    assert "shaper/ppl/weight_mean" in keys and "shaper/ppl/weight_mean" not in logged(jobs[0])
    assert {"entropy/pos", "entropy/neg", "entropy/pos_bucket_0", "probe/entropy_change_neg", "samples"} <= keys
    # the position bonus never switched on (no plateau in 4 steps): no bonus panel, no empty chart
    assert not any(k.startswith("shaper/position/bonus") for k in keys)


def test_single_run_spec_names_only_its_own_keys(runs):
    spec = build_spec(runs["sweep"] / "1")
    assert spec_keys(spec) <= logged(runs["sweep"] / "1")
    assert [r["folder"] for r in spec["runs"]] == ["."] and spec["arms"] == ["ppl_position"]


def test_analysis_off_run_gets_no_analysis_panels(runs):
    spec = build_spec(runs["off"])
    keys = spec_keys(spec)
    assert keys <= logged(runs["off"])
    assert not any(k.startswith(("entropy/pos_bucket", "entropy/top_", "probe/", "defect/", "ppl/logppl_pos_q", "hist/"))
                   for k in keys)
    assert "samples" not in keys and "Probe set" not in [s["name"] for s in spec["sections"]]
    assert {"entropy/mean", "entropy/pos", "entropy/neg", "val/accuracy"} <= keys  # the basic metrics stay
    left = {x["title"] for x in spec["left_out"]}
    assert {"entropy by relative-position bucket (0 = start of the response)", "samples table",
            "probe set: entropy change, correct vs wrong"} <= left
    assert spec["group"] is None and spec["arms"] == ["none@always"]


def test_offline_runs_carry_group_job_type_tags_and_choices(runs):
    spec = build_spec(runs["sweep"])
    for job, arm, tags in (("0", "grpo", ["shaper:none", "stage:always", "none@always"]),
                           ("1", "ppl_position", ["shaper:ppl", "shaper:position", "stage:always", "ppl@always",
                                                  "position@plateau"])):
        record = run_record(runs["sweep"] / job)
        assert (record["group"], record["job_type"], record["tags"]) == ("shaper_ablation", arm, tags)
        # the choice/* filters W&B holds are the ones the dashboard reads back from choices.json
        assert record["choices"]["choice/experiment"] == arm
        assert record["choices"] == spec["runs"][int(job)]["choices"]


def test_dry_run_cli_writes_the_spec_and_says_how_to_publish(runs):
    done = cli("rlvr_exp.dashboard", [str(runs["sweep"]), "--dry-run", "--entity", "my-team"], runs["cwd"])
    assert done.returncode == 0, done.stderr[-3000:]
    spec = json.loads((runs["sweep"] / "dashboard" / "spec.json").read_text())
    assert spec == build_spec(runs["sweep"], entity="my-team")
    assert "python -m rlvr_exp.dashboard" in done.stdout and "--entity my-team" in done.stdout
    assert "left out (Stage): plateau step (not logged: stage/plateau_step)" in done.stdout
    # W&B offline: never tries the network, even without --dry-run
    offline = cli("rlvr_exp.dashboard", [str(runs["off"])], runs["cwd"], WANDB_MODE="offline")
    assert offline.returncode == 0 and "not publishing" in offline.stdout
    missing = cli("rlvr_exp.dashboard", [str(runs["cwd"] / "nothing"), "--dry-run"], runs["cwd"])
    assert missing.returncode == 2 and "not a run folder" in missing.stderr


def test_workspace_and_report_objects_build_offline(runs):
    pytest.importorskip("wandb_workspaces", reason="the dashboard extra is not installed")
    from rlvr_exp.dashboard.publish import report, workspace

    spec = build_spec(runs["sweep"])
    view = workspace(spec, "my-team", "rlvr_exp")
    model = view._to_model()  # the saved-view payload, built without network
    assert [s.name for s in view.sections] == [s["name"] for s in spec["sections"]]
    assert sum(len(s.panels) for s in view.sections) == sum(len(s["panels"]) for s in spec["sections"])
    assert model.spec.section.run_sets[0].grouping[0].name == "jobType"
    built = report(spec, "my-team", "rlvr_exp")
    assert built.title == "rlvr_exp: shaper_ablation" and len(built.blocks) == 1 + 2 * len(spec["sections"])


def test_comparison_links_the_published_dashboard(runs, tmp_path):
    (runs["sweep"] / "dashboard").mkdir(exist_ok=True)
    urls = {"workspace": "https://wandb.ai/my-team/rlvr_exp?nw=abc", "report": "https://wandb.ai/my-team/r--x"}
    (runs["sweep"] / "dashboard" / "urls.json").write_text(json.dumps(urls))
    try:
        compare_runs([runs["sweep"] / "0", runs["sweep"] / "1"], tmp_path)
        text = (tmp_path / "comparison.md").read_text()
        assert "[W&B workspace](https://wandb.ai/my-team/rlvr_exp?nw=abc)" in text
        assert "[W&B report](https://wandb.ai/my-team/r--x)" in text
    finally:
        (runs["sweep"] / "dashboard" / "urls.json").unlink()
