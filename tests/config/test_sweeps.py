"""Sweeps: every sweep composes, expands (with Hydra's own override parser and BasicSweeper
splitting) to the jobs it promises, and each job's config holds the value it sweeps. Plus the
job-folder logic of rlvr_exp/jobs.py that makes a rerun skip finished jobs and resume the others."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from rlvr_exp import jobs
from tests.config.test_compose import BENCH, CONF, build_cheap, group_options, hydra_job

SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
GROUPS = {g for g, _ in group_options()}
PARSER = OverridesParser.create()


def sweep_params(name: str) -> dict[str, str]:
    with hydra_job([f"sweep={name}"]) as cfg:
        return {str(k): str(v) for k, v in cfg.hydra.sweeper.params.items()}


def expand(name: str | None, cli: list[str]) -> list[list[str]]:
    """The job override lists of ``python -m rlvr_exp.train -m [sweep=<name>] <cli>``, as
    BasicSweeper.sweep builds them: the sweep's params first, then the command line."""
    params = [f"{k}={v}" for k, v in sweep_params(name).items()] if name else []
    batches = BasicSweeper.split_arguments(PARSER.parse_overrides(params + cli), max_batch_size=None)
    return [job for batch in batches for job in batch]


def assert_job_holds_its_values(job: list[str]) -> None:
    """Compose the job; each ``key=value`` of it must be what the job config holds."""
    with hydra_job(job) as cfg:
        for override in PARSER.parse_overrides(job):
            key, value = override.key_or_group, override.value()
            if key == "shaper":
                assert list(cfg.shaper) == (value if isinstance(value, list) else [value]), job
            elif key in GROUPS and isinstance(value, str):
                assert cfg.hydra.runtime.choices[key] == value, job
            elif key not in GROUPS:
                assert OmegaConf.select(cfg, key) == value, job
        build_cheap(cfg)


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_names_its_folder_group_and_stable_subdirs(name):
    with hydra_job([f"sweep={name}"]) as cfg:
        assert cfg.logger.group == name
        assert cfg.hydra.sweep.dir == f"outputs/multirun/{name}"
        raw = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
        assert raw["subdir"] == "${hydra.job.num}"  # the same command maps job n to the same folder
        assert cfg.hydra.sweeper.params, "a sweep sweeps something"
    with hydra_job([f"sweep={name}", "logger.group=renamed"]) as cfg:  # one knob renames both
        assert cfg.hydra.sweep.dir == "outputs/multirun/renamed"


EXPECTED = {  # sweep -> (number of jobs, {key: values that must be among the swept ones})
    "shaper_ablation": (20, {"experiment": {("testbed", a) for a in ("grpo", "ppl", "position_plateau", "ppl_position")},
                             "seed": {0, 1, 2, 3, 4}}),
    "controls": (30, {"experiment": {("testbed", a) for a in ("ppl", "ppl_high", "position_plateau",
                                                               "position_front_plateau", "positive_only", "negative_only",
                                                               "high_entropy", "clip_cov", "kl_cov", "grpo")}}),
    "ppl_alpha": (15, {"shaper.ppl.alpha": {0.01}}),
    "position_alpha": (12, {"shaper.position.alpha": {0.05, 0.1}}),
}


def test_every_sweep_is_covered():
    assert set(SWEEPS) == set(EXPECTED)


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_expands_to_jobs_that_each_hold_their_values(name):
    jobs_ = expand(name, [f"sweep={name}"])
    count, must = EXPECTED[name]
    assert len(jobs_) == count and len({tuple(j) for j in jobs_}) == count
    swept: dict[str, set] = {}
    for job in jobs_:
        for override in PARSER.parse_overrides(job):
            value = override.value()  # a preset stack ([testbed,grpo]) is a list
            swept.setdefault(override.key_or_group, set()).add(tuple(value) if isinstance(value, list) else value)
    for key, values in must.items():
        assert values <= swept[key], (key, swept[key])
    for job in jobs_:
        assert_job_holds_its_values(job)


@pytest.mark.parametrize("name", SWEEPS)
def test_every_job_gets_a_wandb_label_of_its_own_arm(name):
    labels = {}
    for job in expand(name, [f"sweep={name}", "seed=0"]):
        with hydra_job(job) as cfg:
            labels[tuple(job)] = (cfg.logger.group, cfg.logger.job_type)
    assert {group for group, _ in labels.values()} == {name}
    assert len({label for _, label in labels.values()}) == len(labels)  # one label per arm


def test_command_line_narrows_an_axis():
    jobs_ = expand("shaper_ablation", ["sweep=shaper_ablation", "seed=0"])
    assert len(jobs_) == 4 and all("seed=0" in j for j in jobs_)
    jobs_ = expand("ppl_alpha", ["sweep=ppl_alpha", "shaper.ppl.alpha=0.01,0.03", "seed=1"])
    assert sorted(j[0] for j in jobs_) == ["shaper.ppl.alpha=0.01", "shaper.ppl.alpha=0.03"]


@pytest.mark.parametrize("cli", ["shaper=none,[ppl,position]", "shaper=choice(none,[ppl,position])"])
def test_a_shaper_stack_is_one_sweep_choice(cli):
    jobs_ = expand(None, [cli])
    assert jobs_ == [["shaper=none"], ["shaper=[ppl,position]"]]
    for job in jobs_:
        assert_job_holds_its_values(job)


