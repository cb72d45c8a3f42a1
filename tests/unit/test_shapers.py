"""Unit tests of the advantage shapers and the shaper stack (CPU; CUDA cases skip without a GPU).

Hand-computed numbers are written as literals with their arithmetic; every shaper is also checked
against a slow per-sample Python loop on random ragged batches whose padding holds NaN.
"""
from __future__ import annotations

import importlib
import inspect
import math
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rlvr_exp.algos.grpo import PolicyGradient
from rlvr_exp.algos.losses import Normaliser, ppo_clip_loss
from rlvr_exp.algos.token_terms import LossTokens, TokenTerms, centered_covariance, chain
from rlvr_exp.shapers.base import OPTIONAL_INPUTS, Shaper, ShaperContext, ShaperOutput, check_range
from rlvr_exp.shapers.clip_cov import ClipCovShaper
from rlvr_exp.shapers.confident_mask import ConfidentMaskShaper
from rlvr_exp.shapers.entropy_adv import EntropyAdvantageShaper
from rlvr_exp.shapers.high_entropy import HighEntropyShaper
from rlvr_exp.shapers.kl_cov import KLCovShaper
from rlvr_exp.shapers.negative_only import NegativeOnlyShaper
from rlvr_exp.shapers.none import NoShaper
from rlvr_exp.shapers.position import PositionShaper
from rlvr_exp.shapers.position_front import PositionFrontShaper
from rlvr_exp.shapers.positive_only import PositiveOnlyShaper
from rlvr_exp.shapers.ppl import PPLShaper, group_zscores
from rlvr_exp.shapers.ppl_high import PPLHighShaper
from rlvr_exp.shapers.prob_reweight import ProbReweightShaper
from rlvr_exp.shapers.stack import ShaperStack
from rlvr_exp.stages.base import PLATEAU, RISING, StageState

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
NAN = float("nan")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ALL_SHAPERS = [
    NoShaper,
    PPLShaper,
    PPLHighShaper,
    PositionShaper,
    PositionFrontShaper,
    PositiveOnlyShaper,
    NegativeOnlyShaper,
    ConfidentMaskShaper,
    HighEntropyShaper,
    EntropyAdvantageShaper,
    ProbReweightShaper,
    ClipCovShaper,
    KLCovShaper,
]


# ---------------------------------------------------------------------------------------------
# Batch builders


def make_ctx(
    lengths: list[int],
    adv: list[float] | torch.Tensor,
    *,
    T: int | None = None,
    group_ids: list[int] | None = None,
    logp: list[list[float]] | torch.Tensor | None = None,
    entropy: list[list[float]] | torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    pad: float = 0.0,
    step: int = 0,
) -> ShaperContext:
    """A context from per-response lengths; ``adv`` per response ([B]) or per token ([B, T]).

    Token lists in ``logp``/``entropy`` hold only response tokens; padding gets ``pad``.
    Advantages carry 0 on padding (the contract); rel_position is (t-1)/L, ``pad`` on padding.
    """
    T = T or max(max(lengths), 1)
    B = len(lengths)
    len_t = torch.tensor(lengths, device=device)
    resp = torch.arange(T, device=device)[None, :] < len_t[:, None]  # [B, T]

    def tokens(values: list[list[float]] | torch.Tensor) -> torch.Tensor:
        if isinstance(values, torch.Tensor):
            out = values.to(dtype=dtype, device=device)
        else:
            out = torch.full((B, T), pad, dtype=dtype, device=device)
            for i, row in enumerate(values):
                out[i, : len(row)] = torch.tensor(row, dtype=dtype)
        return torch.where(resp, out, torch.full_like(out, pad))

    adv_t = torch.as_tensor(adv, dtype=dtype, device=device)
    if adv_t.dim() == 1:
        adv_t = adv_t[:, None].expand(B, T)
    adv_t = torch.where(resp, adv_t, torch.zeros_like(adv_t))
    steps = torch.arange(T, device=device, dtype=dtype)[None, :]
    pos = steps / len_t.clamp(min=1)[:, None].to(dtype)
    return ShaperContext(
        advantages=adv_t,
        response_mask=resp,
        loss_mask=resp.clone(),
        response_len=len_t,
        step=step,
        stage=RISING,
        group_ids=None if group_ids is None else torch.tensor(group_ids, device=device),
        logp_old=None if logp is None else tokens(logp),
        entropy=None if entropy is None else tokens(entropy),
        rel_position=torch.where(resp, pos, torch.full_like(pos, pad)),
    )


