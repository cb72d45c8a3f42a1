"""W&B dashboards from code: ``python -m rlvr_exp.dashboard <run or sweep folder> [--project P --entity E] [--dry-run]``.

Builds the dashboard spec from the runs' ``metrics.jsonl`` (and the media their offline W&B runs
logged), writes it to ``<folder>/dashboard/spec.json``, then saves a W&B workspace and a report for
the group with ``wandb-workspaces`` (the ``dashboard`` extra) and prints their URLs, recorded in
``<folder>/dashboard/urls.json`` for ``analyze``'s reports. ``--dry-run`` (and any run with
``WANDB_MODE=offline|disabled``) stops after the spec and prints how to publish it.
Exit codes: 0 done, 2 the folder holds no run, 3 publishing is impossible here (extra missing,
W&B offline).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rlvr_exp.analysis.runs import AnalysisInputError
from rlvr_exp.dashboard.spec import build_spec, write_spec

OFFLINE_MODES = ("offline", "disabled")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlvr_exp.dashboard", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a run folder (outputs/runs/<date>/<time>) or a sweep folder")
    parser.add_argument("--project", default=None, help="W&B project (default: the runs' logger.project)")
    parser.add_argument("--entity", default=None,
                        help="W&B entity (default: the runs' logger.entity, else your W&B default entity)")
    parser.add_argument("--dry-run", action="store_true", help="write the spec only; no network")
    return parser.parse_args(argv)


def describe(spec: dict) -> str:
    """What the spec holds and what was left out, for the terminal."""
    panels = sum(len(s["panels"]) for s in spec["sections"])
    lines = [f"{len(spec['runs'])} runs, group {spec['group'] or '(none: filtered by run id)'}, "
             f"arms {', '.join(spec['arms'])}: {len(spec['sections'])} sections, {panels} panels"]
    lines += [f"  {s['name']}: " + "; ".join(p["title"] for p in s["panels"]) for s in spec["sections"]]
    lines += [f"  left out ({left['section']}): {left['title']} (not logged: {', '.join(left['wanted'])})"
              for left in spec["left_out"]]
    return "\n".join(lines)


def how_to_publish(folder: Path, spec: dict) -> str:
    entity = spec["entity"] or "<your W&B entity>"
    runs = " ".join(dict.fromkeys(f"{folder}/{'*/' if r['folder'] != '.' else ''}wandb/offline-run-*" for r in spec["runs"]))
    return ("To publish (needs network and `wandb login`; sync offline runs first: "
            f"`wandb sync {runs}`):\n"
            f"  pip install -e \".[dashboard]\" && WANDB_MODE=online python -m rlvr_exp.dashboard {folder} "
            f"--project {spec['project']} --entity {entity}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = build_spec(args.folder, project=args.project, entity=args.entity)
    except AnalysisInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = write_spec(spec, args.folder)
    print(describe(spec))
    print(f"wrote {path}")
    mode = os.environ.get("WANDB_MODE", "online")
    if args.dry_run or mode in OFFLINE_MODES:
        print(("" if args.dry_run else f"WANDB_MODE={mode}: not publishing. ") + how_to_publish(args.folder, spec))
        return 0
    import wandb

    from rlvr_exp.dashboard.publish import publish

    try:
        urls = publish(spec, args.folder, spec["entity"] or wandb.Api().default_entity, spec["project"])
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    for what, url in urls.items():
        print(f"{what}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
