"""Report section (b): does entropy fall more on negative than on positive samples in the rising
stage? From the batch metrics ``entropy/{pos,neg}`` and the fixed probe set with its prompt-bootstrap
intervals (docs/method.md section 7; rlvr_exp/analysis/probe.py)."""
from __future__ import annotations

from typing import Any

from rlvr_exp.analysis.report_numbers import EDGE_STEPS, Rows, change_to, fmt, fmt_delta, value_at
from rlvr_exp.analysis.runs import Run


def _fell_more(neg: float, pos: float) -> str:
    if neg < min(pos, 0.0):
        return "Yes"
    return "No" if neg >= pos else "No: entropy did not fall on negative samples (it rose less than on positive ones)"


def _at(rows: Rows, key: str, end: int) -> float | None:
    found = value_at(rows, key, end)
    return found[1] if found else None


def with_interval(rows: Rows, key: str, end: int) -> str:
    """``+0.1234 [95% CI -0.0100, +0.2000]`` from ``key`` and its ``_lo``/``_hi`` (the interval
    left out when the run did not log one)."""
    value, lo, hi = (_at(rows, k, end) for k in (key, f"{key}_lo", f"{key}_hi"))
    return fmt_delta(value) + (f" [95% CI {fmt_delta(lo)}, {fmt_delta(hi)}]" if lo is not None and hi is not None else "")


def noise_verdict(rows: Rows, key: str, end: int, what: str) -> str:
    """Whether the interval of a negative-minus-positive difference ``key`` excludes 0 (said as
    below/above, which holds whether both changes are falls or rises)."""
    lo, hi = _at(rows, f"{key}_lo", end), _at(rows, f"{key}_hi", end)
    if lo is None or hi is None:
        return "no interval logged (a run from before the probe bootstrap)"
    if hi < 0 or lo > 0:
        side = "below" if hi < 0 else "above"
        return (f"the {what} change on negative samples is {side} that on positive samples beyond the bootstrap "
                "noise (the interval excludes 0)")
    return "no difference beyond the bootstrap noise (the interval includes 0)"


def _capture(rows: Rows, end: int) -> str:
    """Which responses the probe holds and when they were captured (from ``probe/capture_*``)."""
    first = [_at(rows, f"probe/capture_first_{s}", end) for s in ("pos", "neg")]
    last = [_at(rows, f"probe/capture_last_{s}", end) for s in ("pos", "neg")]
    if None in first + last:
        return "capture step not logged (a run from before `probe/capture_*`)"
    a, b = int(min(first)), int(max(last))
    sizes = "; ".join(f"{int(_at(rows, f'probe/responses_{s}', end))} {name} responses from "
                      f"{int(_at(rows, f'probe/prompts_{s}', end))} prompts"
                      for s, name in (("neg", "negative"), ("pos", "positive")))
    return f"captured at step {a}" + (f"-{b}" if b != a else "") + f"; {sizes}"


def _bootstrap_note(config: dict[str, Any]) -> str:
    analysis = config.get("analysis") if isinstance(config.get("analysis"), dict) else {}
    resamples, seed = analysis.get("probe_bootstrap_resamples"), analysis.get("probe_bootstrap_seed")
    how = f"{resamples} resamples, seed {seed}" if resamples is not None else "resamples and seed not in the config"
    return (f"Intervals: 95% percentile bootstrap over the probe's prompts (each prompt's responses resampled "
            f"together, {how}; `analysis.probe_bootstrap_*`).")


def _probe_part(run: Run, end: int) -> list[str]:
    rows = run.rows
    ppos, pneg = value_at(rows, "probe/entropy_change_pos", end), value_at(rows, "probe/entropy_change_neg", end)
    if not (ppos and pneg):
        return ["", "Probe-set metrics (`probe/entropy_change_pos`, `probe/entropy_change_neg`) were not logged: "
                "no probe panel, no probe answer."]
    step = min(ppos[0], pneg[0])  # the probe step the numbers come from (the last at or before `end`)
    gap = "probe/entropy_change_neg_minus_pos"
    text = (f"**{_fell_more(pneg[1], ppos[1])}** (fixed probe set, change from capture to step {step}; "
            f"{_capture(rows, end)}): negative samples {with_interval(rows, 'probe/entropy_change_neg', end)} nats, "
            f"positive samples {with_interval(rows, 'probe/entropy_change_pos', end)} nats; negative − positive "
            f"{with_interval(rows, gap, end)}: {noise_verdict(rows, gap, end, 'entropy')}.")
    if value_at(rows, "probe/logp_change_pos", end) and value_at(rows, "probe/logp_change_neg", end):
        text += (f" Token log-prob change: negative {with_interval(rows, 'probe/logp_change_neg', end)}, positive "
                 f"{with_interval(rows, 'probe/logp_change_pos', end)}, negative − positive "
                 f"{with_interval(rows, 'probe/logp_change_neg_minus_pos', end)}.")
    return ["", text, "", _bootstrap_note(run.config)]


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
    return "\n".join(lines + _probe_part(run, end))
