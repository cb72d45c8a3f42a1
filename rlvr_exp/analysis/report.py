"""The report of a finished run (``<run>/analysis/report.md`` + PNGs) and the comparison of runs.

report.md answers, with the run's own numbers, the three questions of arXiv 2508.02260
("Decomposing the Entropy-Performance Exchange", stage, instance- and token-level analyses):
(a) where the rising stage ends, (b) whether the rising-stage entropy fall is concentrated in
negative samples, (c) how entropy and its change depend on the token position and the sample
perplexity in the plateau. Conventions: a dump at step s belongs to the plateau when
s >= boundary (the first step a plateau-gated shaper is on); a change over a stage compares the
mean of the first ``EDGE_STEPS`` logged values (step >= 1) with the mean of the last
``EDGE_STEPS`` values at or before the stage's end; "within a stage" compares the later half of
its dump steps with the earlier half; relative positions (t-1)/L fall into ``N_BUCKETS`` equal
buckets of [0, 1); the low/high-logPPL split is at the median of the stage's samples (ties low).
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rlvr_exp.analysis import plots
from rlvr_exp.analysis.runs import Run, load_run, read_tokens, series, strategy_labels, token_decoder, wandb_run_id
from rlvr_exp.stages.detector import detect_offline_file

EDGE_STEPS = 5
N_BUCKETS = 5
TOP_SHARE = 0.2
TOP_TOKENS = 20
RISING, PLATEAU = "rising", "plateau"
FINAL_KEYS = ("val/accuracy_final", "val/accuracy_gain", "entropy/mean_final")
Rows = list[dict[str, Any]]


# ------------------------------------------------------------------------------------ numbers
def change_to(rows: Rows, key: str, end_step: int, edge: int = EDGE_STEPS) -> dict[str, float] | None:
    """Change of ``key`` from the start of training to ``end_step``: mean of the first ``edge``
    values (step >= 1) vs mean of the last ``edge`` values at or before ``end_step``."""
    steps, values = series(rows, key)
    keep = steps >= 1
    steps, values = steps[keep], values[keep]
    upto = values[steps <= end_step]
    if len(upto) == 0:
        return None
    start, end = float(values[:edge].mean()), float(upto[-edge:].mean())
    return {"start": start, "end": end, "change": end - start,
            "relative": (end - start) / start if start else float("nan")}


def value_at(rows: Rows, key: str, step: int) -> tuple[int, float] | None:
    """(step, value) of the last row at or before ``step`` that holds ``key``."""
    steps, values = series(rows, key)
    upto = np.flatnonzero(steps <= step)
    return (int(steps[upto[-1]]), float(values[upto[-1]])) if len(upto) else None


def stage_of(steps: np.ndarray, boundary: int | None) -> np.ndarray:
    """"plateau" where step >= boundary, else "rising" (all rising without a boundary)."""
    plateau = np.zeros(len(steps), bool) if boundary is None else np.asarray(steps) >= boundary
    return np.where(plateau, PLATEAU, RISING)


def halves(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the earlier and the later half of the distinct steps (the later half takes the
    middle one when odd); both empty with fewer than two distinct steps."""
    distinct = np.unique(steps)
    if len(distinct) < 2:
        return np.zeros(len(steps), bool), np.zeros(len(steps), bool)
    cut = distinct[len(distinct) // 2]
    return steps < cut, steps >= cut


def bucket_means(rel_position: np.ndarray, values: np.ndarray, n_buckets: int = N_BUCKETS) -> np.ndarray:
    """Mean of ``values`` per relative-position bucket [i/n, (i+1)/n); NaN for an empty bucket."""
    idx = np.clip((np.asarray(rel_position) * n_buckets).astype(np.int64), 0, n_buckets - 1)
    sums = np.bincount(idx, weights=values, minlength=n_buckets)
    counts = np.bincount(idx, minlength=n_buckets)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def per_sample(tokens: pa.Table) -> dict[str, np.ndarray]:
    """One entry per (step, sample): its step, correct, logppl, length and mean token entropy."""
    col = {name: tokens.column(name).to_numpy() for name in ("step", "sample", "entropy")}
    key = col["step"].astype(np.int64) * (int(col["sample"].max()) + 1) + col["sample"]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    out = {name: tokens.column(name).to_numpy()[first] for name in ("step", "correct", "logppl", "response_len")}
    out["entropy"] = np.bincount(inverse, weights=col["entropy"]) / np.bincount(inverse)
    return out


def median_split(logppl: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """Mean of ``values`` for samples with logPPL <= median ("low") and > median ("high")."""
    median = float(np.median(logppl))
    low = logppl <= median
    mean = lambda m: float(values[m].mean()) if m.any() else float("nan")
    return {"median": median, "low": mean(low), "high": mean(~low), "n_low": int(low.sum()), "n_high": int((~low).sum())}


def top_tokens(token_ids: np.ndarray, entropy: np.ndarray, share: float = TOP_SHARE,
               k: int = TOP_TOKENS) -> tuple[float, list[tuple[int, int, float]]]:
    """Tokens at or above the (1 - share) entropy quantile (linear interpolation): the threshold,
    and the ``k`` most frequent token ids there as (id, count, mean entropy), by count then entropy."""
    if len(entropy) == 0:
        return float("nan"), []
    threshold = float(np.quantile(entropy, 1.0 - share))
    sel = entropy >= threshold
    ids, inverse, counts = np.unique(token_ids[sel], return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=entropy[sel]) / counts
    order = np.lexsort((-means, -counts))[:k]
    return threshold, [(int(ids[i]), int(counts[i]), float(means[i])) for i in order]


def stage_windows(steps: np.ndarray, boundary: int | None) -> dict[str, np.ndarray]:
    """Masks of each stage present and, with >= 2 dump steps, of its earlier and later half."""
    out: dict[str, np.ndarray] = {}
    stages = stage_of(steps, boundary)
    for stage in (RISING, PLATEAU):
        mask = stages == stage
        if mask.any():
            out[stage] = mask
            first, second = halves(steps[mask])
            if first.any():
                out[f"{stage} 1st half"], out[f"{stage} 2nd half"] = mask.copy(), mask.copy()
                out[f"{stage} 1st half"][mask], out[f"{stage} 2nd half"][mask] = first, second
    return out


# ---------------------------------------------------------------------------------- sections
def _f(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None or not np.isfinite(x) else format(x, fmt)


def _d(x: float | None) -> str:
    return _f(x, "+.4f")


def find_boundary(run: Run) -> tuple[int | None, str]:
    """The plateau boundary from the offline detector with the run's config (else the logged one)."""
    kwargs = run.detector_kwargs()
    if kwargs is None:
        logged = value_at(run.rows, "stage/plateau_step", 10**12)
        return (int(logged[1]) if logged else None), "the logged `stage/plateau_step` (no detector config)"
    boundary = detect_offline_file(run.path / "metrics.jsonl", **kwargs)
    return boundary, "offline stage detector on metrics.jsonl with the run's config: " + ", ".join(
        f"{k}={v}" for k, v in kwargs.items())


def section_a(run: Run, boundary: int | None, how: str) -> str:
    last = int(max(r["step"] for r in run.rows))
    lines = ["## (a) Where does the rising stage end?", ""]
    if boundary is not None:
        lines.append(f"**The rising stage ends at step {boundary}**: the plateau starts at step {boundary} of {last}, "
                     f"found by the {how}.")
    else:
        lines.append(f"**No plateau detected within {last} steps** ({how}); the whole run counts as the rising stage.")
    logged = value_at(run.rows, "stage/plateau_step", last)
    lines += ["", f"- The online detector logged `stage/plateau_step` = {int(logged[1]) if logged else 'none'}."]
    steps, slope = series(run.rows, "stage/slope")
    if len(slope):
        i = int(np.argmin(slope))
        steepest = value_at(run.rows, "stage/steepest_slope", last)
        lines.append(f"- Steepest fall of the smoothed entropy: {slope[i]:+.5f} nats/step (the window ending at step {steps[i]})"
                     + (f"; noise-corrected (the detector's F): {steepest[1]:+.5f} nats/step." if steepest else "."))
    end = boundary if boundary is not None else last
    for key, name in (("entropy/mean", "Mean entropy (nats)"), ("train/accuracy", "Train accuracy")):
        c = change_to(run.rows, key, end)
        if c:
            lines.append(f"- {name}: {_f(c['start'])} at the start -> {_f(c['end'])} at step {end} ({_d(c['change'])}).")
    val0, val_end = value_at(run.rows, "val/accuracy", 0), value_at(run.rows, "val/accuracy", end)
    if val0 and val_end:
        lines.append(f"- Validation accuracy: {val0[1]:.3f} at step 0 -> {val_end[1]:.3f} at step {val_end[0]}.")
    return "\n".join(lines)


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
        lines += ["", f"**{answer}** (batch metrics): negative samples {_f(neg['start'])} -> {_f(neg['end'])} nats "
                  f"({_d(neg['change'])}, {neg['relative']:+.1%}); positive samples {_f(pos['start'])} -> "
                  f"{_f(pos['end'])} nats ({_d(pos['change'])}, {pos['relative']:+.1%})."]
    else:
        lines += ["", "`entropy/pos` / `entropy/neg` were not logged: no answer from the batch metrics."]
    ppos, pneg = value_at(run.rows, "probe/entropy_change_pos", end), value_at(run.rows, "probe/entropy_change_neg", end)
    if ppos and pneg:
        answer = _fell_more(pneg[1], ppos[1])
        lines += ["", f"**{answer}** (fixed probe set, change since capture at step {min(ppos[0], pneg[0])}): "
                  f"negative samples {_d(pneg[1])} nats, positive samples {_d(ppos[1])} nats."]
        lpos, lneg = value_at(run.rows, "probe/logp_change_pos", end), value_at(run.rows, "probe/logp_change_neg", end)
        if lpos and lneg:
            lines[-1] += f" Token log-prob change: negative {_d(lneg[1])}, positive {_d(lpos[1])}."
    else:
        lines += ["", "Probe-set metrics (`probe/entropy_change_pos`, `probe/entropy_change_neg`) were not logged: "
                  "no probe panel, no probe answer."]
    return "\n".join(lines)


def _position_part(tokens: pa.Table, windows: dict[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
    rel, ent = tokens.column("rel_position").to_numpy(), tokens.column("entropy").to_numpy()
    prof = {name: bucket_means(rel[m], ent[m]) for name, m in windows.items()}
    cols = [c for c in (RISING, PLATEAU) if c in prof]
    nan = np.full(N_BUCKETS, np.nan)
    delta = {c: prof[f"{c} 2nd half"] - prof[f"{c} 1st half"] if f"{c} 1st half" in prof else nan for c in cols}
    both = len(cols) == 2
    rows = ["| position | " + " | ".join(f"{c} | Δ within {c}" for c in cols) + (" | plateau − rising" if both else "")
            + " |", "|" + "---|" * (1 + 2 * len(cols) + both)]
    for i, label in enumerate(plots.bucket_labels(N_BUCKETS)):
        cells = [f"{_f(prof[c][i])} | {_d(delta[c][i])}" for c in cols]
        cells += [_d(prof[PLATEAU][i] - prof[RISING][i])] if both else []
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    st = cols[-1]
    late_early = {c: prof[c][-1] - prof[c][0] for c in cols}
    text = ["### Position (mean token entropy in nats; Δ within a stage = later half of its dumps − earlier half)", "",
            *rows, "",
            f"In the {st} stage the last position bucket has entropy {_f(prof[st][-1])} vs {_f(prof[st][0])} in the "
            f"first (late − early = {_d(late_early[st])}" + (f"; rising stage: {_d(late_early[RISING])})." if both else ").")
            + f" Within the {st} stage entropy changed by {_d(delta[st][-1])} at the end vs {_d(delta[st][0])} at the "
              "start of the response."]
    return "\n".join(text), prof


def _ppl_part(samples: dict[str, np.ndarray], boundary: int | None) -> str:
    stages = stage_of(samples["step"], boundary)
    lines = ["### Perplexity (per-sample mean token entropy; samples split at the stage's median logPPL)", "",
             "| stage | logPPL group | samples | mean logPPL | accuracy | mean entropy (nats) | Δ within stage |",
             "|---|---|---|---|---|---|---|"]
    mean = lambda x: float(x.mean()) if len(x) else float("nan")
    summary = []
    for stage in (st for st in (RISING, PLATEAU) if (stages == st).any()):
        lp, ent, ok, steps = (samples[k][stages == stage] for k in ("logppl", "entropy", "correct", "step"))
        split = median_split(lp, ent)
        low = lp <= split["median"]
        first, second = halves(steps)
        deltas = {}
        for name, g, cmp in (("low", low, "≤"), ("high", ~low, ">")):
            deltas[name] = mean(ent[g & second]) - mean(ent[g & first])
            lines.append(f"| {stage} | {name} ({cmp} {split['median']:.3f}) | {int(g.sum())} | {_f(mean(lp[g]))} | "
                         f"{_f(mean(ok[g].astype(float)))} | {_f(split[name])} | {_d(deltas[name])} |")
        summary.append(f"{stage}: low-logPPL samples {_f(split['low'])} vs high-logPPL {_f(split['high'])} nats "
                       f"(Δ within stage {_d(deltas['low'])} vs {_d(deltas['high'])})")
    return "\n".join(lines + ["", "Entropy by perplexity: " + "; ".join(summary) + "."])


def section_c(tokens: pa.Table, samples: dict[str, np.ndarray], boundary: int | None) -> tuple[str, dict]:
    windows = stage_windows(tokens.column("step").to_numpy(), boundary)
    position, profiles = _position_part(tokens, windows)
    head = ["## (c) How do entropy and its change depend on position and perplexity in the plateau?", ""]
    if boundary is None:
        head.append("No plateau was detected, so only the rising stage is described (its dumps are all of them).")
    elif PLATEAU not in windows:
        head.append(f"No token dump falls in the plateau (step >= {boundary}): only the rising stage is described.")
    return "\n\n".join(["\n".join(head).rstrip(), position, _ppl_part(samples, boundary)]), profiles


def section_tokens(tokens: pa.Table, boundary: int | None, decode: Callable[[int], str] | None,
                   csv_path: Path) -> str:
    ids, ent = tokens.column("token_id").to_numpy(), tokens.column("entropy").to_numpy()
    stages = stage_of(tokens.column("step").to_numpy(), boundary)
    text = (lambda i: repr(decode(i))) if decode else (lambda i: f"id {i}")
    lines = [f"## High-entropy tokens per stage (top {TOP_SHARE:.0%} by entropy within each stage's dumps)", ""]
    if decode is None:
        lines += ["No checkpoint with a tokenizer: tokens are shown as ids.", ""]
    records = []
    for stage in (RISING, PLATEAU):
        m = stages == stage
        if not m.any():
            continue
        threshold, top = top_tokens(ids[m], ent[m])
        n_top = int((ent[m] >= threshold).sum())
        lines += [f"### {stage} stage: {n_top} of {int(m.sum())} tokens have entropy >= {threshold:.3f} nats", "",
                  "| rank | token | count | share of high-entropy tokens | mean entropy (nats) |", "|---|---|---|---|---|"]
        for rank, (tid, count, mean) in enumerate(top, 1):
            shown = text(tid).replace("|", "\\|").replace("`", "'")
            lines.append(f"| {rank} | `{shown}` | {count} | {count / n_top:.1%} | {mean:.3f} |")
            records.append([stage, rank, tid, text(tid), count, f"{count / n_top:.4f}", f"{mean:.4f}"])
        lines.append("")
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([["stage", "rank", "token_id", "token", "count", "share", "mean_entropy"], *records])
    return "\n".join(lines + [f"Saved as `{csv_path.name}`."])


def section_defects(rows: Rows, keys: dict[str, str], boundary: int | None) -> str:
    lines = ["## Defect rates", ""]
    missing = [k for k in plots.DEFECT_KEYS if k not in keys]
    if missing:
        lines.append("Not logged (no curve): " + ", ".join(f"`{k}`" for k in missing) + ".")
    end = boundary if boundary is not None else int(max(r["step"] for r in rows))
    for key, label in keys.items():
        c = change_to(rows, key, end)
        if c:
            lines.append(f"- {label}: {c['start']:.3f} at the start -> {c['end']:.3f} at step {end} ({c['change']:+.3f}).")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- entry points
def log_to_wandb(run: Run, images: dict[str, Path]) -> None:
    """Log the PNGs to the run's (offline) W&B run, resumed by id; a no-op without one."""
    run_id = wandb_run_id(run.path)
    if run_id is None:
        return
    import wandb

    project = run.config.get("logger", {}).get("project") or "rlvr_exp"
    wb = wandb.init(id=run_id, resume="allow", dir=str(run.path), mode="offline", project=project)
    try:
        # after the run's last step: W&B drops rows logged below a resumed run's step
        step = int(max(r["step"] for r in run.rows)) + 1
        wb.log({f"analysis/{name}": wandb.Image(str(path)) for name, path in images.items()}, step=step)
    finally:
        wb.finish()


def analyze_run(run_dir: Path, wandb: bool) -> Path:
    """Write ``<run_dir>/analysis/report.md``, its PNGs and the token CSV; returns the report
    path. Raises AnalysisInputError (before writing anything) without metrics.jsonl or token dumps."""
    run = load_run(Path(run_dir))
    tokens = read_tokens(run)
    out = run.path / "analysis"
    out.mkdir(exist_ok=True)
    boundary, how = find_boundary(run)
    samples = per_sample(tokens)
    text_c, profiles = section_c(tokens, samples, boundary)
    images = {"accuracy_entropy": plots.accuracy_entropy(run.rows, boundary, out / "accuracy_entropy.png")}
    images["entropy_pos_neg"], has_probe = plots.pos_neg_entropy(run.rows, boundary, out / "entropy_pos_neg.png")
    images["entropy_by_position"], has_buckets = plots.entropy_by_position(
        profiles, run.rows, boundary, out / "entropy_by_position.png")
    images["logppl_by_correctness"] = plots.logppl_by_correctness(
        samples, stage_of(samples["step"], boundary), out / "logppl_by_correctness.png")
    keys = plots.defect_keys(run.rows)
    if keys:
        images["defects"] = plots.defects(run.rows, keys, boundary, out / "defects.png")
    skipped = [] if has_probe else ["probe-set panel (no `probe/entropy_change_*`)"]
    skipped += [] if has_buckets else ["per-step position-bucket panel (no `entropy/pos_bucket_<i>`)"]
    skipped += [] if keys else ["defect plot (no `defect/*` or `train/clipped_share`)"]
    label = strategy_labels([run])[0]
    header = [f"# Analysis of `{run.path}`", "",
              f"Strategy: **{label}**, seed {run.seed}, {len(run.rows)} logged steps, {len(run.token_files)} token "
              f"dumps ({tokens.num_rows} tokens, {len(samples['step'])} samples).", "",
              "Plots: " + ", ".join(f"[{p.name}]({p.name})" for p in images.values()) + ".", "",
              "Skipped: " + ("; ".join(skipped) if skipped else "nothing") + "."]
    parts = ["\n".join(header), section_a(run, boundary, how), section_b(run, boundary), text_c,
             section_tokens(tokens, boundary, token_decoder(run.path), out / "high_entropy_tokens.csv"),
             section_defects(run.rows, keys, boundary)]
    report = out / "report.md"
    report.write_text("\n\n".join(parts) + "\n")
    if wandb:
        log_to_wandb(run, images)
    return report


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "n/a"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def compare_runs(run_dirs: list[Path], out_dir: Path) -> str:
    """Write ``out_dir/comparison.md`` and ``out_dir/compare_curves.png`` for several run folders
    (a failed job, without summary.json or even metrics.jsonl, is listed, not fatal); returns the
    markdown table of final metrics per strategy: n seeds, mean ± std (ddof 1) over seeds."""
    runs = [load_run(Path(d)) for d in run_dirs if (Path(d) / "metrics.jsonl").is_file()]
    failed = [f"`{d}`: no metrics.jsonl (failed before its first step)" for d in run_dirs
              if not (Path(d) / "metrics.jsonl").is_file()]
    labels = strategy_labels(runs)
    failed += [f"`{r.path}` ({label}): no summary.json (failed or unfinished)"
               for r, label in zip(runs, labels) if r.summary is None]
    head = "| strategy | n seeds | " + " | ".join(f"{k} (mean ± std)" for k in FINAL_KEYS) + " | unfinished |"
    table = [head, "|---|---|" + "---|" * len(FINAL_KEYS) + "---|"]
    for label in dict.fromkeys(labels):
        group = [r for r, lab in zip(runs, labels) if lab == label]
        done = [r.summary for r in group if r.summary is not None]
        cells = [_mean_std([s[k] for s in done if k in s]) for k in FINAL_KEYS]
        table.append(f"| {label} | {len(done)} | " + " | ".join(cells) + f" | {len(group) - len(done)} |")
    markdown = "\n".join(table)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if runs:
        plots.compare_curves(list(zip(labels, [r.rows for r in runs])), out_dir / "compare_curves.png")
    body = [f"# Comparison of {len(run_dirs)} runs", "", markdown, "",
            "Failed or unfinished jobs: " + ("none." if not failed else ""), *[f"- {f}" for f in failed], "",
            "Runs: " + ", ".join(f"`{r.path}`" for r in runs), "", "![curves](compare_curves.png)"]
    (out_dir / "comparison.md").write_text("\n".join(body) + "\n")
    return markdown
