"""Defaults are stated once: every value an option YAML sets for a constructor parameter that has a
Python default must equal that default, unless the option names it below as the point of the
option (``DELIBERATE``). So a default changed on one side only (drift) fails here.

Covered: every option file of every component group (experiment, sweep and launcher files are
deltas by design and are skipped), each node with a ``_target_`` inside it (the trainer's config
dataclass, the stage detector, schedules), options that extend another option through their
defaults list (``model/qwen2_5_7b`` extends ``model/hf``), and nested nodes that a constructor
forwards to a function (``model.warmstart`` -> ``sft_warmstart``). Interpolated values
(``${oc.env:...}``) depend on the environment and mandatory ones (``???``) have none: neither is
compared. Keys that are not constructor parameters (``schedule``, which ``build.py`` pops) are not
defaults and are skipped.
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"
DELTA_GROUPS = {"experiment", "sweep", "launcher"}

# option file -> the keys whose value differs from the constructor's default on purpose.
DELIBERATE: dict[str, set[str]] = {
    "algo/dr_grpo.yaml": {"scale_advantages", "eps_high", "loss_agg"},   # Dr. GRPO, not the paper's baseline
    "algo/grpo_kl.yaml": {"eps_high", "loss_agg", "kl_coef"},            # classic GRPO
    "analysis/off.yaml": {"enabled"},
    "model/qwen2_5_7b.yaml": {"gradient_checkpointing"},
    "model/qwen2_5_math_7b.yaml": {"gradient_checkpointing"},
    "stage/window.yaml": {"schedule.end"},                               # the released 200 < step < 300
    "trainer/pretrained.yaml": {"prompts_per_step", "prompts_per_minibatch", "samples_per_microbatch",  # real models
                                "max_prompt_tokens", "max_response_tokens", "lr", "warmup_steps", "lr_schedule",
                                "weight_decay", "max_sampling_rounds", "val_every", "val_max_problems",
                                "score_rows_per_pass", "dump_samples"},
}
# (target, key) of nested nodes without a _target_ that the target forwards to a function, and
# the keys of such a node that the target itself consumes.
FORWARDED: dict[tuple[str, str], tuple[str, set[str]]] = {
    ("rlvr_exp.models.tiny.TinyQwen2", "warmstart"): ("rlvr_exp.models.warmstart.sft_warmstart", {"enabled", "init_from"}),
}


def option_files() -> list[Path]:
    return [p for p in sorted(CONF.rglob("*.yaml"))
            if p.parent != CONF and p.relative_to(CONF).parts[0] not in DELTA_GROUPS]


def load_option(path: Path) -> tuple[DictConfig, DictConfig]:
    """(the file's own node, the node merged over the same-group options its defaults list names)."""
    own = OmegaConf.load(path)
    merged = OmegaConf.create()
    for entry in own.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            merged = OmegaConf.merge(merged, load_option(path.parent / f"{entry}.yaml")[1])
    own = OmegaConf.masked_copy(own, [k for k in own if k != "defaults"])
    return own, OmegaConf.merge(merged, own)


def defaults_of(target: Callable[..., Any]) -> dict[str, Any]:
    """Parameter -> default of a class's constructor, a dataclass or a function."""
    if dataclasses.is_dataclass(target):
        return {f.name: f.default for f in dataclasses.fields(target) if f.default is not dataclasses.MISSING}
    return {name: p.default for name, p in inspect.signature(target).parameters.items()
            if p.default is not inspect.Parameter.empty}


def plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value)
    return list(value) if isinstance(value, tuple) else value


def restated(own: DictConfig, merged: DictConfig, prefix: str = "") -> Iterator[tuple[str, str, Any, Any]]:
    """(key path, target, YAML value, Python default) for every default the file itself restates."""
    target_name = merged.get("_target_")
    defaults = defaults_of(get_object(target_name)) if target_name else {}
    for key in own:
        if key == "_target_" or OmegaConf.is_interpolation(own, key) or OmegaConf.is_missing(own, key):
            continue
        value, path = own[key], f"{prefix}{key}"
        if isinstance(value, DictConfig):
            if "_target_" in merged[key]:
                yield from restated(value, merged[key], f"{path}.")
            elif (target_name, key) in FORWARDED:
                fn, consumed = FORWARDED[(target_name, key)]
                fn_defaults = defaults_of(get_object(fn))
                for sub in value:
                    if sub not in consumed:
                        assert sub in fn_defaults, f"{path}.{sub} is not a parameter of {fn}"
                        yield f"{path}.{sub}", fn, plain(value[sub]), fn_defaults[sub]
            continue
        if key in defaults:
            yield path, target_name, plain(value), plain(defaults[key])


CASES = [(p, *case) for p in option_files() for case in restated(*load_option(p))]


def test_the_walk_finds_the_nodes_it_claims():
    seen = {(p.relative_to(CONF).as_posix(), key) for p, key, *_ in CASES}
    for expected in [("trainer/default.yaml", "lr"), ("stage/detector/default.yaml", "window"),
                     ("model/tiny.yaml", "warmstart.max_seconds"), ("algo/grpo.yaml", "eps_high"),
                     ("model/qwen2_5_7b.yaml", "dtype"), ("stage/window.yaml", "schedule.end")]:
        assert expected in seen
    assert len(CASES) > 100


@pytest.mark.parametrize(("path", "key", "target", "value", "default"), CASES,
                         ids=[f"{p.relative_to(CONF).as_posix()}:{k}" for p, k, *_ in CASES])
def test_yaml_restates_the_python_default(path, key, target, value, default):
    name = path.relative_to(CONF).as_posix()
    if key in DELIBERATE.get(name, set()):
        assert value != default, f"{name}: {key} equals {target}'s default {default!r}; drop it from DELIBERATE"
    else:
        assert value == default, (f"{name}: {key}: {value!r} in YAML but {default!r} in {target}; keep one value "
                                  "(or list the key in DELIBERATE when the option exists to change it)")


def test_deliberate_entries_exist():
    seen = {(p.relative_to(CONF).as_posix(), key) for p, key, *_ in CASES}
    for name, keys in DELIBERATE.items():
        for key in keys:
            assert (name, key) in seen, f"DELIBERATE names {name}:{key}, which no longer restates a default"
