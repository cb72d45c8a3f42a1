"""Live analysis metrics against hand-computed numbers; defects; media; the analysis config."""
from __future__ import annotations

import inspect
import math
import random
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rlvr_exp.analysis.defects import RepetitionRule, defect_metrics, is_repetitive, smallest_period
from rlvr_exp.analysis.live import StepMeter, linear_quantile, position_buckets
from rlvr_exp.analysis.media import build_media, entropy_html
from rlvr_exp.analysis.step import StepAnalysis
from rlvr_exp.answers import AnswerFormat, BoxedAnswer
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.tasks.base import Problem

GARBAGE = 1.0e6
CONF = Path(__file__).resolve().parents[2] / "conf"


def make_batch(values: list[list[float]], correct: list[bool], logp: list[list[float]] | None = None,
               texts: list[str] | None = None, pad: float = 0.0) -> RolloutBatch:
    """A batch whose responses have lengths len(values[i]); padding holds ``pad``."""
    b, t = len(values), max(map(len, values))
    mask = torch.tensor([[j < len(v) for j in range(t)] for v in values])

    def padded(rows: list[list[float]]) -> torch.Tensor:
        return torch.tensor([r + [pad] * (t - len(r)) for r in rows], dtype=torch.float32)

    return RolloutBatch(
        prompt_ids=torch.ones(b, 2, dtype=torch.long), prompt_mask=torch.ones(b, 2, dtype=torch.bool),
        response_ids=torch.where(mask, 5, 0), response_mask=mask, group_ids=torch.zeros(b, dtype=torch.long),
        truncated=torch.tensor([False] * b), problems=[Problem("1+1=", "2")] * b,
        texts=texts or ["\\boxed{2}"] * b, rewards=torch.tensor([1.0 if c else -1.0 for c in correct]),
        correct=torch.tensor(correct), entropy=padded(values),
        logp_old=padded(logp) if logp is not None else padded([[-1.0] * len(v) for v in values]),
    )


BOXED = BoxedAnswer()  # the arithmetic task's answer format

# Sample 0 (correct, L=2): H = [1, 3];  sample 1 (wrong, L=5): H = [0.5, 2, 2, 4, 0.5].
TWO = dict(values=[[1.0, 3.0], [0.5, 2.0, 2.0, 4.0, 0.5]], correct=[True, False],
           logp=[[-0.5, -1.5], [-1.0, -2.0, -3.0, -4.0, -5.0]])


def metrics(batch: RolloutBatch, answer_format: AnswerFormat | None = BOXED, **knobs) -> dict[str, float]:
    analysis = StepAnalysis(**knobs)
    analysis.bind_answer_format(answer_format)  # the arithmetic task's, as build.py binds it
    meter = analysis.batch_metrics(batch)
    meter.all_reduce()
    return meter.means()


def test_entropy_hand_computed():
    m = metrics(make_batch(**TWO))
    assert m["entropy/mean"] == pytest.approx(13 / 7)  # (1+3 + 0.5+2+2+4+0.5) / 7
    assert m["entropy/pos"] == pytest.approx(2.0)  # (1+3)/2
    assert m["entropy/neg"] == pytest.approx(1.8)  # 9/5
    # buckets ((t-1)*5)//L: sample 0 -> 0, 2 (5//2); sample 1 -> 0, 1, 2, 3, 4
    assert m["entropy/pos_bucket_0"] == pytest.approx(0.75)  # (1 + 0.5) / 2
    assert m["entropy/pos_bucket_1"] == pytest.approx(2.0)
    assert m["entropy/pos_bucket_2"] == pytest.approx(2.5)  # (3 + 2) / 2
    assert m["entropy/pos_bucket_3"] == pytest.approx(4.0)
    assert m["entropy/pos_bucket_4"] == pytest.approx(0.5)
    # sorted [0.5,0.5,1,2,2,3,4]; rank 0.8*6 = 4.8 -> tau = 2 + 0.8*(3-2) = 2.8; top {3, 4}
    assert m["entropy/top_share"] == pytest.approx(2 / 7)
    assert m["entropy/top_rel_position"] == pytest.approx((1 / 2 + 3 / 5) / 2)  # 0.55
    # logPPL: sample 0 -> 1.0, sample 1 -> 3.0; one per side, so every quantile is the value
    assert m["ppl/logppl_mean"] == pytest.approx(2.0)
    assert m["ppl/logppl_pos_mean"] == pytest.approx(1.0) and m["ppl/logppl_neg_mean"] == pytest.approx(3.0)
    for q in (10, 50, 90):
        assert m[f"ppl/logppl_pos_q{q}"] == pytest.approx(1.0)
        assert m[f"ppl/logppl_neg_q{q}"] == pytest.approx(3.0)
    assert m["train/response_len_mean"] == 3.5 and m["train/response_len_max"] == 5.0
    assert m["train/batch_responses"] == 2.0


