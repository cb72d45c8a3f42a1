"""Group advantages, loss aggregation, clip-higher: hand-computed numbers."""
from __future__ import annotations

import math

import pytest
import torch

from rlvr_exp.algos.advantages import group_advantages
from rlvr_exp.algos.grpo import PolicyGradient
from rlvr_exp.algos.losses import Normaliser, aggregate, k3_kl, ppo_clip_loss


class TestGroupAdvantages:
    def test_style_example(self):
        # mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735 -> +-0.5 / 0.57735 = +-0.866
        adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.zeros(4, dtype=torch.long))
        assert torch.allclose(adv, torch.tensor([0.8660, -0.8660, -0.8660, 0.8660]), atol=1e-4)

    def test_plus_minus_one_rewards(self):
        # mean -0.5, deviations [1.5, -0.5, -0.5, -0.5], squares sum 3, /3 -> std 1
        adv = group_advantages(torch.tensor([1.0, -1.0, -1.0, -1.0]), torch.zeros(4, dtype=torch.long))
        assert torch.allclose(adv, torch.tensor([1.5, -0.5, -0.5, -0.5]) / (1 + 1e-6), atol=1e-7)

    def test_groups_are_independent_and_non_contiguous(self):
        r = torch.tensor([1.0, 5.0, 0.0, 7.0])
        g = torch.tensor([0, 1, 0, 1])
        adv = group_advantages(r, g)
        s = math.sqrt(0.5)  # unbiased std of two values d apart is d / sqrt(2)
        assert torch.allclose(adv, torch.tensor([s, -s, -s, s]), atol=1e-5)

    def test_all_equal_and_singleton_groups_get_zero(self):
        adv = group_advantages(torch.tensor([1.0, 1.0, 1.0, 3.0]), torch.tensor([0, 0, 0, 1]))
        assert torch.equal(adv, torch.zeros(4))
        assert not torch.isnan(adv).any()

    def test_dr_grpo_is_unscaled(self):
        adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.zeros(4, dtype=torch.long), scale=False)
        assert torch.allclose(adv, torch.tensor([0.75, -0.25, -0.25, -0.25]))

    def test_dtype_kept(self):
        r = torch.tensor([1.0, 0.0], dtype=torch.float64)
        assert group_advantages(r, torch.zeros(2, dtype=torch.long)).dtype == torch.float64

    def test_token_advantages_zero_on_padding(self):
        algo = PolicyGradient()
        mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
        adv = algo.advantages(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), mask)
        a = 0.5 / math.sqrt(0.5) / (1 + 1e-6 / math.sqrt(0.5))
        assert torch.allclose(adv, torch.tensor([[a, a, 0.0], [-a, 0.0, 0.0]]), atol=1e-5)
        assert adv[~mask].abs().sum() == 0


class TestAggregation:
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    norm = Normaliser(tokens=4.0, seqs=2.0, max_len=4.0)

    def test_token_mean(self):  # (1+2+3+4)/4
        assert aggregate(self.loss, self.mask, "token-mean", self.norm).item() == pytest.approx(2.5)

    def test_seq_mean_token_mean(self):  # (6/3 + 4/1) / 2
        assert aggregate(self.loss, self.mask, "seq-mean-token-mean", self.norm).item() == pytest.approx(3.0)

    def test_seq_mean_token_sum_norm(self):  # (6 + 4) / (2 * 4)
        assert aggregate(self.loss, self.mask, "seq-mean-token-sum-norm", self.norm).item() == pytest.approx(1.25)

    @pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
    def test_micro_batches_add_up_to_the_mini_batch(self, mode):
        whole = aggregate(self.loss, self.mask, mode, self.norm)
        parts = sum(aggregate(self.loss[i : i + 1], self.mask[i : i + 1], mode, self.norm) for i in range(2))
        assert parts.item() == pytest.approx(whole.item())

    def test_unknown_mode_names_the_key(self):
        with pytest.raises(ValueError, match="algo.loss_agg"):
            aggregate(self.loss, self.mask, "sum", self.norm)


class TestClipHigher:
    def test_four_quadrants(self):
        adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
        ratio = torch.tensor([[1.5, 0.5, 0.5, 1.5]])
        loss, info = ppo_clip_loss(ratio.log(), torch.zeros(1, 4), adv, 0.2, 0.28)
        # A>0, r=1.5: max(-1.5, -1.28) = -1.28 (clipped high); A<0, r=0.5: max(0.5, 0.8) = 0.8
        # (clipped low); A>0, r=0.5: max(-0.5, -0.8) = -0.5; A<0, r=1.5: max(1.5, 1.28) = 1.5
        assert torch.allclose(loss, torch.tensor([[-1.28, 0.8, -0.5, 1.5]]), atol=1e-6)
        assert info["clip_high"].tolist() == [[1.0, 0.0, 0.0, 0.0]]
        assert info["clip_low"].tolist() == [[0.0, 1.0, 0.0, 0.0]]

    def test_high_side_is_wider(self):
        adv = torch.ones(1, 1)
        loss, _ = ppo_clip_loss(torch.log(torch.tensor([[1.25]])), torch.zeros(1, 1), adv, 0.2, 0.28)
        assert loss.item() == pytest.approx(-1.25)  # inside 1.28: not clipped (it would be at 0.2)

    def test_gradient_is_zero_when_clipped(self):
        logp = torch.log(torch.tensor([[1.5]])).requires_grad_()
        loss, _ = ppo_clip_loss(logp, torch.zeros(1, 1), torch.ones(1, 1), 0.2, 0.28)
        loss.sum().backward()
        assert logp.grad.item() == 0.0

    def test_k3_kl(self):
        # d = ref - logp = log 2: e^d - d - 1 = 2 - 0.693147 - 1
        assert k3_kl(torch.tensor([0.0]), torch.tensor([math.log(2)])).item() == pytest.approx(1 - math.log(2))
        assert k3_kl(torch.tensor([0.3]), torch.tensor([0.3])).item() == 0.0

    def test_bad_settings_name_the_key(self):
        with pytest.raises(ValueError, match="algo.eps_high"):
            PolicyGradient(eps_high=1.5)
        with pytest.raises(ValueError, match="algo.kl_coef"):
            PolicyGradient(kl_coef=-1.0)
