"""Turn a dashboard spec (``spec.py``) into a W&B workspace and a report, and save them.

Needs the optional extra (``pip install -e ".[dashboard]"``: ``wandb-workspaces``), imported here
only, and a network with W&B credentials (``wandb login``) to save. ``workspace`` and ``report``
build the objects without network; ``publish`` saves both and records their URLs in
``<folder>/dashboard/urls.json``, which ``analyze``'s reports link to (``links.py``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlvr_exp.dashboard.links import DASHBOARD_DIR, URLS_FILE

INSTALL_HINT = 'the dashboard needs the optional extra: pip install -e ".[dashboard]" (wandb-workspaces)'


def _libs() -> tuple[Any, Any]:
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return ws, wr


def _filters(spec: dict[str, Any], ws: Any) -> Any:
    """The runs of the spec: its W&B group, else its runs' ids."""
    if spec["group"]:
        return ws.And(ws.Metric("Group") == spec["group"])
    return ws.And(ws.Metric("ID").isin([r["run_id"] for r in spec["runs"] if r["run_id"]]))


def panel(entry: dict[str, Any], spec: dict[str, Any], wr: Any) -> Any:
    """One panel of the spec as a wandb-workspaces panel, arms averaged over seeds with their spread."""
    grouping = spec["grouping"]
    agg = {"groupby_aggfunc": grouping["aggregate"], "groupby_rangefunc": grouping["spread"]}
    if entry["kind"] == "table":
        return wr.WeavePanelSummaryTable(table_name=entry["keys"][0], layout=wr.Layout(w=24, h=12))
    if entry["kind"] == "scalar":
        return wr.ScalarChart(title=entry["title"], metric=entry["keys"][0], **agg)
    if entry["kind"] == "histogram":
        return wr.LinePlot(title=entry["title"], x="Step", y=list(entry["keys"]))
    return wr.LinePlot(title=entry["title"], x="Step", y=list(entry["keys"]), groupby="JobType", **agg)


def workspace(spec: dict[str, Any], entity: str, project: str) -> Any:
    """A saved-view workspace: one section per spec section, runs filtered to the spec's and
    grouped by job type (the arm), each arm in its colour, ``choice/*`` config columns pinned."""
    ws, wr = _libs()
    sections = [ws.Section(name=s["name"], panels=[panel(p, spec, wr) for p in s["panels"]], is_open=i < 3)
                for i, s in enumerate(spec["sections"])]
    columns = [f"config:{key}.value" for key in spec["filters"]]
    runset = ws.RunsetSettings(filters=_filters(spec, ws), groupby=[ws.Metric("JobType")],
                               group_colors=dict(spec["colors"]), pinned_columns=columns)
    return ws.Workspace(name=spec["title"], entity=entity, project=project, sections=sections,
                        runset_settings=runset)


def report(spec: dict[str, Any], entity: str, project: str) -> Any:
    """A report for the group: a heading and a panel grid per section, over the same runs."""
    ws, wr = _libs()
    arms = ", ".join(f"`{a}`" for a in spec["arms"])
    blocks: list[Any] = [wr.P(f"{len(spec['runs'])} runs from {spec['source']}, grouped by arm ({arms}); "
                              f"lines are the mean over seeds, bands one std.")]
    for section in spec["sections"]:
        runset = wr.Runset(entity=entity, project=project, filters=_filters(spec, ws), groupby=["JobType"])
        blocks += [wr.H2(section["name"]),
                   wr.PanelGrid(runsets=[runset], panels=[panel(p, spec, wr) for p in section["panels"]])]
    return wr.Report(entity=entity, project=project, title=spec["title"][:128],
                     description="Made by python -m rlvr_exp.dashboard", blocks=blocks)


def publish(spec: dict[str, Any], folder: Path, entity: str, project: str) -> dict[str, str]:
    """Save the workspace and the report (network); returns and records their URLs."""
    saved_workspace = workspace(spec, entity, project).save()
    saved_report = report(spec, entity, project)
    saved_report.save()
    urls = {"workspace": saved_workspace.url, "report": saved_report.url}
    out = Path(folder) / DASHBOARD_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / URLS_FILE).write_text(json.dumps(urls, indent=2) + "\n")
    return urls
