"""The dashboard's sections and panels, as plain data, from the metric keys that runs really log.

A pure function of the key set: every panel names only keys in it, and a panel whose keys are all
missing (a run with ``analysis=off`` logs no ``entropy/pos_bucket_<i>``, no ``probe/*``) is left
out of the sections and listed in ``left_out`` with the keys it wanted. The sections follow the
paper's figures (arXiv 2508.02260; docs/method.md sections 7-8 for the metrics): accuracy,
entropy, perplexity, the stage, the shapers, the probe set, defects, the samples table, then
training health and time.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

LINE, SCALAR, TABLE, HISTOGRAM = "line", "scalar", "table", "histogram"
STATS = ("mean", "min", "max", "std")  # shapers' prefixed_stats suffixes, in the order drawn


@dataclass(frozen=True)
class Panel:
    """``kind``: line (keys over steps, arms averaged over seeds with their spread), scalar (the
    last value per arm), histogram (a logged ``wandb.Histogram`` over steps), table (a logged
    ``wandb.Table``)."""

    title: str
    keys: tuple[str, ...]
    kind: str = LINE


@dataclass(frozen=True)
class Keys:
    """What runs log: numeric metric keys (``metrics.jsonl``) and media keys -> W&B media type."""

    metrics: frozenset[str]
    media: dict[str, str]


Section = tuple[str, list[Panel]]
Wanted = list[tuple[str, tuple[str, ...]]]  # (title, keys or patterns) of panels left out


def _k(text: str) -> tuple[int, str]:
    """Sort key: the trailing number of a key (``pass@16`` after ``pass@2``), then the key."""
    found = re.search(r"(\d+)$", text)
    return (int(found.group(1)) if found else -1, text)


def matching(keys: Iterable[str], pattern: str) -> tuple[str, ...]:
    rx = re.compile(pattern)
    return tuple(sorted((k for k in keys if rx.fullmatch(k)), key=_k))


class _Builder:
    """Collects one section's panels and what was left out."""

    def __init__(self, keys: Keys, left_out: Wanted) -> None:
        self.keys, self.left_out, self.panels = keys, left_out, []

    def fixed(self, title: str, *wanted: str, kind: str = LINE) -> None:
        present = tuple(k for k in wanted if k in self.keys.metrics)
        self._add(title, present, wanted, kind)

    def pattern(self, title: str, pattern: str, kind: str = LINE) -> None:
        self._add(title, matching(self.keys.metrics, pattern), (pattern,), kind)

    def media(self, title: str, key: str, media_type: str, kind: str) -> None:
        present = (key,) if self.keys.media.get(key) == media_type else ()
        self._add(title, present, (f"{key} ({media_type})",), kind)

    def _add(self, title: str, present: tuple[str, ...], wanted: tuple[str, ...], kind: str) -> None:
        if present:
            self.panels.append(Panel(title, present, kind))
        else:
            self.left_out.append((title, wanted))


def _benchmarks(keys: frozenset[str]) -> list[str]:
    """Key prefixes of the validation sets: ``val/`` for the single set, ``val/<name>/`` per named set."""
    named = sorted({m.group(1) for k in keys if (m := re.fullmatch(r"val/([^/]+)/accuracy", k))})
    return (["val/"] if "val/accuracy" in keys and not named else []) + [f"val/{name}/" for name in named]


def accuracy(b: _Builder) -> None:
    b.fixed("train accuracy and reward", "train/accuracy", "reward/mean")
    b.pattern("validation accuracy (mean over benchmarks, and each)", r"val/accuracy|val/[^/]+/accuracy")
    for prefix in _benchmarks(b.keys.metrics):
        name = prefix.strip("/").split("/")[-1]
        b.pattern(f"{name}: avg@k and maj@k", re.escape(prefix) + r"(avg|maj)@\d+")
        b.pattern(f"{name}: pass@k", re.escape(prefix) + r"pass@\d+")


def entropy(b: _Builder) -> None:
    b.fixed("mean token entropy (nats)", "entropy/mean")
    b.fixed("entropy on correct (pos) and wrong (neg) samples", "entropy/pos", "entropy/neg")
    b.pattern("entropy by relative-position bucket (0 = start of the response)", r"entropy/pos_bucket_\d+")
    b.fixed("top-20% entropy tokens: share of response tokens", "entropy/top_share")
    b.fixed("top-20% entropy tokens: mean relative position", "entropy/top_rel_position")
    b.media("token entropy histogram", "hist/token_entropy", "histogram", HISTOGRAM)


