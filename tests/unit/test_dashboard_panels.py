"""The dashboard's panels from a key set (rlvr_exp/dashboard/panels.py): panels name only logged
keys, a panel with none of its keys is left out and listed, keys are grouped the way they read."""
from __future__ import annotations

from rlvr_exp.dashboard.links import dashboard_lines
from rlvr_exp.dashboard.panels import Keys, build_sections

# What an analysis=off run logs: no position buckets, top-entropy, quantiles, defects or probe.
BASIC = {"train/accuracy", "reward/mean", "val/accuracy", "val/avg@4", "val/maj@4", "val/pass@1", "val/pass@16",
         "val/pass@4", "entropy/mean", "entropy/pos", "entropy/neg", "ppl/logppl_mean", "stage/smoothed",
         "stage/is_plateau", "shaper/none/active", "loss/policy", "time/step"}


def panels_by_title(sections: list[dict]) -> dict[str, dict]:
    return {p["title"]: {**p, "section": s["name"]} for s in sections for p in s["panels"]}


def test_every_panel_names_only_logged_keys_and_missing_ones_are_listed():
    sections, left_out = build_sections(Keys(metrics=frozenset(BASIC), media={}))
    panels = panels_by_title(sections)
    named = {k for p in panels.values() for k in p["keys"]}
    assert named <= BASIC and named == BASIC  # here every logged key has a panel
    assert [s["name"] for s in sections] == ["Accuracy", "Entropy", "Perplexity", "Stage", "Shapers", "Training", "Time"]
    assert panels["val: pass@k"]["keys"] == ["val/pass@1", "val/pass@4", "val/pass@16"]  # by k, not as text
    assert panels["entropy on correct (pos) and wrong (neg) samples"]["keys"] == ["entropy/pos", "entropy/neg"]
    left = {(x["section"], x["title"]) for x in left_out}
    assert ("Entropy", "entropy by relative-position bucket (0 = start of the response)") in left
    assert ("Probe set", "probe set: entropy change, correct vs wrong") in left
    assert ("Samples", "samples table") in left
    assert not any("pos_bucket" in k for k in named)


def test_named_benchmarks_get_their_own_avg_maj_and_pass_panels():
    keys = {"val/accuracy", "val/aime24/accuracy", "val/aime24/avg@8", "val/aime24/pass@8", "val/aime24/maj@8",
            "val/math500/accuracy", "val/math500/avg@1", "val/math500/pass@1"}
    panels = panels_by_title(build_sections(Keys(metrics=frozenset(keys), media={}))[0])
    assert panels["validation accuracy (mean over benchmarks, and each)"]["keys"] == [
        "val/accuracy", "val/aime24/accuracy", "val/math500/accuracy"]
    assert panels["aime24: avg@k and maj@k"]["keys"] == ["val/aime24/avg@8", "val/aime24/maj@8"]
    assert panels["math500: pass@k"]["keys"] == ["val/math500/pass@1"]
    assert "val: pass@k" not in panels


def test_shaper_panels_come_from_the_keys_not_from_shaper_names():
    keys = {"shaper/ppl/active", "shaper/ppl/weight_mean", "shaper/ppl/weight_min", "shaper/ppl/weight_max",
            "shaper/ppl/weight_std", "shaper/ppl/outlier_share", "shaper/ppl/logppl_mean", "shaper/newone/active",
            "shaper/newone/bonus_mean", "shaper/newone/bonus_max"}
    media = {"hist/shaping_weight": "histogram", "samples": "table-file", "hist/token_entropy": "histogram"}
    sections, _ = build_sections(Keys(metrics=frozenset(keys), media=media))
    panels = panels_by_title(sections)
    assert panels["shapers: share of steps active (1 = on)"]["keys"] == ["shaper/newone/active", "shaper/ppl/active"]
    assert panels["ppl: weight applied (mean, min, max, std)"]["keys"] == [
        "shaper/ppl/weight_mean", "shaper/ppl/weight_min", "shaper/ppl/weight_max", "shaper/ppl/weight_std"]
    assert panels["newone: bonus applied (mean, min, max, std)"]["keys"] == [
        "shaper/newone/bonus_mean", "shaper/newone/bonus_max"]
    assert panels["ppl: outlier_share"]["keys"] == ["shaper/ppl/outlier_share"]
    assert panels["ppl: logppl_mean"]["keys"] == ["shaper/ppl/logppl_mean"]  # one stat alone is no family
    assert panels["samples table (responses shaded by token entropy)"]["kind"] == "table"
    assert panels["shaping weight A'/A over tokens (histogram)"]["kind"] == "histogram"
    assert "advantage per response (histogram)" not in panels  # hist/advantage was not logged


def test_report_links_a_published_dashboard(tmp_path):
    run = tmp_path / "sweep" / "0"
    (run / "dashboard").mkdir(parents=True)
    assert dashboard_lines(run, run.parent) == []
    (tmp_path / "sweep" / "dashboard").mkdir()
    (tmp_path / "sweep" / "dashboard" / "urls.json").write_text(
        '{"workspace": "https://wandb.ai/me/p?nw=abc", "report": "https://wandb.ai/me/p/reports/x--id"}')
    assert dashboard_lines(run, run.parent) == [
        "", "Dashboard of `sweep`: [W&B workspace](https://wandb.ai/me/p?nw=abc), "
            "[W&B report](https://wandb.ai/me/p/reports/x--id)."]
