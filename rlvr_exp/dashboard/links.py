"""Where a published dashboard is recorded, for ``analyze``'s reports to link to it.

``python -m rlvr_exp.dashboard <folder>`` (without ``--dry-run``) writes
``<folder>/dashboard/urls.json`` = ``{"workspace": url, "report": url}``. A run's report links to its
own dashboard and to its sweep's (the run folder's parent), a sweep's comparison to the sweep's.
"""
from __future__ import annotations

import json
from pathlib import Path

from rlvr_exp import run_files as rf

DASHBOARD_DIR, SPEC_FILE, URLS_FILE = rf.DASHBOARD, rf.DASHBOARD_SPEC, rf.DASHBOARD_URLS  # the run-folder contract


def dashboard_urls(folder: Path) -> dict[str, str]:
    """``{"workspace": url, "report": url}`` recorded at publish time in ``folder``; {} when none."""
    path = Path(folder) / DASHBOARD_DIR / URLS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def dashboard_lines(*folders: Path) -> list[str]:
    """Markdown lines linking the dashboards published for ``folders`` ([] when none was)."""
    lines = []
    for folder in dict.fromkeys(Path(f).resolve() for f in folders):
        urls = dashboard_urls(folder)
        if urls:
            links = ", ".join(f"[W&B {what}]({url})" for what, url in urls.items())
            lines += ["", f"Dashboard of `{folder.name}`: {links}."]
    return lines