def perplexity(b: _Builder) -> None:
    b.fixed("logPPL by correctness (mean)", "ppl/logppl_pos_mean", "ppl/logppl_neg_mean", "ppl/logppl_mean")
    b.pattern("logPPL quantiles, correct samples", r"ppl/logppl_pos_q\d+")
    b.pattern("logPPL quantiles, wrong samples", r"ppl/logppl_neg_q\d+")


def stage(b: _Builder) -> None:
    b.fixed("smoothed stage signal (entropy)", "stage/smoothed")
    b.fixed("slope of the smoothed signal, and the steepest so far", "stage/slope", "stage/steepest_slope")
    b.fixed("noise of the signal", "stage/noise")
    b.fixed("plateau reached (0 -> 1 at the plateau step)", "stage/is_plateau")
    b.fixed("plateau step", "stage/plateau_step", kind=SCALAR)


def shapers(b: _Builder) -> None:
    b.pattern("shapers: share of steps active (1 = on)", r"shaper/[^/]+/active")
    names = sorted({k.split("/")[1] for k in b.keys.metrics if re.fullmatch(r"shaper/[^/]+/.+", k)})
    for name in names:
        own = [k for k in b.keys.metrics if k.startswith(f"shaper/{name}/") and k != f"shaper/{name}/active"]
        stat = re.compile(rf"shaper/{re.escape(name)}/(.+)_({'|'.join(STATS)})")
        found = [m.group(1) for k in own if (m := stat.fullmatch(k))]
        families = sorted(f for f in set(found) if found.count(f) > 1)  # weight_{mean,min,max,std}: one panel
        for family in families:
            b.fixed(f"{name}: {family} applied (mean, min, max, std)", *(f"shaper/{name}/{family}_{s}" for s in STATS))
        for key in sorted(k for k in own if not any(k.startswith(f"shaper/{name}/{f}_") for f in families)):
            b.fixed(f"{name}: {key.rsplit('/', 1)[1]}", key)
    b.media("shaping weight A'/A over tokens (histogram)", "hist/shaping_weight", "histogram", HISTOGRAM)
    b.media("advantage per response (histogram)", "hist/advantage", "histogram", HISTOGRAM)


def probe(b: _Builder) -> None:
    for what in ("entropy", "entropy_change", "logp", "logp_change"):
        b.fixed(f"probe set: {what.replace('_', ' ')}, correct vs wrong", f"probe/{what}_pos", f"probe/{what}_neg")


def defects(b: _Builder) -> None:
    b.pattern("defects: share of samples", r"defect/.+|train/clipped_share")


def samples(b: _Builder) -> None:
    for key in sorted(k for k, t in b.keys.media.items() if t == "table-file"):
        b.media(f"{key} table (responses shaded by token entropy)", key, "table-file", TABLE)
    if not any(t == "table-file" for t in b.keys.media.values()):
        b.left_out.append(("samples table", ("samples (table-file)",)))


def training(b: _Builder) -> None:
    b.pattern("loss", r"loss/.+")
    b.fixed("gradient norm", "train/grad_norm")
    b.fixed("KL to the reference", "train/kl")
    b.fixed("learning rate", "train/lr")
    b.fixed("response length", "train/response_len_mean", "train/response_len_max", "val/response_len_mean")
    b.fixed("groups with no signal (all correct / all wrong)", "train/all_correct_share", "train/all_wrong_share")
    b.fixed("tokens in the loss", "train/loss_token_share")


def timing(b: _Builder) -> None:
    b.pattern("seconds per step, by phase", r"time/.+")


SECTIONS: tuple[tuple[str, Callable[[_Builder], None]], ...] = (
    ("Accuracy", accuracy), ("Entropy", entropy), ("Perplexity", perplexity), ("Stage", stage),
    ("Shapers", shapers), ("Probe set", probe), ("Defects", defects), ("Samples", samples),
    ("Training", training), ("Time", timing),
)


def build_sections(keys: Keys) -> tuple[list[dict], list[dict]]:
    """(sections, left_out) as JSON-ready data: ``[{"name", "panels": [{"title", "keys", "kind"}]}]``
    (sections without panels dropped) and ``[{"section", "title", "wanted"}]``."""
    sections, left_out = [], []
    for name, fill in SECTIONS:
        wanted: Wanted = []
        builder = _Builder(keys, wanted)
        fill(builder)
        if builder.panels:
            sections.append({"name": name, "panels": [{**asdict(p), "keys": list(p.keys)} for p in builder.panels]})
        left_out += [{"section": name, "title": title, "wanted": list(w)} for title, w in wanted]
    return sections, left_out
