"""Online and offline detection of the rising -> plateau boundary of an RLVR run.

The paper draws the boundary by eye on the entropy curve (near step 200 of 600; arXiv
2508.02260, "Decomposing the Entropy-Performance Exchange", stage analysis). No numeric rule
is published; this is ours (docs/method.md section 6). Per observation x_t of ``signal``:

1. Smooth:  s_t = smoothing * s_{t-1} + (1 - smoothing) * x_t   (s_1 = x_1).
2. Slope:   g_t = least-squares slope of the last ``window`` values of s (units per step).
3. Noise:   sigma = mean |x_t - 2 x_{t-1} + x_{t-2}| / sqrt(12 / pi), the residual noise of the
            raw signal from second differences (a linear trend cancels; exact for Gaussian
            noise). sigma_g = sigma * ||c||, with c the weights that map raw values to g_t
            (the least-squares weights applied to the EMA): the noise std of g_t.
4. Steepest fall: F = max over t of (-g_t - 2 sigma_g); subtracting 2 sigma_g removes most of
   the upward bias of a running maximum of noisy slopes.
5. Plateau at the first observation where, for ``patience`` consecutive observations,
   -g_t + confidence * sigma_g <= fraction * F: even the upper noise bound of the current fall
   rate is below ``fraction`` of the steepest fall (a rising slope counts as "not falling"),
   provided that
   - at least ``min_steps`` observations were taken and the window is full,
   - F > 0 (the steepest slope was a real fall), and
   - the fall is significant: peak(s) - s_t >= min_drop * sigma, where peak(s) is the
     highest smoothed value since the first observation (and above a 1e-9 relative
     float-rounding floor, so that an exactly constant signal never fires).
   The last rule keeps a flat or a rising noisy line from ever firing: its smoothed value
   never drops several noise levels below its own running peak. The confidence terms keep a
   steadily falling noisy line from firing on a chance dip of its windowed slope. With
   confidence = 0 and the bias correction dropped this is the bare rule of docs/method.md section 6.

``plateau_step`` is the step at which the rule completes (the first step a plateau-gated
shaper is on). On a sharp elbow it lags the elbow by about smoothing / (1 - smoothing)
+ window / 2 + patience steps (~40 with the defaults, more with noise); on an elbow where the
slope tapers off gradually, it fires once the slope is down to ``fraction`` of its steepest.
Once declared the plateau is final.

Limits: the rising-stage fall must stand out of the slope noise, roughly fall rate >=
(confidence / fraction) * sigma_g (~6 sigma_g with the defaults; log ``stage/noise`` to see
it). A steady fall that is barely above the noise over thousands of steps can still fire on a
long chance dip; with 300-600 steps and noise up to 7.5% of the total drop it did not in our
tests (tests/unit/test_stages.py). Only falling signals are detected (entropy, not accuracy).
"""
from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Any

from rlvr_exp.stages.base import PLATEAU, RISING, StageState

_STEEPEST_Z = 2.0  # noise stds removed from each candidate steepest fall (step 4)
_DROP_FLOOR = 1.0e-9  # relative floor on a significant drop (float rounding on a constant)
#: Metric namespaces that exist only when the pipeline computes an optional input: ``entropy/*``
#: is computed from the token entropies (``trainer.score_entropy``).
NAMESPACE_INPUTS = {"entropy/": "entropy"}


def _check(name: str, value: Any, ok: bool, valid: str) -> None:
    if not ok:
        raise ValueError(f"PlateauDetector: {name}={value!r} is invalid; valid range: {valid}")


def _lsq_weights(window: int) -> list[float]:
    """a_j such that sum_j a_j y_j is the least-squares slope of y_0..y_{w-1} against j."""
    mean = (window - 1) / 2
    denom = sum((j - mean) ** 2 for j in range(window))
    return [(j - mean) / denom for j in range(window)]


def _slope_noise_gain(window: int, smoothing: float) -> float:
    """||c||: the std of g_t per unit std of white noise in the raw signal (steady state).

    The stationary EMA of unit white noise has Cov(s_u, s_v) = (1 - b) / (1 + b) * b^|u - v|
    (b = smoothing), so Var(g) = (1 - b) / (1 + b) * sum_ij a_i a_j b^|i - j|.
    """
    a = _lsq_weights(window)
    var = sum(
        a_i * a_j * smoothing ** abs(i - j) for i, a_i in enumerate(a) for j, a_j in enumerate(a)
    )
    return math.sqrt((1.0 - smoothing) / (1.0 + smoothing) * var)


