"""The output folder, checked before Hydra makes it.

Hydra creates ``hydra.run.dir`` (``hydra.sweep.dir`` for ``-m``), writes ``.hydra/`` into it and
opens ``train.log`` there before ``main`` runs, so a folder that cannot be made used to end in a
Hydra traceback. :class:`CheckOutputFolder` (``hydra.callbacks`` in conf/train.yaml) runs once the
config is composed and before any of that: a folder that cannot be made or written is refused with
one line naming the path and the fix, exit code 2, like every refused config. Nothing is created
here; ``train.start_job`` still test-writes the folder Hydra made (a check by permission bits alone
can be wrong: root passes them, a read-only mount may not show in them).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def problem(folder: str | Path) -> str | None:
    """Why ``folder`` cannot become the output folder, or None when it can: it must be a folder
    that can be written, or be creatable in the nearest folder above it that exists."""
    folder = Path(folder).expanduser().absolute()
    existing = folder
    while not existing.exists():  # False, not an error, when a part of the path is a file
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def refuse_unusable(folder: str, key: str) -> None:
    """Log one ``refused:`` line and exit with code 2 when ``folder`` (the value of ``key``)
    cannot be the output folder."""
    why = problem(folder)
    if why is not None:
        log.error("refused: the output folder %s cannot be made or written (%s); point %s at a writable "
                  "place", folder, why, key)
        sys.exit(2)


class CheckOutputFolder(Callback):
    """Hydra callback: refuse an unusable ``hydra.run.dir`` / ``hydra.sweep.dir`` before Hydra
    touches it (see the module docstring)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unusable(str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unusable(str(config.hydra.sweep.dir), "hydra.sweep.dir")
