"""Report section (b): does entropy fall more on negative than on positive samples in the rising
stage? From the batch metrics ``entropy/{pos,neg}`` and the fixed probe set (docs/method.md section 7)."""
from __future__ import annotations

from rlvr_exp.analysis.report_numbers import EDGE_STEPS, change_to, fmt, fmt_delta, value_at
from rlvr_exp.analysis.runs import Run


def _fell_more(neg: float, pos: float) -> str:
    if neg < min(pos, 0.0):
        return "Yes"
    return "No" if neg >= pos else "No: entropy did not fall on negative samples (it rose less than on positive ones)"


def section_b(run: Run, boundary: int | None) -> str:
    end = boundary if boundary is not None else int(max(r["step"] for r in run.rows))
    lines = ["## (b) Does entropy fall more on negative than on positive samples in the rising stage?", "",
             f"Rising stage: steps 1-{end}. Each change is the mean of the last {EDGE_STEPS} logged values at or "
             f"before step {end} minus the mean of the first {EDGE_STEPS}."]
    pos, neg = change_to(run.rows, "entropy/pos", end), change_to(run.rows, "entropy/neg", end)
    if pos and neg:
        answer = _fell_more(neg["change"], pos["change"])
        lines += ["", f"**{answer}** (batch metrics): negative samples {fmt(neg['start'])} -> {fmt(neg['end'])} nats "
                  f"({fmt_delta(neg['change'])}, {neg['relative']:+.1%}); positive samples {fmt(pos['start'])} -> "
                  f"{fmt(pos['end'])} nats ({fmt_delta(pos['change'])}, {pos['relative']:+.1%})."]
    else:
        lines += ["", "`entropy/pos` / `entropy/neg` were not logged: no answer from the batch metrics."]
    ppos, pneg = value_at(run.rows, "probe/entropy_change_pos", end), value_at(run.rows, "probe/entropy_change_neg", end)
    if ppos and pneg:
        answer = _fell_more(pneg[1], ppos[1])
        lines += ["", f"**{answer}** (fixed probe set, change since capture at step {min(ppos[0], pneg[0])}): "
                  f"negative samples {fmt_delta(pneg[1])} nats, positive samples {fmt_delta(ppos[1])} nats."]
        lpos, lneg = value_at(run.rows, "probe/logp_change_pos", end), value_at(run.rows, "probe/logp_change_neg", end)
        if lpos and lneg:
            lines[-1] += f" Token log-prob change: negative {fmt_delta(lneg[1])}, positive {fmt_delta(lpos[1])}."
    else:
        lines += ["", "Probe-set metrics (`probe/entropy_change_pos`, `probe/entropy_change_neg`) were not logged: "
                  "no probe panel, no probe answer."]
    return "\n".join(lines)
