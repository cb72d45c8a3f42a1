"""Apply several shapers in order, each switched on by its own schedule.

Math: with active shapers s_1..s_n (in config order) and start mask M_0 = loss_mask & response_mask,

    (A_k, M'_k) = s_k(ctx with advantages A_{k-1}, loss_mask M_{k-1}),  A_0 = ctx.advantages
    M_k = M_{k-1} & M'_k          (M'_k = None leaves the mask as it is)

The stack returns A_n and M_n, and the per-token loss terms of the active entries chained in order
(rlvr_exp/algos/token_terms.py ``chain``; None when no active entry has one). Order matters when
shapers do not commute (PPL then position scales the weighted advantage and caps the bonus against
it; position then PPL scales the bonus too).

Conventions: each entry logs ``shaper/<name>/active`` (1.0 or 0.0) every step and, when active,
its own metrics under ``shaper/<name>/``. Inactive entries are skipped entirely. With no active
entry the input advantages are returned as they are (the same tensor). The returned loss mask is
never None. Names must be unique and each shaper's ``requires`` a subset of ``OPTIONAL_INPUTS``.
"""
from __future__ import annotations

from rlvr_exp.algos.token_terms import TokenLoss, chain
from rlvr_exp.shapers.base import OPTIONAL_INPUTS, Shaper, ShaperContext, ShaperOutput
from rlvr_exp.stages.base import Schedule, StageState


class ShaperStack:
    """An ordered list of (name, shaper, schedule); called once per step by the trainer."""

    def __init__(self, entries: list[tuple[str, Shaper, Schedule]]):
        names = [name for name, _, _ in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"shaper names must be unique, got duplicates {dupes}")
        for name, shaper, _ in entries:
            unknown = set(shaper.requires) - OPTIONAL_INPUTS
            if unknown:
                raise ValueError(
                    f"shaper {name!r} requires unknown inputs {sorted(unknown)}; "
                    f"valid inputs are {sorted(OPTIONAL_INPUTS)}"
                )
        self.entries = list(entries)

    @property
    def requires(self) -> frozenset[str]:
        """Union of the entries' ``requires``."""
        return frozenset().union(*(shaper.requires for _, shaper, _ in self.entries))

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.entries]

    def __call__(self, ctx: ShaperContext, stage_state: StageState) -> ShaperOutput:
        mask = ctx.loss_mask.bool() & ctx.response_mask.bool()  # [B, T]
        cur = ctx.replace(loss_mask=mask)
        metrics: dict[str, float] = {}
        terms: list[tuple[str, TokenLoss]] = []
        for name, shaper, schedule in self.entries:
            active = bool(schedule.active(ctx.step, stage_state))
            metrics[f"shaper/{name}/active"] = 1.0 if active else 0.0
            if not active:
                continue
            out = shaper(cur)
            if out.loss_mask is not None:
                mask = mask & out.loss_mask.bool()
            cur = cur.replace(advantages=out.advantages, loss_mask=mask)
            metrics.update({f"shaper/{name}/{key}": float(v) for key, v in out.metrics.items()})
            if out.token_loss is not None:
                terms.append((name, out.token_loss))
        return ShaperOutput(advantages=cur.advantages, loss_mask=mask, metrics=metrics, token_loss=chain(terms))
