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
