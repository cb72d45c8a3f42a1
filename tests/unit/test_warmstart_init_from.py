"""``model.warmstart.init_from``: a warm-start that continues from a parent warm-start (the testbed's
chain-arithmetic policy starts from the two-operand policy). The parent is cached under its own key,
the child's key includes the parent's, and nothing is cached on top of a parent that gave up."""
from __future__ import annotations

import pytest
import torch

from rlvr_exp.build import make
from rlvr_exp.config import ConfigError
from rlvr_exp.models.tiny import TinyQwen2
from rlvr_exp.tasks.arithmetic import ArithmeticTask
from rlvr_exp.tasks.chain_arithmetic import ChainArithmeticTask
from tests.conftest import compose

SMALL = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
FAST = dict(batch_size=4, check_every=2, check_problems=4, max_new_tokens=4, max_steps=2)


def parent(cache: str, **warmstart) -> TinyQwen2:
    return TinyQwen2(**SMALL, cache_dir=cache, warmstart={**FAST, "target_accuracy": 0.0, **warmstart})


def child(cache: str, init_from: dict | None, **warmstart) -> TinyQwen2:
    ws = {**FAST, "target_accuracy": 0.0, **warmstart, **({"init_from": init_from} if init_from else {})}
    return TinyQwen2(**SMALL, cache_dir=cache, warmstart=ws)


def pair_tasks() -> tuple[ArithmeticTask, ChainArithmeticTask]:
    return (ArithmeticTask(max_operand=4, num_train=20, num_val=5),
            ChainArithmeticTask(min_operands=2, max_operands=3, max_first_operand=9, num_train=20, num_val=4))


def test_the_child_continues_from_the_parents_cached_weights(tmp_path):
    """With lr 0 the child's SFT leaves the weights where they start: exactly the parent's."""
    up, down = pair_tasks()
    dad = parent(str(tmp_path / "elsewhere"))  # the child caches its parent in its own cache_dir
    kid = child(str(tmp_path), {"model": dad, "task": up}, lr=0.0)
    kid_model, _ = kid.load(down)
    dad_folder = TinyQwen2(**SMALL, cache_dir=str(tmp_path), warmstart=dad.warmstart).cache_folder(up)
    assert (dad_folder / "meta.json").exists() and (kid.cache_folder(down) / "meta.json").exists()
    dad_model, _ = dad.load(up)  # from the cache now
    for (name, a), (_, b) in zip(dad_model.state_dict().items(), kid_model.state_dict().items()):
        assert torch.equal(a, b), name
    fresh, _ = child(str(tmp_path / "fresh"), None, lr=0.0).load(down)
    assert not torch.equal(fresh.state_dict()["lm_head.weight"], kid_model.state_dict()["lm_head.weight"])


def test_the_childs_key_names_its_parent(tmp_path):
    up, down = pair_tasks()
    base = child(str(tmp_path), {"model": parent(str(tmp_path)), "task": up}).cache_key(down)
    assert base == child(str(tmp_path), {"model": parent(str(tmp_path)), "task": up}).cache_key(down)
    assert base != child(str(tmp_path), None).cache_key(down)
    assert base != child(str(tmp_path), {"model": parent(str(tmp_path), lr=2e-3), "task": up}).cache_key(down)
    other_task = ArithmeticTask(max_operand=5, num_train=20, num_val=5)
    assert base != child(str(tmp_path), {"model": parent(str(tmp_path)), "task": other_task}).cache_key(down)
    # the parent's own key does not move with init_from: it is the cache of a run of that task
    assert parent(str(tmp_path)).cache_key(up) == TinyQwen2(**SMALL, warmstart={**FAST, "target_accuracy": 0.0}).cache_key(up)


def test_nothing_is_cached_on_a_parent_that_gave_up(tmp_path):
    up, down = pair_tasks()
    kid = child(str(tmp_path), {"model": parent(str(tmp_path), target_accuracy=1.01), "task": up})
    kid.load(down)
    assert not (kid.cache_folder(down)).exists()
    assert not (tmp_path / "tiny_warmstart").exists() or not any((tmp_path / "tiny_warmstart").iterdir())


@pytest.mark.parametrize(("init_from", "says"), [
    ({"task": ArithmeticTask(num_train=20, num_val=5)}, "tiny model option and a task option"),
    ({"model": TinyQwen2(**{**SMALL, "hidden_size": 64}), "task": ArithmeticTask(num_train=20, num_val=5)},
     "architecture"),
    ({"model": TinyQwen2(**SMALL, init_seed=3), "task": ArithmeticTask(num_train=20, num_val=5)}, "init_seed"),
    ("arithmetic", "tiny model option and a task option"),
])
def test_a_wrong_parent_is_refused_at_construction(init_from, says):
    with pytest.raises(ValueError, match=says):
        TinyQwen2(**SMALL, warmstart={"init_from": init_from})


def test_the_testbed_continues_from_the_default_runs_warm_start(tmp_path):
    testbed = make("model", compose(["experiment=testbed", f"model.cache_dir={tmp_path}"]).model)
    default_cfg = compose([f"model.cache_dir={tmp_path}"])
    default, default_task = make("model", default_cfg.model), make("task", default_cfg.task)
    dad, dad_task = testbed.parent
    assert dad.cache_key(dad_task) == default.cache_key(default_task)  # one cache for both runs
    assert dad.cache_dir == str(tmp_path)


def test_a_testbed_with_another_architecture_fails_before_any_model_loads():
    cfg = compose(["experiment=testbed", "model.hidden_size=64"])
    with pytest.raises(ConfigError, match="init_from.model must have this model's architecture"):
        make("model", cfg.model)