def test_paper_scale_arms_are_preset_stacks():
    cli = ["sweep=shaper_ablation", *BENCH, "seed=0",
           "experiment=[paper_qwen2.5_7b,grpo],[paper_qwen2.5_7b,ppl_position]"]
    jobs_ = expand("shaper_ablation", cli)
    assert len(jobs_) == 2
    for job, arm in zip(jobs_, ["grpo", "ppl_position"]):
        with hydra_job(job) as cfg:
            assert (cfg.trainer.prompts_per_step, cfg.logger.job_type) == (512, arm)


# ------------------------------------------------------------------ rlvr_exp/jobs.py
OVERRIDES = ["sweep=ppl_alpha", "shaper.ppl.alpha=0.01", "seed=0"]


def save_checkpoint(run_dir: Path, step: int) -> Path:
    folder = run_dir / "checkpoints" / f"step_{step:06d}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.pt").write_bytes(b"state")
    return folder


class TestJobFolder:
    def test_empty_folder_trains_fresh_and_records_its_job(self, tmp_path):
        job = jobs.plan(tmp_path, OVERRIDES, None)
        assert job.action == "fresh"
        jobs.prepare(job, OVERRIDES)
        assert json.loads((tmp_path / "job.json").read_text())["overrides"] == sorted(OVERRIDES)

    def test_finished_job_is_skipped_with_its_stored_metric(self, tmp_path):
        (tmp_path / "summary.json").write_text(json.dumps({"val/accuracy_final": 0.25}))
        save_checkpoint(tmp_path, 4)
        job = jobs.plan(tmp_path, OVERRIDES, None)
        assert job.action == "skip"
        assert jobs.stored_metric(job.summary, "val/accuracy_final") == 0.25
        assert jobs.stored_metric(job.summary, "val/missing") is None

    def test_interrupted_job_resumes_from_its_newest_checkpoint(self, tmp_path):
        save_checkpoint(tmp_path, 2)
        newest = save_checkpoint(tmp_path, 4)
        (tmp_path / "checkpoints" / ".tmp_step_000006").mkdir()  # a half-written one never counts
        (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n')
        (tmp_path / "error.txt").write_text("killed")
        job = jobs.plan(tmp_path, OVERRIDES, None)
        assert (job.action, job.checkpoint) == ("resume", newest)
        jobs.prepare(job, OVERRIDES)
        assert (tmp_path / "metrics.jsonl").exists()  # the trainer truncates it to the checkpoint
        assert not (tmp_path / "error.txt").exists() and (tmp_path / "attempts/000/error.txt").read_text() == "killed"

    def test_user_resume_from_is_kept(self, tmp_path):
        save_checkpoint(tmp_path, 2)
        job = jobs.plan(tmp_path, OVERRIDES, "/elsewhere/run")
        assert (job.action, job.checkpoint) == ("resume", Path("/elsewhere/run"))

    def test_failed_attempt_without_checkpoint_is_filed_away(self, tmp_path):
        for name in ("metrics.jsonl", "error.txt"):
            (tmp_path / name).write_text(name)
        (tmp_path / "wandb" / "offline-run-x").mkdir(parents=True)
        for attempt in ("000", "001"):
            job = jobs.plan(tmp_path, OVERRIDES, None)
            assert job.action == "fresh"
            jobs.prepare(job, OVERRIDES)
            filed = sorted(p.name for p in (tmp_path / "attempts" / attempt).iterdir())
            assert filed == ["error.txt", "metrics.jsonl", "wandb"]
            for name in ("metrics.jsonl", "error.txt"):
                (tmp_path / name).write_text(name)
            (tmp_path / "wandb").mkdir()
        assert not (tmp_path / "tokens").exists()

    def test_another_job_in_the_folder_is_refused(self, tmp_path):
        jobs.prepare(jobs.plan(tmp_path, OVERRIDES, None), OVERRIDES)
        (tmp_path / "summary.json").write_text("{}")
        with pytest.raises(jobs.JobMismatchError, match="hydra.sweep.dir"):
            jobs.plan(tmp_path, ["sweep=ppl_alpha", "shaper.ppl.alpha=0.02", "seed=0"], None)

    def test_neutral_overrides_do_not_change_a_job(self, tmp_path):
        jobs.prepare(jobs.plan(tmp_path, OVERRIDES, None), OVERRIDES)
        (tmp_path / "summary.json").write_text("{}")
        rerun = list(reversed(OVERRIDES)) + ["launcher=parallel", "trainer.num_threads=2", "logger.mode=offline",
                                             "hydra.launcher.n_jobs=4"]
        assert jobs.plan(tmp_path, rerun, None).action == "skip"

    def test_record_error_keeps_the_traceback(self, tmp_path):
        try:
            raise ValueError("alpha must be >= 0")
        except ValueError:
            path = jobs.record_error(tmp_path, OVERRIDES)
        text = path.read_text()
        assert path == tmp_path / "error.txt"
        assert "shaper.ppl.alpha=0.01" in text and "Traceback" in text and "ValueError: alpha must be >= 0" in text
