"""Report section: how did the defect rates (no boxed answer, repetition, truncation) change over
the rising stage? From the ``defect/*`` metrics (docs/method.md section 7)."""
from __future__ import annotations

from rlvr_exp.analysis import plots
from rlvr_exp.analysis.report_numbers import Rows, change_to


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
