"""A warm-start that does not reach its target logs its progress and says that it gave up."""
from __future__ import annotations

import logging

from rlvr_exp.answers import BoxedAnswer
from rlvr_exp.models.warmstart import sft_warmstart
from rlvr_exp.tasks.base import Problem


def test_unreached_target_logs_progress_and_gives_up(tiny_model, char_tokenizer, caplog) -> None:
    import copy

    model = copy.deepcopy(tiny_model)
    problems = [Problem(question=f"{i}*{i}=", answer=str(i * i)) for i in range(8)]
    with caplog.at_level(logging.INFO, logger="rlvr_exp.models.warmstart"):
        meta = sft_warmstart(model, char_tokenizer, problems, BoxedAnswer(), batch_size=4, target_accuracy=1.01, check_every=2,
                             check_problems=4, max_new_tokens=4, max_steps=4)
    assert meta["steps"] == 4
    progress = [r for r in caplog.records if "warm-start step" in r.getMessage()]
    assert [r.getMessage().split(":")[0] for r in progress] == ["warm-start step 2/4", "warm-start step 4/4"]
    gave_up = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(gave_up) == 1 and "gave up after 4 steps" in gave_up[0].getMessage()
    assert "below its target 1.010" in gave_up[0].getMessage()


def test_a_warm_start_that_gave_up_is_not_cached(tmp_path) -> None:
    """The cache key names the policy its settings produce; a give-up (max_steps here, max_seconds on
    a busy machine) is not that policy, so it must not be cached for the next run to load."""
    from rlvr_exp.models.tiny import TinyQwen2
    from rlvr_exp.tasks.arithmetic import ArithmeticTask

    task = ArithmeticTask(max_operand=4, num_train=20, num_val=5)
    small = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, cache_dir=str(tmp_path))
    settings = dict(batch_size=4, check_every=2, check_problems=4, max_new_tokens=4, max_steps=2)

    gave_up = TinyQwen2(**small, warmstart={**settings, "target_accuracy": 1.01})
    gave_up.load(task)
    assert not (tmp_path / "tiny_warmstart" / gave_up.cache_key(task)).exists()

    reached = TinyQwen2(**small, warmstart={**settings, "target_accuracy": 0.0})
    reached.load(task)
    assert (tmp_path / "tiny_warmstart" / reached.cache_key(task) / "meta.json").exists()
