"""Sweep arms against plain GRPO, paired by seed (rlvr_exp/analysis/paired.py): hand-computed
t-intervals, pairing by seed (not by order), and the plateau steps of the gated arms."""
from __future__ import annotations

import json
import math

import pytest

from rlvr_exp.analysis.compare import compare_runs
from rlvr_exp.analysis.paired import paired_interval, t975
from rlvr_exp.analysis.runs import AnalysisInputError, expand
from rlvr_exp.analyze import main as analyze


def test_paired_interval_by_hand():
    # d = 0.1, 0.2, 0.3: mean 0.2, std 0.1, half = 4.303 * 0.1 / sqrt(3) = 0.248434
    mean, std, lo, hi = paired_interval([0.1, 0.2, 0.3])
    assert (mean, std) == pytest.approx((0.2, 0.1))
    assert (lo, hi) == pytest.approx((0.2 - 0.248434, 0.2 + 0.248434), abs=1e-6)
    # 5 pairs: d = 1, 2, 3, 4, 5: std sqrt(2.5) = 1.581139, half = 2.776 * 1.581139 / sqrt(5) = 2.776 * 0.7071068 = 1.9629285
    assert paired_interval([1, 2, 3, 4, 5])[2:] == pytest.approx((3 - 1.9629285, 3 + 1.9629285), abs=1e-6)
    one = paired_interval([0.4])
    assert one[0] == 0.4 and all(math.isnan(v) for v in one[1:])
    assert t975(4) == 2.776 and t975(100) == 1.960
    with pytest.raises(ValueError, match="at least 2 pairs"):
        t975(0)


def write(path, seed, choices, final, entropy, plateau=None, job_type=None):
    path.mkdir(parents=True)
    rows = [{"step": 0, "val/accuracy": 0.1}, {"step": 1, "entropy/mean": 1.0}, {"step": 10, "entropy/mean": 0.5}]
    if plateau is not None:
        rows[2]["stage/plateau_step"] = plateau
        rows[1]["shaper/position/active"], rows[2]["shaper/position/active"] = 0.0, 1.0
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (path / "choices.json").write_text(json.dumps(choices))
    (path / "config_resolved.yaml").write_text(f"seed: {seed}\n" + (f"logger:\n  job_type: {job_type}\n" if job_type else ""))
    (path / "summary.json").write_text(json.dumps({"val/accuracy_final": final, "entropy/mean_final": entropy}))


def test_arms_are_paired_by_seed_not_by_order(tmp_path):
    grpo, pos = {"shaper": "none", "stage": "always"}, {"shaper": "position", "stage": "plateau"}
    sweep = tmp_path / "sweep"
    write(sweep / "0", 0, grpo, 0.50, 0.10)
    write(sweep / "1", 1, grpo, 0.70, 0.20)
    write(sweep / "2", 2, grpo, 0.60, 0.30)
    # the position arm's jobs in another seed order; seed 2 never plateaued
    write(sweep / "3", 2, pos, 0.60, 0.30)
    write(sweep / "4", 0, pos, 0.60, 0.12, plateau=4)
    write(sweep / "5", 1, pos, 0.90, 0.26, plateau=6)
    compare_runs(expand([sweep]), tmp_path / "out")
    md = (tmp_path / "out" / "comparison.md").read_text()
    # accuracy d = +0.1, +0.2, 0: mean 0.1, std 0.1, half 0.248434 -> [-0.148, +0.348]
    # entropy d = +0.02, +0.06, 0: mean 0.026667, std 0.030551, half 4.303*0.030551/sqrt(3) = 0.075898
    assert ("| position @plateau | +0.100 ± 0.100 [-0.148, +0.348] (3) | +0.027 ± 0.031 [-0.049, +0.103] (3) "
            "| 4 (position on 1 steps), 6 (position on 1 steps), none |") in md
    assert "| none @always | +0.000 ± 0.000 [+0.000, +0.000] (3) | +0.000 ± 0.000 [+0.000, +0.000] (3) | none, none, none |" in md


def test_no_baseline_arm_no_paired_table(tmp_path):
    write(tmp_path / "a", 0, {"shaper": "ppl", "stage": "always"}, 0.5, 0.1)
    compare_runs([tmp_path / "a"], tmp_path / "out")
    assert "paired by seed" not in (tmp_path / "out" / "comparison.md").read_text()


def controls_sweep(root):
    """ppl vs its control ppl_high (both shaper=ppl: only job_type tells them apart), and grpo."""
    ppl = {"shaper": "ppl", "stage": "always"}
    for n, (seed, job, final, entropy) in enumerate([(0, "ppl", 0.60, 0.10), (1, "ppl", 0.80, 0.30),
                                                       (1, "ppl_high", 0.50, 0.20), (0, "ppl_high", 0.55, 0.15),
                                                       (0, "grpo", 0.5, 0.1)]):
        write(root / str(n), seed, ppl if job != "grpo" else {"shaper": "none", "stage": "always"}, final, entropy,
              job_type=job)
        (root / str(n) / ".hydra").mkdir()
        (root / str(n) / ".hydra" / "overrides.yaml").write_text(f"- experiment=[testbed,{job}]\n- seed={seed}\n")


def test_method_minus_control_pairs_by_seed_and_job_type(tmp_path):
    controls_sweep(tmp_path / "sweep")
    assert analyze([str(tmp_path / "sweep"), "--no-wandb", "--out", str(tmp_path / "out"), "--pair", "ppl:ppl_high"]) == 0
    md = (tmp_path / "out" / "comparison.md").read_text()
    # seed 0: 0.60 - 0.55 = +0.05, seed 1: 0.80 - 0.50 = +0.30: mean 0.175, std 0.25/sqrt(2) = 0.176777,
    # half 12.706 * 0.176777 / sqrt(2) = 1.588250 -> [-1.413, +1.763]
    # entropy: -0.05, +0.10: mean 0.025, std 0.15/sqrt(2) = 0.106066, half 12.706 * 0.075 = 0.95295 -> [-0.928, +0.978]
    assert ("| `ppl` minus `ppl_high` | +0.175 ± 0.177 [-1.413, +1.763] (2) | +0.025 ± 0.106 [-0.928, +0.978] (2) |"
            in md)
    assert "Each method minus its control" in md


def test_pair_that_names_no_arm_or_bad_syntax_is_refused(tmp_path, capsys):
    controls_sweep(tmp_path / "sweep")
    assert analyze([str(tmp_path / "sweep"), "--no-wandb", "--out", str(tmp_path / "out"), "--pair", "ppl:kl_cov"]) == 2
    err = capsys.readouterr().err
    assert "'kl_cov' names no arm" in err and "grpo, ppl, ppl_high" in err
    assert not (tmp_path / "out").exists()      # refused before anything is written
    with pytest.raises(SystemExit) as exc:
        analyze([str(tmp_path / "sweep"), "--pair", "ppl-ppl_high"])
    assert exc.value.code == 2 and "is not METHOD:CONTROL" in capsys.readouterr().err


def test_pair_that_names_two_arms_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    write(sweep / "0", 0, {"shaper": "ppl", "stage": "always"}, 0.5, 0.1, job_type="ppl")
    write(sweep / "1", 0, {"shaper": "ppl", "stage": "plateau"}, 0.5, 0.1, job_type="ppl")
    write(sweep / "2", 0, {"shaper": "none", "stage": "always"}, 0.5, 0.1, job_type="grpo")
    with pytest.raises(AnalysisInputError, match="'ppl' names 2 arms"):
        compare_runs(expand([sweep]), tmp_path / "out", [("ppl", "grpo")])
