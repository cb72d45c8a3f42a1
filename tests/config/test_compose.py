"""Every option of every config group composes with the real conf/train.yaml, resolves, and its
cheap parts instantiate (everything ``build.py`` checks before a model loads); every experiment
preset sets what it claims; every launcher selects its Hydra launcher with the values it claims."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rlvr_exp.build import ConfigError, build_shapers, make
from rlvr_exp.stages.schedules import AlwaysSchedule, PlateauSchedule, WindowSchedule

CONF = Path(__file__).resolve().parents[2] / "conf"
# Git-ignored, per-machine files that live beside the options but are not options themselves.
NOT_OPTIONS = {("launcher", "local_secrets")}


def _data_files() -> tuple[str, str]:
    """A tiny verl-schema parquet and a JSONL file made here: tasks check that their files exist
    when built (and read them lazily)."""
    folder = Path(tempfile.mkdtemp(prefix="rlvr_compose_"))
    pq.write_table(pa.table({"prompt": [[{"role": "user", "content": "1+1?"}]],
                             "reward_model": [{"style": "rule", "ground_truth": "2"}]}), folder / "verl.parquet")
    (folder / "rows.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    return str(folder / "verl.parquet"), str(folder / "rows.jsonl")


VERL_FILE, ROWS_FILE = _data_files()
# Options with mandatory values or files: what they need to instantiate.
DATA = [f"task.train_path={VERL_FILE}", f"task.val_path={VERL_FILE}"]
BENCH = [f"task.val.{name}.path={VERL_FILE}" for name in ("aime24", "aime25", "amc23", "math500")]  # the shared files' stand-ins
NEEDS = {("task", "parquet"): DATA, ("task", "files"): [f"task.train.path={ROWS_FILE}", f"task.val.val.path={ROWS_FILE}"],
         ("task", "benchmarks"): [f"task.train.path={ROWS_FILE}", *BENCH], ("task", "still3"): BENCH,
         ("task", "dapo_math"): BENCH, ("task", "math_lighteval"): [f"task.val.math500.path={VERL_FILE}"],
         ("experiment", "paper_qwen2.5_7b"): BENCH, ("experiment", "paper_qwen2.5_math_7b"): BENCH}


def group_options(conf: Path = CONF) -> list[tuple[str, str]]:
    """(group, option) for every YAML under conf/ except train.yaml, nested groups included."""
    out = []
    for path in sorted(conf.rglob("*.yaml")):
        group = path.parent.relative_to(conf).as_posix()
        if group != "." and (group, path.stem) not in NOT_OPTIONS:
            out.append((group, path.stem))
    return out


@contextlib.contextmanager
def hydra_job(overrides: list[str], conf: Path = CONF):
    """The composed config (hydra node included) with HydraConfig set, as inside a job, so that
    ``${hydra:...}`` interpolations resolve; HydraConfig is restored afterwards."""
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        yield cfg
    finally:
        HydraConfig.instance().cfg = saved


def job_config(cfg: DictConfig) -> DictConfig:
    """The job's config: the composed config without its ``hydra`` node."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def build_cheap(cfg: DictConfig) -> dict:
    """Instantiate what build.py instantiates before loading a model, through the same helpers."""
    return {
        "trainer": make("trainer", cfg.trainer), "algo": make("algo", cfg.algo),
        "shapers": build_shapers(cfg.shaper, cfg.stage), "detector": make("stage.detector", cfg.stage.detector),
        "task": make("task", cfg.task), "reward": make("reward", cfg.reward), "rollout": make("rollout", cfg.rollout),
        "logger": make("logger", cfg.logger), "analysis": make("analysis", cfg.analysis),
    }


def schedules(cfg: DictConfig) -> list[tuple[str, object]]:
    return [(name, schedule) for name, _, schedule in build_shapers(cfg.shaper, cfg.stage).entries]


def test_every_group_has_options():
    groups = {g for g, _ in group_options()}
    assert {"model", "task", "reward", "rollout", "algo", "shaper", "stage", "stage/detector", "logger",
            "analysis", "trainer", "launcher", "experiment", "sweep"} <= groups


@pytest.mark.parametrize(("group", "option"), group_options(), ids=lambda v: v)
def test_option_composes_resolves_and_instantiates(group, option):
    with hydra_job([f"{group}={option}", *NEEDS.get((group, option), [])]) as cfg:
        assert cfg.hydra.runtime.choices[group] == option
        if group == "shaper":
            assert list(cfg.shaper) == [option]
        OmegaConf.to_container(job_config(cfg), resolve=True)  # every interpolation resolves
        if (group, option) == ("rollout", "vllm") and importlib.util.find_spec("vllm") is None:
            # an optional extra: without it the config check says how to get it, before any model loads
            with pytest.raises(ConfigError, match=r"rollout: .*needs vLLM.*pip install -e \"\.\[vllm\]\""):
                build_cheap(cfg)
            return
        parts = build_cheap(cfg)
    assert len(parts["shapers"].entries) >= 1