@pytest.mark.parametrize("pad", [GARBAGE, -GARBAGE, math.inf, math.nan])
def test_padding_never_counted(pad):
    clean = metrics(make_batch(**TWO))
    dirty = metrics(make_batch(**TWO, pad=pad))
    assert dirty.keys() == clean.keys()
    for k, v in clean.items():
        assert dirty[k] == pytest.approx(v, nan_ok=True), k


def test_ties_make_top_share_differ_from_fraction():
    m = metrics(make_batch([[2.0, 2.0], [2.0, 2.0, 2.0]], [True, False]))
    assert m["entropy/top_share"] == 1.0  # tau = 2 and every token ties at it
    assert m["entropy/top_rel_position"] == pytest.approx((0 + 0.5 + 0 + 1 / 3 + 2 / 3) / 5)


def test_logppl_quantiles_hand_computed():
    # pos logPPL [1, 2, 4]: q10 rank 0.2 -> 1.2, q50 -> 2, q90 rank 1.8 -> 2 + 0.8*2 = 3.6
    # neg logPPL [3, 5]:    q10 rank 0.1 -> 3.2, q50 -> 4, q90 rank 0.9 -> 4.8
    logp = [[-1.0], [-2.0, -2.0], [-4.0, -4.0, -4.0], [-3.0, -3.0], [-5.0]]
    m = metrics(make_batch([[1.0] * len(r) for r in logp], [True, True, True, False, False], logp, pad=GARBAGE))
    expected = {"pos_q10": 1.2, "pos_q50": 2.0, "pos_q90": 3.6, "neg_q10": 3.2, "neg_q50": 4.0, "neg_q90": 4.8,
                "pos_mean": 7 / 3, "neg_mean": 4.0, "mean": 3.0}
    for k, v in expected.items():
        assert m[f"ppl/logppl_{k}"] == pytest.approx(v), k


def test_linear_quantile_matches_torch():
    x = torch.randn(101, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for q in (0.0, 0.1, 0.37, 0.5, 0.8, 1.0):
        assert linear_quantile(x, q) == pytest.approx(float(torch.quantile(x, q)))


def test_position_buckets_against_loop():
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 14, (9,), generator=g).tolist()
    batch = make_batch([[0.0] * n for n in lengths], [True] * 9)
    for n in (1, 3, 5, 7):
        got = position_buckets(batch, n)
        for i, length in enumerate(batch.response_len.tolist()):
            for t in range(1, length + 1):
                assert got[i, t - 1] == math.floor((t - 1) / length * n + 1e-9)


def test_empty_side_reports_nan_not_zero():
    m = metrics(make_batch([[1.0, 2.0]], [False]))
    assert math.isnan(m["entropy/pos"]) and math.isnan(m["ppl/logppl_pos_q50"])
    assert m["entropy/neg"] == pytest.approx(1.5)


def test_off_keeps_only_basic_metrics():
    batch = make_batch(**TWO)
    batch.loss_mask = batch.response_mask.clone()
    off = metrics(batch, enabled=False)
    assert set(off) == {"entropy/mean", "entropy/pos", "entropy/neg", "ppl/logppl_mean", "train/response_len_mean",
                        "train/response_len_max", "train/clipped_share", "train/batch_responses",
                        "train/loss_token_share"}
    on = metrics(batch)
    assert set(off) < set(on) and all(on[k] == off[k] for k in off)
    assert {"defect/no_boxed_share", "defect/repetition_share", "defect/truncated_share"} <= set(on)


# ---------------------------------------------------------------------------------- defects
RULE = RepetitionRule()


def test_defects_on_hand_made_texts():
    for ok in ("\\boxed{12}", "\\boxed{111}", "\\boxed{1111111111}", "1+1=2, so the answer is \\boxed{2}."):
        assert not is_repetitive(ok, RULE), ok
    loop = "Let me compute the sum. " + "I think the answer is 5. " * 20
    assert is_repetitive(loop, RULE)
    assert is_repetitive("1111111111111111", RULE)  # 16 chars: tail "11111111" of period 1
    assert is_repetitive(loop[:-7], RULE)  # cut mid-copy by the length limit
    texts = ["\\boxed{12}", "no answer", loop, "\\boxed{111}"]
    meter = StepMeter()
    defect_metrics(meter, texts, torch.tensor([False, False, True, False]), RULE, BoxedAnswer())
    m = meter.means()
    assert m["defect/no_boxed_share"] == 0.5  # "no answer" and the loop
    assert m["defect/repetition_share"] == 0.25 and m["defect/truncated_share"] == 0.25


class FinalLine:
    """A non-math format: the answer is the text after "ANSWER: "."""

    name = "final_line"

    def extract(self, text: str) -> str | None:
        return text.split("ANSWER: ", 1)[1] if "ANSWER: " in text else None

    def render(self, answer: str) -> str:
        return f"ANSWER: {answer}"


