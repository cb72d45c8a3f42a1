"""The report of a finished run: ``<run>/analysis/report.md``, its PNG plots and
``high_entropy_tokens.csv``, optionally uploaded to the run's W&B run.

report.md answers, with the run's own numbers, the three questions of arXiv 2508.02260
("Decomposing the Entropy-Performance Exchange", stage, instance- and token-level analyses), one
module per section: (a) where the rising stage ends (:mod:`stage_section`), (b) whether the
rising-stage entropy fall is concentrated in negative samples (:mod:`negative_section`), (c) how
entropy and its change depend on the token position and the sample perplexity in the plateau
(:mod:`position_ppl_section`), then where the update lands, by position, logPPL and entropy, from
the record's ``delta_logp`` (:mod:`update_section`), the high-entropy tokens (:mod:`token_section`) and the defect
rates (:mod:`defect_section`). The numbers are in :mod:`report_numbers`; several runs are compared
by :mod:`compare`.
"""
from __future__ import annotations

from pathlib import Path

from rlvr_exp import run_files as rf
from rlvr_exp.analysis import plots
from rlvr_exp.analysis.defect_section import section_defects
from rlvr_exp.analysis.negative_section import section_b
from rlvr_exp.analysis.position_ppl_section import section_c
from rlvr_exp.analysis.report_numbers import per_sample, stage_of
from rlvr_exp.analysis.runs import load_run, read_tokens, strategy_labels, token_decoder
from rlvr_exp.analysis.stage_section import find_boundary, section_a
from rlvr_exp.analysis.token_section import section_tokens, write_token_csv
from rlvr_exp.analysis.update_section import has_update_column, section_d
from rlvr_exp.analysis.wandb_upload import log_to_wandb
from rlvr_exp.dashboard.links import dashboard_lines

TOKEN_CSV = "high_entropy_tokens.csv"


def analyze_run(run_dir: Path, wandb: bool) -> Path:
    """Write ``<run_dir>/analysis/report.md``, its PNGs and the token CSV; returns the report
    path. Raises AnalysisInputError (before writing anything) without metrics.jsonl or token dumps."""
    run = load_run(Path(run_dir))
    tokens = read_tokens(run)
    out = run.path / rf.ANALYSIS
    out.mkdir(exist_ok=True)
    boundary, how = find_boundary(run)
    samples = per_sample(tokens)
    text_c, profiles = section_c(tokens, samples, boundary)
    text_tokens, token_rows = section_tokens(tokens, boundary, token_decoder(run.path), TOKEN_CSV)
    write_token_csv(out / TOKEN_CSV, token_rows)
    temperature = (run.config.get("trainer") or {}).get("temperature")
    images = {"accuracy_entropy": plots.accuracy_entropy(run.rows, boundary, out / "accuracy_entropy.png",
                                                         temperature if isinstance(temperature, (int, float)) else None)}
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
    skipped += [] if has_update_column(tokens) else ["update tables (no `delta_logp` in the token records)"]
    label = strategy_labels([run])[0]
    header = [f"# Analysis of `{run.path}`", "",
              f"Strategy: **{label}**, seed {run.seed}, {len(run.rows)} logged steps, {len(run.token_files)} token "
              f"dumps ({tokens.num_rows} tokens, {len(samples['step'])} samples).", "",
              "Plots: " + ", ".join(f"[{p.name}]({p.name})" for p in images.values()) + ".", "",
              "Skipped: " + ("; ".join(skipped) if skipped else "nothing") + ".",
              *dashboard_lines(run.path, run.path.parent)]
    parts = ["\n".join(header), section_a(run, boundary, how), section_b(run, boundary), text_c,
             section_d(tokens, boundary), text_tokens, section_defects(run.rows, keys, boundary)]
    report = out / "report.md"
    report.write_text("\n\n".join(parts) + "\n")
    if wandb:
        log_to_wandb(run, images)
    return report