@pytest.mark.parametrize("folder", ["experiment", "sweep", "launcher"])
def test_global_files_declare_their_package(folder):
    for path in sorted((CONF / folder).glob("*.yaml")):
        assert path.read_text().splitlines()[0] == "# @package _global_", path


# ------------------------------------------------------------------ experiments
STRATEGIES = {  # experiment -> [(shaper, schedule type)] in stack order
    "grpo": [("none", AlwaysSchedule)],
    "ppl": [("ppl", AlwaysSchedule)],
    "ppl_high": [("ppl_high", AlwaysSchedule)],
    "position_plateau": [("position", PlateauSchedule)],
    "position_front_plateau": [("position_front", PlateauSchedule)],
    "position_window": [("position", WindowSchedule)],
    "ppl_position": [("ppl", AlwaysSchedule), ("position", PlateauSchedule)],
    "positive_only": [("positive_only", AlwaysSchedule)],
    "negative_only": [("negative_only", AlwaysSchedule)],
    "high_entropy": [("high_entropy", AlwaysSchedule)],
    "clip_cov": [("clip_cov", AlwaysSchedule)],
    "kl_cov": [("kl_cov", AlwaysSchedule)],
}
SCALE_PRESETS = {"demo", "paper_qwen2.5_7b", "paper_qwen2.5_math_7b", "smollm2_demo", "testbed"}


def test_every_experiment_is_covered_below():
    assert {o for g, o in group_options() if g == "experiment"} == set(STRATEGIES) | SCALE_PRESETS


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_sets_its_stack_schedules_and_wandb_label(name):
    with hydra_job([f"experiment={name}"]) as cfg:
        got = [(n, type(s)) for n, s in schedules(cfg)]
        assert cfg.logger.job_type == name
    assert got == STRATEGIES[name]


def test_position_window_is_the_released_code_gate():
    with hydra_job(["experiment=position_window"]) as cfg:
        (_, window), = schedules(cfg)
    assert (window.start, window.end) == (201, 300)  # 200 < step < 300, steps 1-based


def test_demo_is_the_embedded_default():
    with hydra_job([]) as plain, hydra_job(["experiment=demo"]) as demo:
        assert OmegaConf.to_container(job_config(demo)) == OmegaConf.to_container(job_config(plain))
        assert {k: v for k, v in demo.hydra.runtime.choices.items() if k != "experiment"} == \
               {k: v for k, v in plain.hydra.runtime.choices.items() if k != "experiment"}


def test_smollm2_demo_is_the_papers_prompt_on_smollm2():
    with hydra_job(["experiment=smollm2_demo"]) as cfg:
        t, task = make("trainer", cfg.trainer), make("task", cfg.task)
        assert (cfg.hydra.runtime.choices.model, cfg.model.dtype) == ("smollm2_135m", "float32")
    assert task.val_problems()[0].question.endswith("\nPlease reason step by step, and put your final answer within \\boxed{}.")
    assert (t.prompts_per_step, t.samples_per_prompt, t.max_response_tokens, t.temperature) == (4, 4, 64, 0.7)


@pytest.mark.parametrize(("name", "model", "lengths"), [("paper_qwen2.5_7b", "Qwen/Qwen2.5-7B", (1024, 8192)),
                                                      ("paper_qwen2.5_math_7b", "Qwen/Qwen2.5-Math-7B", (1024, 3072))])
def test_paper_presets_hold_the_spec_hyperparameters(name, model, lengths):
    with hydra_job([f"experiment={name}", *BENCH]) as cfg:
        t = make("trainer", cfg.trainer)
        assert cfg.model.name_or_path == model
        assert (cfg.hydra.runtime.choices.algo, cfg.hydra.runtime.choices.task) == ("grpo", "still3")
        assert list(cfg.shaper) == ["none"]
        algo = (cfg.algo.eps_low, cfg.algo.eps_high, cfg.algo.loss_agg, cfg.algo.kl_coef)
        assert algo == (0.2, 0.28, "token-mean", 0.0)
    assert (t.lr, t.warmup_steps, t.weight_decay, t.grad_clip) == (1.0e-6, 10, 0.1, 1.0)
    assert (t.prompts_per_step, t.samples_per_prompt, t.prompts_per_minibatch, t.updates_per_step) == (512, 8, 32, 16)
    # Qwen2.5-Math-7B has 4096 positions (max_position_embeddings): the released 1024 + 8192 cannot run on it
    assert (t.max_prompt_tokens, t.max_response_tokens) == lengths
    assert (t.temperature, t.top_p, t.val_temperature, t.val_top_p) == (1.0, 1.0, 0.6, 0.95)
    assert t.val_samples_per_problem == 1  # the authors' AIME files hold each problem 8 times: avg@8
    assert (t.val_every, t.steps, t.overlong_buffer_tokens, t.dynamic_sampling) == (10, 600, 0, True)
    assert t.mask_truncated is False  # the released code keeps truncated responses' advantages (see the preset)