def random_ctx(seed: int, dtype: torch.dtype = torch.float64, device: str = "cpu") -> ShaperContext:
    """Several groups (sizes 1..8, sparse shuffled ids), ragged lengths 1..12, PPL outliers, some
    all-equal groups and zero advantages; NaN on every optional input's padding."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 9, (7,), generator=g).tolist()
    ids = [gid * 13 + 5 for gid, n in enumerate(sizes) for _ in range(n)]
    B, T = len(ids), 12
    perm = torch.randperm(B, generator=g)
    ids = [ids[p] for p in perm.tolist()]
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = 1  # a single-token response
    logp = -torch.empty(B, T, dtype=torch.float64).exponential_(2.0, generator=g)
    outlier = torch.rand(B, generator=g) < 0.15
    logp[outlier] *= 25.0
    equal_group = ids[1]  # one all-equal group: identical tokens and lengths
    same = torch.tensor([i == equal_group for i in ids])
    logp[same] = -0.7
    lengths[same] = 5
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    adv[torch.rand(B, generator=g) < 0.2] = 0.0
    adv_tok = adv[:, None] * (1.0 + 0.1 * torch.randn(B, T, generator=g, dtype=torch.float64))
    entropy = torch.rand(B, T, generator=g, dtype=torch.float64) * 3.0
    return make_ctx(
        lengths.tolist(), adv_tok, T=T, group_ids=ids, logp=logp, entropy=entropy,
        dtype=dtype, device=device, pad=NAN,
    )


def full_ctx(dtype: torch.dtype = torch.float64, device: str = "cpu") -> ShaperContext:
    return random_ctx(0, dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------------
# Slow per-sample references


def ref_ppl_weights(ctx: ShaperContext, alpha: float, w_min: float, w_max: float, direction: int):
    """Per-sample loop over groups, torch.quantile per group; returns w [B] float64."""
    B = ctx.advantages.shape[0]
    x = []
    for i in range(B):
        n = int(ctx.response_mask[i].sum())
        s = sum(float(ctx.logp_old[i, t]) for t in range(n))
        x.append(-s / max(n, 1))
    w = [0.0] * B
    for gid in set(ctx.group_ids.tolist()):
        idx = [i for i in range(B) if int(ctx.group_ids[i]) == gid]
        vals = torch.tensor([x[i] for i in idx], dtype=torch.float64)
        q1, q3 = torch.quantile(vals, 0.25).item(), torch.quantile(vals, 0.75).item()
        lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
        kept = [v for v in vals.tolist() if lo <= v <= hi] or vals.tolist()
        mu = sum(kept) / len(kept)
        sigma = math.sqrt(sum((v - mu) ** 2 for v in kept) / len(kept))
        sigma = 1.0 if sigma <= 1e-6 else sigma
        for i in idx:
            w[i] = min(max(1.0 + direction * alpha * (x[i] - mu) / sigma, w_min), w_max)
    return torch.tensor(w, dtype=torch.float64)


def per_token(ctx: ShaperContext, fn) -> torch.Tensor:
    """out[i, t] = fn(i, t) on response tokens, 0 on padding; float64."""
    out = torch.zeros(ctx.advantages.shape, dtype=torch.float64)
    for i in range(out.shape[0]):
        for t in range(int(ctx.response_mask[i].sum())):
            out[i, t] = fn(i, t)
    return out


def ref_position(
    ctx: ShaperContext, alpha: float, k: float, cap: float, front: bool
) -> torch.Tensor:
    def fn(i: int, t: int) -> float:
        a, r = float(ctx.advantages[i, t]), t / int(ctx.response_len[i])
        b = min(alpha / (1.0 + math.exp((k if front else -k) * (r - 0.5))), cap * abs(a))
        return a + math.copysign(b, a) if a != 0 else 0.0

    return per_token(ctx, fn)


def assert_close(actual: torch.Tensor, expected, atol: float = 1e-9) -> None:
    exp = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual.detach().cpu().double(), exp, atol=atol, rtol=0.0)


# ---------------------------------------------------------------------------------------------
# Shaper tests


class TestNoShaper:
    def test_identity(self):
        ctx = full_ctx()
        out = NoShaper()(ctx)
        assert torch.equal(out.advantages, ctx.advantages)
        assert out.loss_mask is None and out.metrics == {}


class TestPPLShaper:
    # One group (id 3) of four responses, T = 4:
    #   r0: logp [-0.1, -0.3]                -> logPPL = 0.4/2   = 0.2
    #   r1: logp [-0.1, -0.5, -0.3]          -> logPPL = 0.9/3   = 0.3
    #   r2: logp [-0.4]                      -> logPPL = 0.4/1   = 0.4
    #   r3: logp [-1, -2, -4, -5]            -> logPPL = 12/4    = 3.0
    # sorted [0.2, 0.3, 0.4, 3.0]; Q1 at rank 0.75: 0.2 + 0.75*0.1 = 0.275;
    # Q3 at rank 2.25: 0.4 + 0.25*2.6 = 1.05; IQR = 0.775; fences [0.275 - 1.1625, 1.05 + 1.1625]
    # = [-0.8875, 2.2125] -> 3.0 is an outlier; kept {0.2, 0.3, 0.4}: mu = 0.3,
    # sigma = sqrt((0.01 + 0 + 0.01)/3) = 0.0816496581;
    # z = [-0.1/sigma, 0, 0.1/sigma, 2.7/sigma] = [-1.2247449, 0, 1.2247449, 33.0681]
    # plus a singleton group (id 9, logPPL 0.5) -> z = 0, and an all-equal pair (id 4) -> z = 0.
    LENGTHS = [2, 3, 1, 4, 2, 3, 3]
    GROUPS = [3, 3, 3, 3, 9, 4, 4]
    LOGP = [[-0.1, -0.3], [-0.1, -0.5, -0.3], [-0.4], [-1.0, -2.0, -4.0, -5.0],
            [-0.5, -0.5], [-0.2, -0.2, -0.2], [-0.2, -0.2, -0.2]]
    ADV = [1.0, -1.0, 0.5, -2.0, 1.0, -1.5, 1.5]
    Z = [-1.224744871391589, 0.0, 1.224744871391589, 33.0681115275729, 0.0, 0.0, 0.0]

    def ctx(self, dtype=torch.float64) -> ShaperContext:
        return make_ctx(self.LENGTHS, self.ADV, group_ids=self.GROUPS, logp=self.LOGP, dtype=dtype)

    def test_zscores_hand(self):
        x = torch.tensor([0.2, 0.3, 0.4, 3.0, 0.5, 0.6, 0.6], dtype=torch.float64)
        z, kept = group_zscores(x, torch.tensor(self.GROUPS))
        assert_close(z, self.Z, atol=1e-7)
        assert kept.tolist() == [True, True, True, False, True, True, True]

    def test_hand_example(self):
        out = PPLShaper()(self.ctx())
        # w = clamp(1 - 0.01 z, 0.8, 1.2)
        #   = [1.0122474487, 1, 0.9877525513, clamp(0.6693) = 0.8, 1, 1, 1]
        w = [1.012247448713916, 1.0, 0.987752551286084, 0.8, 1.0, 1.0, 1.0]
        expected = [
            [1.0 * w[0], 1.0 * w[0], 0.0, 0.0],  # 1.0122474487 on both tokens
            [-1.0, -1.0, -1.0, 0.0],
            [0.5 * w[2], 0.0, 0.0, 0.0],  # 0.4938762756
            [-1.6, -1.6, -1.6, -1.6],  # -2.0 * 0.8
            [1.0, 1.0, 0.0, 0.0],
            [-1.5, -1.5, -1.5, 0.0],
            [1.5, 1.5, 1.5, 0.0],
        ]
        assert_close(out.advantages, expected, atol=1e-9)
        assert out.loss_mask is None
        # weight over 18 response tokens: (2*1.0122474 + 3 + 0.9877526 + 4*0.8 + 2 + 3 + 3)/18
        assert out.metrics["weight_mean"] == pytest.approx((9.2122474487 + 8.0) / 18, abs=1e-9)
        assert out.metrics["weight_min"] == pytest.approx(0.8)
        assert out.metrics["weight_max"] == pytest.approx(1.012247448713916)
        # logPPL mean over responses: (0.2 + 0.3 + 0.4 + 3.0 + 0.5 + 0.2 + 0.2)/7 = 4.8/7
        assert out.metrics["logppl_mean"] == pytest.approx(4.8 / 7)
        assert out.metrics["outlier_share"] == pytest.approx(1 / 7)

    def test_upper_clamp(self):
        # alpha = 0.2: w0 = 1 + 0.2*1.2247 = 1.2449 -> 1.2; w2 = 0.7551 -> 0.8
        out = PPLShaper(alpha=0.2)(self.ctx())
        assert_close(out.advantages[[0, 2, 3], 0], [1.2, 0.4, -1.6])

    @pytest.mark.parametrize("seed", [1, 2, 3])
    @pytest.mark.parametrize("direction", [-1, 1])
    def test_matches_loop(self, seed, direction):
        ctx = random_ctx(seed)
        shaper = PPLShaper(alpha=0.05, direction=direction)
        w = ref_ppl_weights(ctx, 0.05, 0.8, 1.2, direction)
        expected = per_token(ctx, lambda i, t: float(ctx.advantages[i, t]) * float(w[i]))
        assert_close(shaper(ctx).advantages, expected, atol=1e-12)

    def test_sign_kept(self):
        ctx = random_ctx(4)
        out = PPLShaper(alpha=1.0)(ctx)  # large alpha: every weight at a clamp
        assert torch.equal(torch.sign(out.advantages), torch.sign(ctx.advantages))

    def test_no_nan_degenerate(self):
        # all-equal group, singletons, single-token responses
        ctx = make_ctx([1, 1, 1, 1], [1.0, -1.0, 2.0, 0.0], group_ids=[0, 0, 1, 2],
                       logp=[[-0.3], [-0.3], [-5.0], [0.0]])
        out = PPLShaper(alpha=0.5)(ctx)
        assert_close(out.advantages, [[1.0], [-1.0], [2.0], [0.0]])

    @pytest.mark.parametrize(
        "kwargs, name",
        [({"alpha": -1.0}, "alpha"), ({"w_min": 0.0}, "w_min"), ({"w_min": 1.5}, "w_min"),
         ({"w_max": 0.9}, "w_max"), ({"direction": 0}, "direction"), ({"alpha": "1e-2"}, "alpha")],
    )
    def test_bad_params(self, kwargs, name):
        with pytest.raises(ValueError, match=rf"^{name} must be .*got"):
            PPLShaper(**kwargs)

    def test_missing_input(self):
        ctx = self.ctx().replace(group_ids=None)
        with pytest.raises(ValueError, match="group_ids"):
            PPLShaper()(ctx)


class TestPPLHighShaper:
    def test_hand_example(self):
        ctx = TestPPLShaper().ctx()
        out = PPLHighShaper()(ctx)
        # w = clamp(1 + 0.01 z, 0.8, 1.2) = [0.9877525513, 1, 1.0122474487, clamp(1.3307) = 1.2]
        assert_close(out.advantages[:4, 0], [0.987752551286084, -1.0, 0.506123724356958, -2.4])

    def test_no_direction_param(self):
        assert "direction" not in inspect.signature(PPLHighShaper).parameters
        assert PPLHighShaper().direction == 1
        with pytest.raises(TypeError):
            PPLHighShaper(direction=-1)

    def test_matches_loop(self):
        ctx = random_ctx(5)
        w = ref_ppl_weights(ctx, 0.01, 0.8, 1.2, 1)
        expected = per_token(ctx, lambda i, t: float(ctx.advantages[i, t]) * float(w[i]))
        assert_close(PPLHighShaper()(ctx).advantages, expected, atol=1e-12)

    def test_bad_params(self):
        with pytest.raises(ValueError, match="^alpha must be >= 0, got -0.5"):
            PPLHighShaper(alpha=-0.5)


class TestPositionShaper:
    # Four tokens, r = [0, .25, .5, .75]; b = 0.05 * sigmoid(15 (r - 0.5)):
    #   sigmoid(-7.5) = 5.5278e-4 -> 2.763893e-5; sigmoid(-3.75) = 0.0229774 -> 1.148868e-3;
    #   sigmoid(0) = 0.5 -> 0.025;  sigmoid(3.75) = 0.9770226 -> 0.0488511
    B_BACK = [2.763893184617998e-05, 0.0011488684955012808, 0.025, 0.04885113150449872]

    def ctx(self) -> ShaperContext:
        # A = +1, -1, +0.02 (cap 0.5*0.02 = 0.01 bites at r >= .5), 0 (unchanged), length-2 response
        return make_ctx([4, 4, 4, 4, 2], [1.0, -1.0, 0.02, 0.0, -0.5], T=4)

    def test_hand_example(self):
        b = self.B_BACK
        out = PositionShaper()(self.ctx())
        expected = [
            [1.0 + b[0], 1.0 + b[1], 1.025, 1.0 + b[3]],
            [-1.0 - b[0], -1.0 - b[1], -1.025, -1.0 - b[3]],
            [0.02 + b[0], 0.02 + b[1], 0.03, 0.03],  # min(0.025, 0.01), min(0.0489, 0.01)
            [0.0, 0.0, 0.0, 0.0],
            [-0.5 - b[0], -0.5 - 0.025, 0.0, 0.0],  # L = 2: r = [0, 0.5]
        ]
        assert_close(out.advantages, expected, atol=1e-12)
        assert out.loss_mask is None
        assert out.metrics["bonus_max"] == pytest.approx(b[3])
        assert out.metrics["bonus_min"] == 0.0  # the A = 0 row

    @pytest.mark.parametrize("seed", [1, 2])
    @pytest.mark.parametrize("kwargs", [{}, {"alpha": 0.3, "k": 4.0, "cap": 0.2}])
    def test_matches_loop(self, seed, kwargs):
        ctx = random_ctx(seed)
        shaper = PositionShaper(**kwargs)
        expected = ref_position(ctx, shaper.alpha, shaper.k, shaper.cap, front=False)
        assert_close(shaper(ctx).advantages, expected, atol=1e-12)

    def test_sign_kept_and_magnitude_grows(self):
        ctx = random_ctx(3)
        out = PositionShaper(alpha=1.0)(ctx)
        assert torch.equal(torch.sign(out.advantages), torch.sign(ctx.advantages))
        assert bool((out.advantages.abs() >= ctx.advantages.abs()).all())

    @pytest.mark.parametrize(
        "kwargs, name",
        [({"alpha": -0.1}, "alpha"), ({"k": -1.0}, "k"), ({"cap": -0.5}, "cap"),
         ({"front": "yes"}, "front"), ({"k": float("inf")}, "k")],
    )
    def test_bad_params(self, kwargs, name):
        with pytest.raises(ValueError, match=rf"^{name} must be"):
            PositionShaper(**kwargs)


class TestPositionFrontShaper:
    def test_hand_example(self):
        # front, r = [0, .25, .5, .75]: b = 0.05 * sigmoid(-15 (r - 0.5)):
        #   sigmoid(7.5) = 0.9994472 -> 0.0499724; sigmoid(3.75) = 0.9770226 -> 0.0488511;
        #   0.025; sigmoid(-3.75) = 0.0229774 -> 1.148868e-3
        b = [0.04997236106815382, 0.04885113150449872, 0.025, 0.0011488684955012808]
        out = PositionFrontShaper()(TestPositionShaper().ctx())
        assert_close(out.advantages[0], [1.0 + x for x in b], atol=1e-12)
        assert_close(out.advantages[2], [0.03, 0.03, 0.03, 0.02 + b[3]], atol=1e-12)

    def test_matches_loop(self):
        ctx = random_ctx(6)
        expected = ref_position(ctx, 0.05, 15.0, 0.5, front=True)
        assert_close(PositionFrontShaper()(ctx).advantages, expected, atol=1e-12)

    def test_no_front_param(self):
        assert "front" not in inspect.signature(PositionFrontShaper).parameters
        assert PositionFrontShaper().front is True

    def test_bad_params(self):
        with pytest.raises(ValueError, match="^cap must be >= 0"):
            PositionFrontShaper(cap=-1.0)


class TestPositiveOnlyShaper:
    def test_hand_example(self):
        # 3 + 2 + 2 = 7 response tokens; only the A = +1 row (2 tokens) stays -> 5/7 removed
        ctx = make_ctx([2, 3, 2], [1.0, -1.0, 0.0], T=3)
        out = PositiveOnlyShaper()(ctx)
        assert out.loss_mask.tolist() == [[True, True, False], [False] * 3, [False] * 3]
        assert torch.equal(out.advantages, ctx.advantages)
        assert out.metrics == {"masked_share": pytest.approx(5 / 7)}

    def test_matches_loop(self):
        ctx = random_ctx(7)
        expected = per_token(ctx, lambda i, t: float(ctx.advantages[i, t] > 0)).bool()
        assert torch.equal(PositiveOnlyShaper()(ctx).loss_mask, expected)


class TestNegativeOnlyShaper:
    def test_hand_example(self):
        ctx = make_ctx([2, 3, 2], [1.0, -1.0, 0.0], T=3)
        out = NegativeOnlyShaper()(ctx)
        assert out.loss_mask.tolist() == [[False] * 3, [True] * 3, [False] * 3]
        assert torch.equal(out.advantages, ctx.advantages)
        assert out.metrics == {"masked_share": pytest.approx(4 / 7)}

    def test_matches_loop(self):
        ctx = random_ctx(8)
        expected = per_token(ctx, lambda i, t: float(ctx.advantages[i, t] < 0)).bool()
        assert torch.equal(NegativeOnlyShaper()(ctx).loss_mask, expected)


class TestConfidentMaskShaper:
    def test_hand_example(self):
        # p = [0.96, 0.94, 0.5, 0.999] -> drop 0.96 and 0.999 (> 0.95): 2 of 5 tokens removed
        p = [[0.96, 0.94], [0.5, 0.999, 0.2]]
        ctx = make_ctx([2, 3], [1.0, -1.0], logp=[[math.log(v) for v in row] for row in p])
        out = ConfidentMaskShaper()(ctx)
        assert out.loss_mask.tolist() == [[False, True, False], [True, False, True]]
        assert torch.equal(out.advantages, ctx.advantages)
        assert out.metrics["masked_share"] == pytest.approx(2 / 5)

    def test_threshold_one_keeps_all(self):
        ctx = random_ctx(9)
        assert torch.equal(ConfidentMaskShaper(threshold=1.0)(ctx).loss_mask, ctx.response_mask)

    def test_matches_loop(self):
        ctx = random_ctx(10)
        expected = per_token(ctx, lambda i, t: float(math.exp(ctx.logp_old[i, t]) <= 0.5)).bool()
        assert torch.equal(ConfidentMaskShaper(threshold=0.5)(ctx).loss_mask, expected)

    @pytest.mark.parametrize("value", [0.0, 1.5, -0.1])
    def test_bad_params(self, value):
        with pytest.raises(ValueError, match=r"^threshold must be in \(0, 1\], got"):
            ConfidentMaskShaper(threshold=value)


class TestHighEntropyShaper:
    # Ten response tokens with H = 0.1 .. 1.0 (padding H = 100, excluded).
    # rho = 0.2: q = 0.8, rank 0.8 * 9 = 7.2 -> tau = 0.8 + 0.2 * (0.9 - 0.8) = 0.82
    #   -> keep {0.9, 1.0}
    # rho = 0.25: rank 6.75 -> tau = 0.7 + 0.75 * 0.1 = 0.775 -> keep {0.8, 0.9, 1.0}
    def ctx(self) -> ShaperContext:
        ent = [[0.5, 0.9, 0.1, 0.4], [1.0, 0.2, 0.8], [0.3, 0.7, 0.6]]
        return make_ctx([4, 3, 3], [1.0, -1.0, 1.0], entropy=ent, pad=100.0)

    def test_hand_example(self):
        out = HighEntropyShaper()(self.ctx())
        assert out.loss_mask.tolist() == [[False, True, False, False], [True, False, False, False],
                                          [False] * 4]
        assert out.metrics["threshold"] == pytest.approx(0.82)
        assert out.metrics["masked_share"] == pytest.approx(0.8)
        out = HighEntropyShaper(rho=0.25)(self.ctx())
        assert out.metrics["threshold"] == pytest.approx(0.775)
        assert int(out.loss_mask.sum()) == 3

    def test_rho_one_keeps_all(self):
        ctx = random_ctx(11)
        out = HighEntropyShaper(rho=1.0)(ctx)
        assert torch.equal(out.loss_mask, ctx.response_mask)
        assert out.metrics["masked_share"] == 0.0

    @pytest.mark.parametrize("rho", [0.2, 0.5])
    def test_matches_loop(self, rho):
        ctx = random_ctx(12)
        vals = [float(ctx.entropy[i, t]) for i in range(ctx.entropy.shape[0])
                for t in range(int(ctx.response_len[i]))]
        tau = torch.quantile(torch.tensor(vals, dtype=torch.float64), 1.0 - rho).item()
        expected = per_token(ctx, lambda i, t: float(ctx.entropy[i, t] >= tau)).bool()
        assert torch.equal(HighEntropyShaper(rho=rho)(ctx).loss_mask, expected)

    @pytest.mark.parametrize("value", [0.0, 1.2, -0.2])
    def test_bad_params(self, value):
        with pytest.raises(ValueError, match=r"^rho must be in \(0, 1\], got"):
            HighEntropyShaper(rho=value)


class TestEntropyAdvantageShaper:
    def test_hand_example(self):
        # alpha 0.4, kappa 2: H = [0.5, 3.0] -> alpha H = [0.2, 1.2]; |A|/kappa = 0.5
        #   A = +1: [1 + min(0.2, 0.5), 1 + min(1.2, 0.5)] = [1.2, 1.5]
        #   A = -1: [-1 + 0.2, -1 + 0.5] = [-0.8, -0.5]   (added, not signed)
        #   A =  0: clip 0 -> unchanged
        ctx = make_ctx([2, 2, 2], [1.0, -1.0, 0.0], entropy=[[0.5, 3.0]] * 3)
        out = EntropyAdvantageShaper()(ctx)
        assert_close(out.advantages, [[1.2, 1.5], [-0.8, -0.5], [0.0, 0.0]])
        assert out.metrics["bonus_max"] == pytest.approx(0.5)

    def test_matches_loop(self):
        ctx = random_ctx(13)

        def fn(i: int, t: int) -> float:
            a = float(ctx.advantages[i, t])
            return a + min(0.4 * float(ctx.entropy[i, t]), abs(a) / 2.0)

        assert_close(EntropyAdvantageShaper()(ctx).advantages, per_token(ctx, fn), atol=1e-12)

    def test_entropy_detached(self):
        ctx = full_ctx()
        ent = ctx.entropy.clone().requires_grad_(True)
        out = EntropyAdvantageShaper()(ctx.replace(entropy=ent))
        assert not out.advantages.requires_grad

    @pytest.mark.parametrize(
        "kwargs, name", [({"alpha": -0.4}, "alpha"), ({"kappa": 0.0}, "kappa")]
    )
    def test_bad_params(self, kwargs, name):
        with pytest.raises(ValueError, match=rf"^{name} must be"):
            EntropyAdvantageShaper(**kwargs)


class TestProbReweightShaper:
    def test_hand_example(self):
        # alpha 0.1: w = 0.1 p + 0.9; p = [0.5, 1.0, 0.1] -> w = [0.95, 1.0, 0.91]
        ctx = make_ctx([3, 3], [2.0, -1.0], logp=[[math.log(0.5), 0.0, math.log(0.1)]] * 2)
        out = ProbReweightShaper()(ctx)
        assert_close(out.advantages, [[1.9, 2.0, 1.82], [-0.95, -1.0, -0.91]])
        assert out.metrics["weight_min"] == pytest.approx(0.91)

    def test_matches_loop(self):
        ctx = random_ctx(14)

        def fn(i: int, t: int) -> float:
            return (0.3 * math.exp(float(ctx.logp_old[i, t])) + 0.7) * float(ctx.advantages[i, t])

        assert_close(ProbReweightShaper(alpha=0.3)(ctx).advantages, per_token(ctx, fn), atol=1e-12)

    def test_alpha_zero_is_identity(self):
        ctx = full_ctx()
        assert torch.equal(ProbReweightShaper(alpha=0.0)(ctx).advantages, ctx.advantages)

    @pytest.mark.parametrize("value", [-0.1, 1.1])
    def test_bad_params(self, value):
        with pytest.raises(ValueError, match=r"^alpha must be in \[0, 1\], got"):
            ProbReweightShaper(alpha=value)


# ---------------------------------------------------------------------------------------------
# The per-token loss terms (Clip-Cov, KL-Cov): they act inside the loss, on the live log-probs.
#
# One micro-batch of 5 loss tokens (row 1 has one padding token), float64, exact in binary:
#   A    = [[ 2,    2,    2  ], [-3,   -3,  pad]]   mean_V A = 0
#   l    = [[-0.5, -1.0, -3.0], [-0.5, -2.5, pad]]  mean_V l = -7.5 / 5 = -1.5
#   cov  = [[ 2.0,  1.0, -3.0], [-3.0,  3.0,  0 ]]  = (A - 0) (l + 1.5)
# Token loss at r = 1 is -A; its gradient d/dl is -A r.

COV_MASK = [[True, True, True], [True, True, False]]
COV_ADV = [[2.0, 2.0, 2.0], [-3.0, -3.0, 0.0]]
COV_LOGP = [[-0.5, -1.0, -3.0], [-0.5, -2.5, 0.0]]


def cov_case(logp_old_shift: dict[tuple[int, int], float] | None = None):
    """(logp leaf with grad, logp_old = logp - shift, adv, mask), float64."""
    mask = torch.tensor(COV_MASK)
    logp = torch.tensor(COV_LOGP, dtype=torch.float64, requires_grad=True)
    logp_old = logp.detach().clone()
    for (i, t), d in (logp_old_shift or {}).items():
        logp_old[i, t] -= d
    return logp, logp_old, torch.tensor(COV_ADV, dtype=torch.float64), mask


def loss_tokens(logp, logp_old, adv, mask, eps_low=0.2, eps_high=0.28) -> LossTokens:
    """The LossTokens the loss builds (its clip indicators from ``ppo_clip_loss``)."""
    _, info = ppo_clip_loss(logp, logp_old, adv, eps_low, eps_high)
    return LossTokens(logp, logp_old, adv, mask, (info["clip_low"] + info["clip_high"]) > 0)


def loss_and_grad(term, logp, logp_old, adv, mask):
    """token-mean PolicyGradient loss over the 5 tokens with ``term``; (loss, d loss / d logp, info)."""
    loss, info = PolicyGradient().loss(logp, logp_old, adv, mask, Normaliser(5.0, 2.0, 3.0), None, term)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.item(), grad, info


def ref_cov(adv: torch.Tensor, logp: torch.Tensor, mask: torch.Tensor) -> dict[tuple[int, int], float]:
    """Slow loop: cov of every valid token, means over the valid tokens."""
    cells = [(i, t) for i in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[i, t]]
    mean_a = sum(float(adv[c]) for c in cells) / len(cells)
    mean_l = sum(float(logp[c]) for c in cells) / len(cells)
    return {c: (float(adv[c]) - mean_a) * (float(logp[c]) - mean_l) for c in cells}


def random_tokens(seed: int) -> LossTokens:
    """A ragged micro-batch with NaN log-probs on padding and some clipped tokens."""
    g = torch.Generator().manual_seed(seed)
    n, t = 6, 9
    mask = torch.arange(t)[None, :] < torch.randint(1, t + 1, (n,), generator=g)[:, None]
    adv = (torch.randn(n, 1, generator=g, dtype=torch.float64) * (1 + 0.1 * torch.randn(n, t, generator=g))) * mask
    logp = -torch.empty(n, t, dtype=torch.float64).exponential_(1.0, generator=g)
    logp_old = logp + 0.3 * torch.randn(n, t, generator=g, dtype=torch.float64)
    logp, logp_old = torch.where(mask, logp, NAN), torch.where(mask, logp_old, 0.0)
    _, info = ppo_clip_loss(logp.nan_to_num(), logp_old, adv, 0.2, 0.28)
    return LossTokens(logp, logp_old, adv, mask, (info["clip_low"] + info["clip_high"]) > 0)


def selected(terms: TokenTerms) -> list[tuple[int, int]]:
    return [tuple(c) for c in terms.stats["selected"].nonzero().tolist()]


class TestCenteredCovariance:
    def test_hand_example(self):
        logp, _, adv, mask = cov_case()
        assert_close(centered_covariance(adv, logp, mask), [[2.0, 1.0, -3.0], [-3.0, 3.0, 0.0]])
        assert not centered_covariance(adv, logp, mask).requires_grad

    def test_matches_loop_and_empty_mask(self):
        tok = random_tokens(30)
        cov = centered_covariance(tok.advantages, tok.logp, tok.loss_mask)
        for cell, value in ref_cov(tok.advantages, tok.logp, tok.loss_mask).items():
            assert cov[cell].item() == pytest.approx(value, abs=1e-12)
        assert bool((cov[~tok.loss_mask] == 0).all())
        empty = torch.zeros_like(tok.loss_mask)
        assert torch.equal(centered_covariance(tok.advantages, tok.logp, empty), torch.zeros_like(tok.advantages))


class TestClipCovShaper:
    def test_advantages_unchanged_term_returned(self):
        ctx = random_ctx(15)
        out = ClipCovShaper()(ctx)
        assert torch.equal(out.advantages, ctx.advantages.nan_to_num() * ctx.response_mask)
        assert out.loss_mask is None and out.token_loss is not None

    def test_hand_example_window_and_clip(self):
        # window (1, 5): candidates cov 2.0 at (0,0) and 3.0 at (1,1); (0,1) sits on lb = 1.0 (strict: out).
        # ratio 1: k = max(1, floor(1 * 5)) = 5 >= 2 candidates -> both detached.
        logp, logp_old, adv, mask = cov_case()
        terms = ClipCovShaper(ratio=1.0)(make_ctx([1], [0.0])).token_loss(loss_tokens(logp, logp_old, adv, mask))
        assert selected(terms) == [(0, 0), (1, 1)]
        assert_close(terms.scale, [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
        assert terms.stats["candidates"].nonzero().tolist() == [[0, 0], [1, 1]]
        # ub = 3.0 is strict too: (1,1) leaves the window
        terms = ClipCovShaper(ratio=1.0, ub=3.0).token_terms(loss_tokens(logp, logp_old, adv, mask))
        assert selected(terms) == [(0, 0)]

    def test_hand_loss_and_gradient(self):
        # ratio 1, r = 1 everywhere: token losses -A = [-2, -2, -2, 3, 3]; (0,0) and (1,1) get 0:
        #   loss = (0 - 2 - 2 + 3 + 0) / 5 = -0.2 (without: 0 / 5 = 0); the zeroed tokens stay in the /5
        #   d loss / d l = -A / 5 off the selection = [[0, -0.4, -0.4], [0.6, 0, 0]]
        logp, logp_old, adv, mask = cov_case()
        loss, grad, info = loss_and_grad(ClipCovShaper(ratio=1.0).token_terms, logp, logp_old, adv, mask)
        assert loss == pytest.approx(-0.2, abs=1e-12)
        assert_close(grad, [[0.0, -0.4, -0.4], [0.6, 0.0, 0.0]], atol=1e-12)
        assert loss_and_grad(None, logp, logp_old, adv, mask)[0] == pytest.approx(0.0, abs=1e-12)
        assert info["selected"].sum().item() == 2.0 and "train/clip_low" in info

    def test_clipped_tokens_are_never_candidates(self):
        # l_old(1,1) = -2.0: r = exp(-0.5) = 0.6065 < 0.8 with A = -3 -> the PPO clip is active there, so (1,1)
        # leaves the candidates and the default k = max(1, floor(2e-4 * 5)) = 1 has one choice: (0,0).
        #   losses [0 (detached), -2, -2, 3, -A * 0.8 = 2.4] -> (-2 - 2 + 3 + 2.4) / 5 = 0.28
        #   gradient: 0 at (0,0) (detached) and (1,1) (clipped); -A / 5 elsewhere
        logp, logp_old, adv, mask = cov_case({(1, 1): -0.5})
        for seed in range(5):  # one candidate: whatever the generator draws
            torch.manual_seed(seed)
            terms = ClipCovShaper().token_terms(loss_tokens(logp, logp_old, adv, mask))
            assert selected(terms) == [(0, 0)]
        loss, grad, _ = loss_and_grad(ClipCovShaper().token_terms, logp, logp_old, adv, mask)
        assert loss == pytest.approx(0.28, abs=1e-12)
        assert_close(grad, [[0.0, -0.4, -0.4], [0.6, 0.0, 0.0]], atol=1e-12)

    def test_random_subset_is_seeded(self):
        # two candidates, k = 1: the choice is candidates[randperm(2)[0]] on the global generator (verl's draw)
        logp, logp_old, adv, mask = cov_case()
        seen = set()
        for seed in range(12):
            torch.manual_seed(seed)
            expected = [(0, 0), (1, 1)][torch.randperm(2)[0].item()]
            torch.manual_seed(seed)
            got = selected(ClipCovShaper().token_terms(loss_tokens(logp, logp_old, adv, mask)))
            torch.manual_seed(seed)
            again = selected(ClipCovShaper().token_terms(loss_tokens(logp, logp_old, adv, mask)))
            assert got == again == [expected]
            seen.add(expected)
        assert seen == {(0, 0), (1, 1)}  # both happen: the draw is not fixed

    def test_reads_the_live_logp_not_logp_old(self):
        # shifting l_old by +-0.1 (no clip flips: r in [0.905, 1.105]) leaves the selection alone
        logp, logp_old, adv, mask = cov_case({(0, 0): 0.1, (0, 1): -0.1, (1, 0): 0.1, (1, 1): -0.1})
        terms = ClipCovShaper(ratio=1.0).token_terms(loss_tokens(logp, logp_old, adv, mask))
        assert selected(terms) == [(0, 0), (1, 1)]

    def test_matches_loop(self):
        tok = random_tokens(31)
        cov = ref_cov(tok.advantages, tok.logp, tok.loss_mask)
        lb, ub = 0.05, 0.6
        expected = sorted(c for c, v in cov.items() if lb < v < ub and not tok.clipped[c])
        assert len(expected) >= 3 and tok.clipped.any()  # the case exercises both exclusions
        assert selected(ClipCovShaper(ratio=1.0, lb=lb, ub=ub).token_terms(tok)) == expected
        torch.manual_seed(0)
        got = selected(ClipCovShaper(ratio=0.1, lb=lb, ub=ub).token_terms(tok))  # k = floor(0.1 n)
        assert len(got) == min(len(expected), int(0.1 * int(tok.loss_mask.sum()))) and set(got) <= set(expected)

    def test_no_candidates_no_draw(self):
        logp, logp_old, adv, mask = cov_case()
        torch.manual_seed(3)
        state = torch.get_rng_state()
        terms = ClipCovShaper(lb=10.0, ub=20.0).token_terms(loss_tokens(logp, logp_old, adv, mask))
        assert torch.equal(terms.scale, torch.ones_like(terms.scale)) and terms.extra is None
        assert torch.equal(torch.get_rng_state(), state)
        empty = loss_tokens(logp, logp_old, adv, torch.zeros_like(mask))
        assert ClipCovShaper().token_terms(empty).stats["selected"].sum().item() == 0.0

    @pytest.mark.parametrize(
        "kwargs, message",
        [({"ratio": 0.0}, r"^ratio must be in \(0, 1\]"), ({"ratio": 1.5}, r"^ratio must be in"),
         ({"lb": 5.0, "ub": 1.0}, r"^ub must be > lb"), ({"lb": float("nan")}, r"^lb must be a finite number")],
    )
    def test_bad_params(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            ClipCovShaper(**kwargs)


class TestKLCovShaper:
    def test_hand_selection(self):
        # top cov: (1,1) 3.0 > (0,0) 2.0 > (0,1) 1.0 > the two -3.0
        # default ratio 2e-4: k = max(1, floor(0.001)) = 1 -> (1,1); ratio 0.4: k = floor(2.0) = 2
        logp, logp_old, adv, mask = cov_case()
        assert selected(KLCovShaper().token_terms(loss_tokens(logp, logp_old, adv, mask))) == [(1, 1)]
        assert selected(KLCovShaper(ratio=0.4).token_terms(loss_tokens(logp, logp_old, adv, mask))) == [(0, 0), (1, 1)]

    def test_hand_loss_and_gradient(self):
        # ratio 0.4, coef 0.5; l - l_old = -0.125 at (0,0), +0.25 at (1,1), 0 elsewhere.
        #   (0,0): A = 2, r = e^-0.125 (no clip): -2 e^-0.125 + 0.5 * 0.125 = -1.7649938 + 0.0625
        #   (1,1): A = -3, r = e^0.25 (A < 0: no upper clip): 3 e^0.25 + 0.5 * 0.25 = 3.8520763 + 0.125
        #   others -A: -2, -2, 3.  loss = 1.2745824 / 5 = 0.25491649
        #   d/dl: -A r + coef sign(l - l_old): (0,0) (-1.7649938 - 0.5) / 5, (1,1) (3.8520763 + 0.5) / 5
        logp, logp_old, adv, mask = cov_case({(0, 0): -0.125, (1, 1): 0.25})
        term = KLCovShaper(ratio=0.4, coef=0.5).token_terms
        loss, grad, info = loss_and_grad(term, logp, logp_old, adv, mask)
        e1, e2 = math.exp(-0.125), math.exp(0.25)
        assert loss == pytest.approx((-2 * e1 + 0.0625 - 2 - 2 + 3 + 3 * e2 + 0.125) / 5, abs=1e-12)
        assert loss == pytest.approx(0.2549164890, abs=1e-9)
        assert_close(grad, [[(-2 * e1 - 0.5) / 5, -0.4, -0.4], [0.6, (3 * e2 + 0.5) / 5, 0.0]], atol=1e-12)
        assert_close(info["penalty"], [[0.0625, 0.0, 0.0], [0.0, 0.125, 0.0]])
        base, base_grad, _ = loss_and_grad(None, logp, logp_old, adv, mask)
        assert loss - base == pytest.approx((0.0625 + 0.125) / 5, abs=1e-12)
        assert_close(grad - base_grad, [[-0.1, 0.0, 0.0], [0.0, 0.1, 0.0]], atol=1e-12)

    def test_no_gradient_where_logp_equals_logp_old(self):
        # |x| has gradient 0 at x = 0 (torch): on-policy tokens get no push from the penalty
        logp, logp_old, adv, mask = cov_case()
        _, grad, info = loss_and_grad(KLCovShaper(ratio=0.4, coef=1.0).token_terms, logp, logp_old, adv, mask)
        assert_close(grad, loss_and_grad(None, logp, logp_old, adv, mask)[1])
        assert info["penalty"].abs().sum().item() == 0.0

    def test_matches_loop(self):
        tok = random_tokens(32)
        cov = ref_cov(tok.advantages, tok.logp, tok.loss_mask)
        k = int(0.2 * len(cov))
        expected = sorted(sorted(cov, key=cov.get, reverse=True)[:k])
        terms = KLCovShaper(ratio=0.2, coef=0.3).token_terms(tok)
        assert k >= 3 and selected(terms) == expected
        for cell in expected:
            want = 0.3 * abs(float(tok.logp[cell]) - float(tok.logp_old[cell]))
            assert terms.extra[cell].item() == pytest.approx(want, abs=1e-12)
        assert terms.extra.sum().item() == pytest.approx(sum(terms.extra[c].item() for c in expected))
        assert not terms.extra.isnan().any()  # NaN log-probs on padding stay out

    def test_empty_micro_batch(self):
        logp, logp_old, adv, mask = cov_case()
        terms = KLCovShaper().token_terms(loss_tokens(logp, logp_old, adv, torch.zeros_like(mask)))
        assert terms.extra.abs().sum().item() == 0.0 and terms.stats["selected"].sum().item() == 0.0

    @pytest.mark.parametrize(
        "kwargs, message",
        [({"ratio": 0.0}, r"^ratio must be in \(0, 1\]"), ({"coef": -0.1}, r"^coef must be >= 0")],
    )
    def test_bad_params(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            KLCovShaper(**kwargs)


class TestChainedTokenTerms:
    def test_order_and_names(self):
        # (s1, e1) = (2, 1) then (s2, e2) = (3, 0.5): l -> 3 (2 l + 1) + 0.5 = 6 l + 3.5
        tok = loss_tokens(*cov_case()[:2], torch.tensor(COV_ADV, dtype=torch.float64), torch.tensor(COV_MASK))
        ones = torch.ones(2, 3, dtype=torch.float64)

        def first(t: LossTokens) -> TokenTerms:
            return TokenTerms(scale=2 * ones, extra=ones, stats={"x": ones})

        def second(t: LossTokens) -> TokenTerms:
            return TokenTerms(scale=3 * ones, extra=0.5 * ones, stats={"x": 2 * ones})

        terms = chain([("a", first), ("b", second)])(tok)
        assert_close(terms.apply(10 * ones), 63.5 * ones)
        assert set(terms.stats) == {"shaper/a/x", "shaper/b/x"}
        assert chain([]) is None

    def test_shape_mismatch_names_the_problem(self):
        bad = TokenTerms(scale=torch.ones(2, 2))
        with pytest.raises(ValueError, match="scale has shape \\(2, 2\\), the token loss \\(2, 3\\)"):
            bad.apply(torch.zeros(2, 3))


# ---------------------------------------------------------------------------------------------
# Invariants shared by every shaper


class TestCommonInvariants:
    @pytest.mark.parametrize("cls", ALL_SHAPERS)
    def test_interface(self, cls):
        shaper = cls()
        assert isinstance(shaper, Shaper)
        assert isinstance(cls.requires, frozenset) and cls.requires <= OPTIONAL_INPUTS

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("cls", ALL_SHAPERS)
    def test_padding_dtype_device(self, cls, dtype, device):
        ctx = random_ctx(20, dtype=dtype, device=device)
        out = cls()(ctx)
        assert isinstance(out, ShaperOutput)
        assert out.advantages.dtype == dtype and out.advantages.device == ctx.advantages.device
        assert out.advantages.shape == ctx.advantages.shape
        assert bool((out.advantages[~ctx.response_mask] == 0).all())
        assert not bool(out.advantages.isnan().any())
        if out.loss_mask is not None:
            assert out.loss_mask.dtype == torch.bool
            assert not bool((out.loss_mask & ~ctx.response_mask).any())
        assert all(isinstance(v, float) and math.isfinite(v) for v in out.metrics.values())

    @pytest.mark.parametrize("cls", ALL_SHAPERS)
    def test_degenerate_batches(self, cls):
        # all-equal group, singleton groups, single-token responses, all-zero advantages
        for adv in ([1.0, 1.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0]):
            ctx = make_ctx([1, 1, 1, 1], adv, group_ids=[0, 0, 1, 2], logp=[[-0.2]] * 4,
                           entropy=[[0.0]] * 4)
            out = cls()(ctx)
            assert not bool(out.advantages.isnan().any())
            assert all(math.isfinite(v) for v in out.metrics.values())

    @pytest.mark.parametrize(
        "cls", [PPLShaper, PositionShaper, EntropyAdvantageShaper, ProbReweightShaper]
    )
    def test_float32_matches_float64(self, cls):
        out32 = cls()(random_ctx(21, dtype=torch.float32)).advantages
        out64 = cls()(random_ctx(21, dtype=torch.float64)).advantages
        torch.testing.assert_close(out32.double(), out64, atol=1e-5, rtol=1e-5)


class TestCheckRange:
    def test_messages(self):
        with pytest.raises(ValueError, match=r"^alpha must be >= 0, got -1.0$"):
            check_range("alpha", -1.0, 0.0)
        with pytest.raises(ValueError, match=r"^rho must be in \(0, 1\], got 0$"):
            check_range("rho", 0, 0.0, 1.0, low_open=True)
        with pytest.raises(ValueError, match=r"^x must be a finite number >= 0, got nan$"):
            check_range("x", float("nan"), 0.0)
        with pytest.raises(ValueError, match=r"^x must be a finite number >= 0, got True$"):
            check_range("x", True, 0.0)
        assert check_range("x", 1, 0.0, 1.0) == 1.0


# ---------------------------------------------------------------------------------------------
# The stack


class Always:
    def active(self, step: int, state: StageState) -> bool:
        return True


class Never:
    def active(self, step: int, state: StageState) -> bool:
        return False


class OnPlateau:
    def active(self, step: int, state: StageState) -> bool:
        return state.name == PLATEAU


class Exploding:
    """A shaper that must never be called."""

    requires: frozenset[str] = frozenset({"rewards"})

    def __call__(self, ctx: ShaperContext) -> ShaperOutput:
        raise AssertionError("an inactive shaper was called")


class TestShaperStack:
    def test_order_matters(self):
        ctx = make_ctx(TestPPLShaper.LENGTHS, TestPPLShaper.ADV, group_ids=TestPPLShaper.GROUPS,
                       logp=TestPPLShaper.LOGP)
        ppl, pos = PPLShaper(alpha=0.1), PositionShaper(alpha=0.2)
        a = ShaperStack([("ppl", ppl, Always()), ("position", pos, Always())])(ctx, StageState())
        b = ShaperStack([("position", pos, Always()), ("ppl", ppl, Always())])(ctx, StageState())
        # each order equals the manual composition
        assert_close(a.advantages, pos(ctx.replace(advantages=ppl(ctx).advantages)).advantages)
        assert_close(b.advantages, ppl(ctx.replace(advantages=pos(ctx).advantages)).advantages)
        # r0 (w = 1.1224745), token 2 of 2 (r = 0.5): b = 0.2 * 0.5 = 0.1, cap 0.5*|A| not binding
        #   ppl -> position: 1.1224745 + 0.1 = 1.2224745
        #   position -> ppl: (1 + 0.1) * 1.1224745 = 1.2347219
        assert a.advantages[0, 1].item() == pytest.approx(1.2224744871)
        assert b.advantages[0, 1].item() == pytest.approx(1.2347219359)
        # rows with w = 1 (r1 and the z = 0 groups) agree; rows with w != 1 differ
        same = (a.advantages - b.advantages).abs().amax(dim=1) < 1e-12
        assert same.tolist() == [False, True, False, False, True, True, True]

    def test_masks_and_together(self):
        p = [[0.99, 0.5, 0.3], [0.2, 0.99, 0.4], [0.5, 0.5, 0.5]]
        ctx = make_ctx([3, 3, 2], [1.0, 1.0, -1.0], logp=[[math.log(v) for v in r] for r in p])
        start = ctx.response_mask.clone()
        start[1, 0] = False  # the pipeline already removed a token: the stack must keep it out
        ctx = ctx.replace(loss_mask=start)
        stack = ShaperStack([("pos", PositiveOnlyShaper(), Always()),
                             ("conf", ConfidentMaskShaper(), Always())])
        out = stack(ctx, StageState())
        assert out.loss_mask.tolist() == [[False, True, True], [False, False, True], [False] * 3]
        assert out.metrics["shaper/pos/masked_share"] == pytest.approx(2 / 8)
        assert out.metrics["shaper/conf/masked_share"] == pytest.approx(2 / 8)

    def test_later_shaper_sees_earlier_mask(self):
        seen = {}

        class Spy:
            requires: frozenset[str] = frozenset()

            def __call__(self, ctx: ShaperContext) -> ShaperOutput:
                seen["mask"] = ctx.loss_mask.clone()
                return ShaperOutput(advantages=ctx.advantages)

        ctx = make_ctx([2, 2], [1.0, -1.0])
        stack = ShaperStack([("neg", NegativeOnlyShaper(), Always()), ("spy", Spy(), Always())])
        stack(ctx, StageState())
        assert seen["mask"].tolist() == [[False, False], [True, True]]

    def test_inactive_skipped_and_keys_prefixed(self):
        ctx = full_ctx()
        stack = ShaperStack([
            ("boom", Exploding(), Never()),
            ("ppl", PPLShaper(), Always()),
            ("late", PositionShaper(), OnPlateau()),
        ])
        out = stack(ctx, StageState(name=RISING))
        assert torch.equal(out.advantages, PPLShaper()(ctx).advantages)
        assert out.metrics["shaper/boom/active"] == 0.0
        assert out.metrics["shaper/ppl/active"] == 1.0
        assert out.metrics["shaper/late/active"] == 0.0
        assert all(k.startswith("shaper/") for k in out.metrics)
        assert "shaper/ppl/weight_mean" in out.metrics and "shaper/ppl/logppl_mean" in out.metrics
        assert not any(k.startswith(("shaper/boom/", "shaper/late/")) and not k.endswith("/active")
                       for k in out.metrics)
        out = stack(ctx, StageState(name=PLATEAU, plateau_step=0))
        assert out.metrics["shaper/late/active"] == 1.0 and "shaper/late/bonus_mean" in out.metrics

    def test_no_active_returns_input(self):
        ctx = full_ctx()
        out = ShaperStack([("boom", Exploding(), Never())])(ctx, StageState())
        assert out.advantages is ctx.advantages
        assert torch.equal(out.loss_mask, ctx.response_mask)
        out = ShaperStack([])(ctx, StageState())
        assert out.advantages is ctx.advantages and out.metrics == {}

    def test_token_loss_terms_of_active_entries_only(self):
        ctx = full_ctx()
        assert ShaperStack([("ppl", PPLShaper(), Always()), ("h", HighEntropyShaper(), Always())])(
            ctx, StageState()).token_loss is None  # shapers without a term leave the loss exactly as it was
        stack = ShaperStack([("cc", ClipCovShaper(ratio=1.0), Always()), ("kc", KLCovShaper(ratio=0.4), Always()),
                             ("off", KLCovShaper(), Never())])
        out = stack(ctx, StageState())
        assert torch.equal(out.advantages, ctx.advantages.nan_to_num() * ctx.response_mask)
        logp, logp_old, adv, mask = cov_case({(1, 1): 0.25})
        terms = out.token_loss(loss_tokens(logp, logp_old, adv, mask))
        assert set(terms.stats) == {"shaper/cc/selected", "shaper/cc/candidates", "shaper/kc/selected",
                                    "shaper/kc/penalty"}
        # Clip-Cov detaches (0,0) and (1,1); KL-Cov's penalty on (1,1) is added after, so it stays
        assert_close(terms.scale, [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
        assert_close(terms.extra, [[0.0, 0.0, 0.0], [0.0, 0.1 * 0.25, 0.0]])

    def test_requires_union(self):
        stack = ShaperStack([("a", PPLShaper(), Always()), ("b", HighEntropyShaper(), Always()),
                             ("c", Exploding(), Never())])
        assert stack.requires == frozenset({"logp_old", "group_ids", "entropy", "rewards"})
        assert ShaperStack([]).requires == frozenset()

    def test_bad_entries(self):
        with pytest.raises(ValueError, match="unique"):
            ShaperStack([("a", NoShaper(), Always()), ("a", NoShaper(), Always())])

        class Odd:
            requires: frozenset[str] = frozenset({"hidden_states"})

            def __call__(self, ctx: ShaperContext) -> ShaperOutput:
                return ShaperOutput(advantages=ctx.advantages)

        with pytest.raises(ValueError, match="hidden_states"):
            ShaperStack([("odd", Odd(), Always())])


# ---------------------------------------------------------------------------------------------
# Config options


YAMLS = sorted((CONF_DIR / "shaper").glob("*.yaml"))


class TestShaperConfigs:
    def test_one_option_per_module(self):
        stems = {p.stem for p in YAMLS}
        assert stems == {cls.__module__.rsplit(".", 1)[-1] for cls in ALL_SHAPERS}

    @pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
    def test_instantiates(self, path):
        text = path.read_text()
        assert text.splitlines()[0] == f"# @package shaper.{path.stem}"
        bare_exponent = re.search(r"(?<![\w.])\d+[eE][-+]?\d", re.sub(r"#.*", "", text))
        assert bare_exponent is None, "write floats like 1.0e-2, never 1e-2"
        cfg = OmegaConf.load(path)
        assert "schedule" in cfg and cfg.pop("schedule") is None
        shaper = instantiate(cfg)
        cls = type(shaper)
        assert cls.__module__.rsplit(".", 1)[-1] == path.stem
        assert isinstance(shaper, Shaper)
        # every constructor parameter is written out, with the constructor's (paper) default
        params = inspect.signature(cls).parameters
        assert set(cfg.keys()) - {"_target_"} == set(params)
        assert vars(shaper) == vars(cls())
        module = importlib.import_module(cls.__module__)
        assert module.__doc__ and "arXiv" in module.__doc__

    def test_compose_list(self):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=None, overrides=["+shaper=[ppl,position]"])
        assert list(cfg.shaper.keys()) == ["ppl", "position"]
        assert cfg.shaper.ppl.alpha == pytest.approx(0.01)
        assert cfg.shaper.position.schedule is None
