"""The run folder is one contract: its file names and the per-token columns are spelled only in
rlvr_exp/run_files.py, and the token record writes exactly those columns; ``delta_logp`` is the
update's log-prob change, checked on a one-bias model by hand and against two independent passes."""
from __future__ import annotations

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import torch

from rlvr_exp import run_files as rf
from rlvr_exp.algos.logprobs import LogProbSpec, forward_response, score_batch
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.collect import build_batch
from rlvr_exp.logging.token_dump import dump_tokens, token_table, update_shift
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import PromptEncoder

SPEC = LogProbSpec(1.0, 0)

PACKAGE = Path(rf.__file__).resolve().parent
#: Names that mean a run's file wherever they appear (generic words such as "analysis" or
#: "policy", which also name config groups and state keys, are left out).
FILE_NAMES = {rf.METRICS, rf.SUMMARY, rf.CONFIG, rf.CHOICES, rf.JOB, rf.ERROR, rf.CHECKPOINT_STATE,
              rf.CHECKPOINTS, rf.HYDRA_OVERRIDES, rf.WANDB_SENT}


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (prose may name the files)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def test_file_names_are_spelled_only_in_run_files():
    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "run_files.py":
            continue
        tree = ast.parse(path.read_text())
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                if node.value in FILE_NAMES:
                    spelled.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.value!r}")
    assert not spelled, "import the name from rlvr_exp.run_files:\n" + "\n".join(spelled)


def test_token_record_writes_the_contract_columns():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    batch = RolloutBatch(
        prompt_ids=torch.zeros(2, 1, dtype=torch.long), prompt_mask=torch.ones(2, 1, dtype=torch.bool),
        response_ids=torch.tensor([[5, 6, 0], [7, 0, 0]]), response_mask=mask,
        rewards=torch.tensor([1.0, -1.0]), correct=torch.tensor([True, False]), group_ids=torch.tensor([0, 0]),
        truncated=torch.tensor([False, False]), problems=[Problem("1+1=", "2")] * 2, texts=["a", "b"])
    batch.logp_old = torch.tensor([[-1.0, -3.0, 0.0], [-2.0, 0.0, 0.0]])
    batch.entropy = torch.ones(2, 3)
    batch.advantages_raw = batch.advantages = mask.float()
    batch.loss_mask = mask
    table = token_table(batch, step=4)
    assert tuple(table.column_names) == rf.TOKEN_COLUMNS
    assert table.column("delta_logp").null_count == 3  # not computed: a null column, the schema unchanged
    shifted = token_table(batch, step=4, delta_logp=torch.tensor([[0.5, -0.25, 0.0], [1.0, 0.0, 0.0]]))
    assert shifted.column("delta_logp").to_pylist() == [0.5, -0.25, 1.0]
    assert table.column("logppl").to_pylist() == [2.0, 2.0, 2.0]  # -(-1 - 3) / 2 for sample 0; 2 for sample 1
    assert rf.token_file(Path("run"), 4) == Path("run/tokens/step_000004.parquet")
    assert rf.token_file(Path("run"), 4, shard=1) == Path("run/tokens/step_000004.rank_1.parquet")


class BiasLM(torch.nn.Module):
    """A 2-token "language model" whose logits are one bias vector b at every position."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(2))

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep, use_cache):
        return SimpleNamespace(logits=self.bias.expand(input_ids.shape[0], logits_to_keep, 2))


def bias_batch() -> RolloutBatch:
    """One response, tokens [0, 1], after a one-token prompt."""
    return RolloutBatch(
        prompt_ids=torch.zeros(1, 1, dtype=torch.long), prompt_mask=torch.ones(1, 1, dtype=torch.bool),
        response_ids=torch.tensor([[0, 1]]), response_mask=torch.ones(1, 2, dtype=torch.bool),
        group_ids=torch.zeros(1, dtype=torch.long), truncated=torch.zeros(1, dtype=torch.bool),
        problems=[Problem("?", "0")], texts=["01"])


def test_update_shift_hand_computed_on_a_one_bias_model():
    model, batch = BiasLM(), bias_batch()
    batch.logp_old, _ = score_batch(model, batch, 1, False, SPEC)
    assert batch.logp_old.tolist() == [[pytest.approx(math.log(0.5))] * 2]  # b = (0, 0): p = (1/2, 1/2)
    # one SGD step (lr 2) on -log p(token 0): grad_b = softmax(b) - onehot(0) = (-1/2, +1/2), so b = (1, -1),
    # p(0) = 1 / (1 + e^-2) and p(1) = 1 / (1 + e^2); delta = log p_new - log(1/2) = log(2 / (1 + e^-+2))
    optimizer = torch.optim.SGD(model.parameters(), lr=2.0)
    (-torch.log_softmax(model.bias, -1)[0]).backward()
    optimizer.step()
    assert model.bias.tolist() == [1.0, -1.0]
    shift = update_shift(model, batch, None, 1, SPEC)
    assert shift.tolist() == [[pytest.approx(0.5662191695), pytest.approx(-1.4337808305)]]


def test_update_shift_is_the_difference_of_two_independent_passes(tiny_model, char_tokenizer, tmp_path):
    import copy

    model = copy.deepcopy(tiny_model)
    problems = [Problem("1+1=", "2"), Problem("3+4=", "7")]
    ids = [char_tokenizer(r, add_special_tokens=False)["input_ids"] for r in ("\\boxed{2}", "22", "\\boxed{7} ok", "9")]
    batch = build_batch(problems, ids, 2, PromptEncoder(char_tokenizer, False, 64), char_tokenizer, 32)
    batch.logp_old, batch.entropy = score_batch(model, batch, 4, True, SPEC)
    before = batch.logp_old.clone()
    logp, _ = forward_response(model.train(), batch, slice(0, batch.size), False, SPEC)
    (-(logp * batch.response_mask).sum()).backward()
    torch.optim.SGD(model.parameters(), lr=0.05).step()
    shift = update_shift(model, batch, 3, 2, SPEC)  # the first 3 responses, 2 rows per pass
    with torch.no_grad():  # an independent pass: one forward of the 3 rows, in eval mode
        after, _ = forward_response(model.eval(), batch, slice(0, 3), False, SPEC)
    mask = batch.response_mask[:3]
    assert shift.shape == (3, batch.response_ids.shape[1]) and (shift[~mask] == 0).all()
    torch.testing.assert_close(shift[mask], (after - before[:3])[mask], rtol=0, atol=1e-6)
    assert shift[mask].abs().min() > 0 and torch.equal(batch.logp_old, before)
    # the record holds it token by token, in the order of the other columns
    batch.rewards, batch.correct = torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([True, False, True, False])
    batch.advantages_raw = batch.advantages = batch.response_mask.float()
    batch.loss_mask = batch.response_mask
    table = pq.read_table(dump_tokens(tmp_path, batch, 7, max_samples=3, delta_logp=shift))
    assert table.num_rows == int(mask.sum())
    assert table.column("delta_logp").to_pylist() == pytest.approx(shift[mask].tolist(), abs=1e-7)