@pytest.mark.parametrize("name", ["paper_qwen2.5_7b", "paper_qwen2.5_math_7b"])
def test_paper_presets_train_on_still3_with_the_paper_prompt(name):
    with hydra_job([f"experiment={name}", *BENCH]) as cfg:
        task = make("task", cfg.task)
    assert (task.train.hub, task.train.question_field) == ("RUC-AIBOX/STILL-3-RL-90K", "prompt")
    assert task.template.endswith("put your final answer within \\boxed{}.")
    assert sorted(task.val) == ["aime24", "aime25", "amc23", "math500"]


def test_paper_preset_stacks_with_a_strategy():
    with hydra_job(["experiment=[paper_qwen2.5_math_7b,ppl_position]", *BENCH]) as cfg:
        assert cfg.model.name_or_path == "Qwen/Qwen2.5-Math-7B" and cfg.trainer.prompts_per_step == 512
        assert cfg.logger.job_type == "ppl_position"
        assert [(n, type(s)) for n, s in schedules(cfg)] == STRATEGIES["ppl_position"]


# -------------------------------------------------------------------- launchers
def test_local_launcher_is_the_default():
    with hydra_job([]) as cfg:
        assert cfg.hydra.runtime.choices.launcher == "local"
        assert cfg.hydra.launcher._target_.endswith("BasicLauncher")


def test_parallel_launcher_runs_loky_jobs_with_a_thread_budget():
    with hydra_job(["launcher=parallel"]) as cfg:
        assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
        assert (cfg.hydra.launcher.n_jobs, cfg.hydra.launcher.backend) == (2, "loky")
        assert (cfg.trainer.num_threads, cfg.logger.progress_bar) == (1, False)
    with hydra_job(["launcher=parallel", "hydra.launcher.n_jobs=4", "trainer.num_threads=2"]) as cfg:
        assert (cfg.hydra.launcher.n_jobs, cfg.trainer.num_threads) == (4, 2)


SLURM_ENV = {"RLVR_SLURM_PARTITION": "part-x", "RLVR_SLURM_ACCOUNT": "acct-y", "RLVR_SLURM_GPUS_PER_NODE": "4",
             "RLVR_SLURM_CPUS_PER_TASK": "16", "RLVR_SLURM_MEM_GB": "200", "RLVR_SLURM_TIMEOUT_MIN": "600",
             "RLVR_SLURM_ARRAY_PARALLELISM": "3", "RLVR_SLURM_MAX_NUM_TIMEOUT": "5"}


@pytest.fixture
def no_slurm_env(monkeypatch):
    for key in SLURM_ENV:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_slurm_launcher_defaults_commit_no_site(no_slurm_env):
    with hydra_job(["launcher=slurm"]) as cfg:
        launcher = cfg.hydra.launcher
        assert launcher._target_.endswith("SlurmLauncher")
        assert (launcher.partition, launcher.account) == (None, None)
        assert (launcher.gpus_per_node, launcher.cpus_per_task, launcher.mem_gb) == (1, 8, 64)
        assert cfg.trainer.num_threads == 8 and cfg.logger.progress_bar is False


def test_slurm_launcher_reads_the_environment(no_slurm_env):
    for key, value in SLURM_ENV.items():
        no_slurm_env.setenv(key, value)
    with hydra_job(["launcher=slurm"]) as cfg:
        launcher = cfg.hydra.launcher
        got = {k: launcher[k] for k in ("partition", "account", "gpus_per_node", "cpus_per_task", "mem_gb",
                                         "timeout_min", "array_parallelism", "max_num_timeout")}
        assert cfg.trainer.num_threads == 16  # torch threads follow the CPUs granted
    assert got == {"partition": "part-x", "account": "acct-y", "gpus_per_node": 4, "cpus_per_task": 16,
                   "mem_gb": 200, "timeout_min": 600, "array_parallelism": 3, "max_num_timeout": 5}


def test_slurm_local_secrets_win_over_env_and_lose_to_the_command_line(no_slurm_env, tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "launcher" / "local_secrets.yaml").write_text(
        "# @package _global_\nhydra:\n  launcher:\n    partition: from-secrets\n    account: secret-acct\n")
    no_slurm_env.setenv("RLVR_SLURM_PARTITION", "from-env")
    with hydra_job(["launcher=slurm"], conf) as cfg:
        assert (cfg.hydra.launcher.partition, cfg.hydra.launcher.account) == ("from-secrets", "secret-acct")
    with hydra_job(["launcher=slurm", "hydra.launcher.partition=from-cli"], conf) as cfg:
        assert cfg.hydra.launcher.partition == "from-cli"
    with hydra_job(["launcher=local"], conf) as cfg:  # other launchers never read the secrets
        assert "partition" not in cfg.hydra.launcher


def test_local_secrets_are_git_ignored():
    assert "conf/launcher/local_secrets.yaml" in (CONF.parent / ".gitignore").read_text().splitlines()
