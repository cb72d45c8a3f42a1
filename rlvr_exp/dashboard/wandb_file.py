"""Read an offline W&B run's ``run-<id>.wandb`` file: the media keys it logged and its run record.

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then
LevelDB-log records in 32 KiB blocks (each chunk: crc32 4 bytes, length 2, type 1: 1 full, 2
first, 3 middle, 4 last; a block tail shorter than a chunk header is zero padding), each record a
``wandb_internal_pb2.Record`` protobuf. Media (tables, histograms) are history items flattened to
``<key>/_type``; plain metrics are already in ``metrics.jsonl``. Nothing is ever written here.
"""
from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlvr_exp import run_files as rf

log = logging.getLogger(__name__)
HEADER = b":W&B"
HEADER_BYTES, BLOCK_BYTES, CHUNK_HEADER_BYTES = 7, 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(ValueError):
    """The file is not a W&B transaction log this reader understands."""


def run_files(run_dir: Path) -> list[Path]:
    """``wandb/offline-run-*/run-*.wandb`` of a run folder, oldest first (a resumed run has several)."""
    return sorted((Path(run_dir) / rf.WANDB).glob("offline-run-*/run-*.wandb"))


def records(path: Path) -> Iterator[bytes]:
    """The serialized records of one ``.wandb`` file, in order."""
    data = Path(path).read_bytes()
    if data[:4] != HEADER:
        raise WandbFileError(f"{path}: not a W&B transaction log (header {data[:4]!r})")
    pos, pending = HEADER_BYTES, b""
    while pos + CHUNK_HEADER_BYTES <= len(data):
        left = BLOCK_BYTES - pos % BLOCK_BYTES
        if left < CHUNK_HEADER_BYTES:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER_BYTES])
        if kind == 0 and length == 0:  # zero fill after the last record
            break
        pos += CHUNK_HEADER_BYTES
        pending = data[pos:pos + length] if kind in (FULL, FIRST) else pending + data[pos:pos + length]
        pos += length
        if kind in (FULL, LAST):
            yield pending
            pending = b""


def _parsed(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    for data in records(path):
        record = pb.Record()
        record.ParseFromString(data)
        yield record


def media_keys(run_dir: Path) -> dict[str, str]:
    """``{key: media type}`` of the media a run logged (``{"samples": "table-file",
    "hist/token_entropy": "histogram"}``); {} without an offline W&B run or with a file this
    reader cannot parse (logged as a warning)."""
    out: dict[str, str] = {}
    for path in run_files(run_dir):
        try:
            for record in _parsed(path):
                if record.WhichOneof("record_type") != "history":
                    continue
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    if key.endswith("/_type"):
                        out[key.removesuffix("/_type")] = str(json.loads(item.value_json))
        except (WandbFileError, struct.error, ValueError) as err:
            log.warning("cannot read media keys from %s: %s", path, err)
    return out


def run_record(run_dir: Path) -> dict[str, Any] | None:
    """The newest run record of a run folder's offline W&B run: ``{"run_id", "group", "job_type",
    "tags", "project", "choices"}`` (``choices``: the config's top-level ``choice/*`` keys); None
    without one."""
    found = None
    for path in run_files(run_dir):
        for record in _parsed(path):
            if record.WhichOneof("record_type") == "run":
                run = record.run
                choices = {item.key: json.loads(item.value_json) for item in run.config.update
                           if item.key.startswith("choice/")}
                found = {"run_id": run.run_id, "group": run.run_group, "job_type": run.job_type,
                         "tags": list(run.tags), "project": run.project, "choices": choices}
    return found


def history_steps(path: Path) -> list[int]:
    """The step of each history record in one ``run-<id>.wandb`` file, in order (a resumed run's
    files together hold each logged step once: ``logging/run_logger.py``)."""
    return [record.history.step.num for record in _parsed(path) if record.WhichOneof("record_type") == "history"]
