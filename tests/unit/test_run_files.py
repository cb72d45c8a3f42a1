"""The run folder is one contract: its file names and the per-token columns are spelled only in
rlvr_exp/run_files.py, and the token record writes exactly those columns."""
from __future__ import annotations

import ast
from pathlib import Path

import torch

from rlvr_exp import run_files as rf
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.logging.token_dump import token_table
from rlvr_exp.tasks.base import Problem

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
    assert table.column("logppl").to_pylist() == [2.0, 2.0, 2.0]  # -(-1 - 3) / 2 for sample 0; 2 for sample 1
    assert rf.token_file(Path("run"), 4) == Path("run/tokens/step_000004.parquet")
    assert rf.token_file(Path("run"), 4, shard=1) == Path("run/tokens/step_000004.rank_1.parquet")
