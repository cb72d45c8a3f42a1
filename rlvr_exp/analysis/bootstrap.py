"""A cluster bootstrap over prompts: the uncertainty of a token-weighted mean whose tokens come in
prompts (the responses of one prompt are not independent draws, so prompts are resampled whole).

Math (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13, the percentile
interval; resampling clusters: Davison & Hinkley 1997, section 3.8): P prompts, prompt p holding
tokens with value sum s_p and token count n_p. Resample b draws P prompt indices uniformly with
replacement; c_{b,p} counts how often p was drawn. Its statistic is the token-weighted mean

    m_b = sum_p c_{b,p} s_p / sum_p c_{b,p} n_p

and the (1 - alpha) interval is the (alpha/2, 1 - alpha/2) quantiles of m_1 .. m_R (linear
interpolation). The difference of two such means on one set of prompts (negative minus
positive responses) is resampled with the same draws, so that prompts shared by both keep
their pairing.

Conventions: draws come from ``numpy.random.default_rng(seed)``, so a (seed, R, P) triple gives
the same resamples on every call. A resample without a token of the statistic (all its draws
fell on prompts with n_p = 0) has no value and is left out of the quantiles; with no valued
resample at all the interval is (nan, nan). All prompts equal gives a zero-width interval.
"""
from __future__ import annotations

import numpy as np

LEVEL = 0.95


def resample_counts(n_prompts: int, resamples: int, seed: int) -> np.ndarray:
    """[R, P] int: how often each prompt is drawn in each resample (each row sums to P)."""
    if n_prompts < 1 or resamples < 1:
        raise ValueError(f"a bootstrap needs >= 1 prompt and >= 1 resample, got {n_prompts} and {resamples}")
    draws = np.random.default_rng(seed).integers(0, n_prompts, size=(resamples, n_prompts))
    counts = np.zeros((resamples, n_prompts), dtype=np.int64)
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    return counts


def resampled_means(sums: np.ndarray, counts: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """[R] token-weighted means m_b of per-prompt ``sums`` [P] and token ``counts`` [P] under
    ``draws`` [R, P] (from :func:`resample_counts`); NaN where a resample holds no token."""
    num = draws @ np.asarray(sums, dtype=np.float64)
    den = draws @ np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The ((1-level)/2, (1+level)/2) quantiles of the finite ``values``; (nan, nan) without any."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(finite, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)