class PlateauDetector:
    """Online rising/plateau detector, fed one metrics dict per training step (see module doc).

    Defaults suit both a CPU demo of a few hundred steps and the paper's 600-step runs:
    smoothing=0.9 (EMA span ~10 steps), window=30, fraction=0.25, min_steps=50, patience=10,
    min_drop=6.0 noise levels, confidence=1.5 slope-noise stds. Observations are the steps
    whose metrics hold a finite ``signal``; other steps (key missing, None or NaN) are
    skipped and change nothing.
    """

    def __init__(
        self,
        signal: str = "entropy/mean",
        smoothing: float = 0.9,
        window: int = 30,
        fraction: float = 0.25,
        min_steps: int = 50,
        patience: int = 10,
        min_drop: float = 6.0,
        confidence: float = 1.5,
    ) -> None:
        _check("signal", signal, isinstance(signal, str) and signal != "", "a non-empty metric key")
        _check("smoothing", smoothing, _is_real(smoothing) and 0.0 <= smoothing < 1.0, "[0, 1)")
        _check("window", window, _is_int(window) and window >= 2, "an integer >= 2")
        _check("fraction", fraction, _is_real(fraction) and 0.0 < fraction < 1.0, "(0, 1)")
        _check("min_steps", min_steps, _is_int(min_steps) and min_steps >= 0, "an integer >= 0")
        _check("patience", patience, _is_int(patience) and patience >= 1, "an integer >= 1")
        _check("min_drop", min_drop, _is_real(min_drop) and min_drop > 0.0, "a float > 0")
        _check("confidence", confidence, _is_real(confidence) and confidence >= 0.0, "a float >= 0")
        self.signal = signal
        self.smoothing = float(smoothing)
        self.window = int(window)
        self.fraction = float(fraction)
        self.min_steps = int(min_steps)
        self.patience = int(patience)
        self.min_drop = float(min_drop)
        self.confidence = float(confidence)
        self._weights = _lsq_weights(self.window)
        self._noise_gain = _slope_noise_gain(self.window, self.smoothing)
        self._reset()

    def _reset(self) -> None:
        self._n = 0  # observations taken
        self._raw: deque[float] = deque(maxlen=2)  # last two raw values (second differences)
        self._abs_d2_sum = 0.0
        self._abs_d2_count = 0
        self._smoothed: float | None = None
        self._buffer: deque[float] = deque(maxlen=self.window)  # last `window` smoothed values
        self._slope: float | None = None
        self._peak: float | None = None
        self._steepest = 0.0  # F, the bias-corrected steepest fall rate (>= 0)
        self._below = 0  # consecutive observations satisfying the plateau condition
        self._plateau_step: int | None = None

    # ----------------------------------------------------------------------------- updates
    def update(self, step: int, metrics: dict[str, float]) -> StageState:
        """Take one training step's metrics; return the stage state after it."""
        value = metrics.get(self.signal)
        if value is None or not math.isfinite(float(value)):
            return self.state
        self._observe(float(value))
        if self._plateau_step is not None:
            return self.state
        self._peak = self._smoothed if self._peak is None else max(self._peak, self._smoothed)
        if self._slope is None:
            return self.state
        self._steepest = max(self._steepest, -self._slope - _STEEPEST_Z * self._slope_noise())
        self._below = self._below + 1 if self._condition() else 0
        if self._below >= self.patience and self._n >= self.min_steps:
            self._plateau_step = int(step)
        return self.state

    def _observe(self, x: float) -> None:
        """Advance the smoother, the slope and the noise estimate by one raw value."""
        if len(self._raw) == 2:
            self._abs_d2_sum += abs(x - 2.0 * self._raw[1] + self._raw[0])
            self._abs_d2_count += 1
        self._raw.append(x)
        self._n += 1
        if self._smoothed is None:
            self._smoothed = x
        else:
            self._smoothed = self.smoothing * self._smoothed + (1.0 - self.smoothing) * x
        self._buffer.append(self._smoothed)
        if len(self._buffer) == self.window:
            self._slope = sum(a * s for a, s in zip(self._weights, self._buffer))

    def _noise(self) -> float:
        """sigma: residual noise std of the raw signal (0 until two second differences exist)."""
        if self._abs_d2_count == 0:
            return 0.0
        return self._abs_d2_sum / self._abs_d2_count / math.sqrt(12.0 / math.pi)

    def _slope_noise(self) -> float:
        return self._noise() * self._noise_gain

    def _condition(self) -> bool:
        """Fall rate below fraction x steepest, the steepest was a fall, the drop is significant."""
        if self._steepest <= 0.0:
            return False
        drop = self._peak - self._smoothed
        if drop <= max(self.min_drop * self._noise(), _DROP_FLOOR * abs(self._peak)):
            return False
        upper_fall = -self._slope + self.confidence * self._slope_noise()
        return upper_fall <= self.fraction * self._steepest

    # ------------------------------------------------------------------------------ views
    @property
    def requires(self) -> frozenset[str]:
        """The optional pipeline inputs ``signal`` is computed from (:data:`NAMESPACE_INPUTS`)."""
        return frozenset(need for prefix, need in NAMESPACE_INPUTS.items() if self.signal.startswith(prefix))

    @property
    def state(self) -> StageState:
        if self._plateau_step is None:
            return StageState(name=RISING, plateau_step=None)
        return StageState(name=PLATEAU, plateau_step=self._plateau_step)

    def signals(self) -> dict[str, float]:
        """Values to log each step under ``stage/`` (empty before the first observation).

        stage/smoothed (s_t), stage/slope (g_t, once the window is full), stage/steepest_slope
        (-F, <= 0), stage/noise (sigma), stage/is_plateau (0/1), and stage/plateau_step once
        found.
        """
        if self._smoothed is None:
            return {}
        out = {"stage/smoothed": self._smoothed}
        if self._slope is not None:
            out["stage/slope"] = self._slope
        out["stage/steepest_slope"] = 0.0 - self._steepest
        out["stage/noise"] = self._noise()
        out["stage/is_plateau"] = float(self._plateau_step is not None)
        if self._plateau_step is not None:
            out["stage/plateau_step"] = float(self._plateau_step)
        return out

    # ------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly; plain JSON-serialisable python types."""
        return {
            "config": self._config(),
            "n": self._n,
            "raw": list(self._raw),
            "abs_d2_sum": self._abs_d2_sum,
            "abs_d2_count": self._abs_d2_count,
            "smoothed": self._smoothed,
            "buffer": list(self._buffer),
            "slope": self._slope,
            "peak": self._peak,
            "steepest": self._steepest,
            "below": self._below,
            "plateau_step": self._plateau_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the config must match this detector's."""
        if state["config"] != self._config():
            raise ValueError(
                f"PlateauDetector: checkpoint config {state['config']} != this detector's "
                f"{self._config()}"
            )
        self._reset()
        self._n = int(state["n"])
        self._raw.extend(float(v) for v in state["raw"])
        self._abs_d2_sum = float(state["abs_d2_sum"])
        self._abs_d2_count = int(state["abs_d2_count"])
        self._smoothed = state["smoothed"]
        self._buffer.extend(float(v) for v in state["buffer"])
        self._slope = state["slope"]
        self._peak = state["peak"]
        self._steepest = float(state["steepest"])
        self._below = int(state["below"])
        self._plateau_step = state["plateau_step"]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"PlateauDetector({args})"

    def _config(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "smoothing": self.smoothing,
            "window": self.window,
            "fraction": self.fraction,
            "min_steps": self.min_steps,
            "patience": self.patience,
            "min_drop": self.min_drop,
            "confidence": self.confidence,
        }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def detect_offline(rows: list[dict[str, Any]], **detector_kwargs: Any) -> int | None:
    """Replay a finished run's metrics rows (each with "step") through a fresh detector.

    Rows are ordered by step; when a step appears more than once (a run resumed from a
    checkpoint logs the steps after it again) the last row wins, which is the row of the
    run that went on. The result is the plateau step, or None if none was found. This is the
    online code path, so online and offline agree on the same rows.
    """
    by_step = {int(row["step"]): row for row in rows}
    detector = PlateauDetector(**detector_kwargs)
    for step in sorted(by_step):
        detector.update(step, by_step[step])
    return detector.state.plateau_step


def detect_offline_file(path: str | Path, **detector_kwargs: Any) -> int | None:
    """:func:`detect_offline` on a metrics.jsonl file (one JSON object per line, blanks skipped)."""
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return detect_offline(rows, **detector_kwargs)