def test_no_answer_share_follows_the_task_format():
    texts = ["\\boxed{12}", "ANSWER: 3", "ANSWER: 4", "nothing"]
    truncated = torch.zeros(4, dtype=torch.bool)
    meter = StepMeter()
    defect_metrics(meter, texts, truncated, RULE, FinalLine())
    m = meter.means()
    assert m["defect/no_final_line_share"] == 0.5  # the boxed one and "nothing"
    assert "defect/no_boxed_share" not in m
    none = StepMeter()
    defect_metrics(none, texts, truncated, RULE, None)  # a task without a format: not measured
    assert not any(k.startswith("defect/no_") for k in none.means())
    assert "defect/repetition_share" in none.means()
    batch = make_batch(**TWO)
    assert "defect/no_boxed_share" not in metrics(batch, answer_format=None)


def test_smallest_period_against_brute_force():
    rng = random.Random(0)
    for _ in range(300):
        unit = "".join(rng.choice("ab") for _ in range(rng.randint(1, 4)))
        s = (unit * 10)[: rng.randint(1, 30)] if rng.random() < 0.6 else "".join(rng.choice("ab") for _ in range(20))
        s = s[rng.randint(0, 3):] or "a"
        limit = rng.randint(0, len(s))
        brute = next((p for p in range(1, limit + 1) if all(s[i] == s[i + p] for i in range(len(s) - p))), None)
        assert smallest_period(s, limit) == (brute if len(s) >= 2 else None), (s, limit)


# ------------------------------------------------------------------------------------ media
def test_media_objects_build_offline():
    wandb = pytest.importorskip("wandb")
    batch = make_batch(**TWO, texts=["a<b", "\\boxed{2}"], pad=GARBAGE)
    batch.advantages_raw = torch.tensor([[1.0, 1.0, 0, 0, 0], [-1.0] * 5]) * batch.response_mask
    batch.advantages = batch.advantages_raw * torch.tensor([[1.1], [0.9]])
    out = build_media(3, batch, rows=1, token_texts=lambda ids: ["<", "b"][: len(ids)])
    assert set(out) == {"samples", "hist/token_entropy", "hist/advantage", "hist/shaping_weight"}
    table = out["samples"]
    assert isinstance(table, wandb.Table) and len(table.data) == 1
    assert table.columns == ["step", "prompt", "response", "reward", "correct", "advantage", "logppl", "entropy_html"]
    row = table.data[0]
    assert row[0] == 3 and row[3] == 1.0 and row[4] is True
    assert row[5] == pytest.approx(1.1) and row[6] == pytest.approx(1.0) and isinstance(row[7], wandb.Html)
    assert sum(out["hist/token_entropy"].histogram) == 7  # padding excluded
    assert sum(out["hist/shaping_weight"].histogram) == 7
    assert min(out["hist/shaping_weight"].bins) == pytest.approx(0.9)


def test_entropy_html_escapes_and_shades():
    html = entropy_html(["<", "x"], [2.0, 0.0], scale=2.0)
    assert "&lt;" in html and "rgba(255, 0, 0, 1.000)" in html and "rgba(255, 0, 0, 0.000)" in html


def test_disabled_analysis_has_no_media():
    assert StepAnalysis(enabled=False).media(1, make_batch(**TWO)) == {}


# ----------------------------------------------------------------------------------- config
@pytest.mark.parametrize("option", ["default", "off"])
def test_options_instantiate(option):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"analysis={option}"])
    analysis = instantiate(cfg.analysis, _convert_="all")
    assert isinstance(analysis, StepAnalysis) and analysis.enabled == (option == "default")


def test_yaml_defaults_equal_the_constructor_defaults():
    """conf/analysis/default.yaml and StepAnalysis both hold the defaults: they must agree."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["analysis=default"])
    yaml = {k: v for k, v in OmegaConf.to_container(cfg.analysis).items() if k != "_target_"}
    params = inspect.signature(StepAnalysis).parameters
    assert set(yaml) == set(params) and {k: params[k].default for k in yaml} == yaml


@pytest.mark.parametrize("key,value", [
    ("position_buckets", 0), ("top_entropy_fraction", 0.0), ("top_entropy_fraction", 1.5), ("probe_every", -1),
    ("probe_samples_per_side", 0), ("probe_rows_per_pass", 0), ("table_rows", -1), ("enabled", "yes"),
    ("repetition_tail_fraction", 0.0), ("repetition_min_repeats", 1), ("repetition_min_tail_chars", 0),
    ("position_buckets", 2.5), ("probe_max_per_prompt", 0), ("probe_fill_steps", 0),
    ("probe_bootstrap_resamples", 0), ("probe_bootstrap_seed", -1),
])
def test_bad_knob_names_its_key(key, value):
    with pytest.raises(ValueError, match=rf"analysis\.{key} .*{value!r}"):
        StepAnalysis(**{key: value})
