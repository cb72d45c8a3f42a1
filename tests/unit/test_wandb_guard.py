"""W&B trouble never stops training: an unreachable server falls back to offline, errors mid-run
are logged and swallowed."""
from __future__ import annotations

import json
import logging

from rlvr_exp.build import run_config
from rlvr_exp.logging.run_logger import RunLogger
from tests.conftest import compose


def test_online_without_a_server_falls_back_to_offline(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    logger = RunLogger(mode="online", progress_bar=False, init_timeout_s=5.0)
    with caplog.at_level(logging.WARNING, logger="rlvr_exp.logging.wandb_guard"):
        run_id = logger.start(tmp_path, run_config(compose([])), total_steps=1)
    assert run_id is not None and logger.run.settings.mode == "offline"
    assert len([r for r in caplog.records if "logging offline instead" in r.message]) == 1
    logger.log(1, {"reward/mean": 0.5})
    logger.finish()
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["reward/mean"] == 0.5


class Broken:
    """A W&B run whose every call raises."""

    def log(self, *args, **kwargs):
        raise ConnectionError("wandb backend gone")

    def finish(self, *args, **kwargs):
        raise ConnectionError("wandb backend gone")

    class summary:
        @staticmethod
        def update(values):
            raise ConnectionError("wandb backend gone")


def test_errors_mid_run_are_logged_and_training_goes_on(tmp_path, caplog):
    logger = RunLogger(mode="disabled", progress_bar=False)
    logger.start(tmp_path, {}, total_steps=2)
    logger.run = Broken()
    with caplog.at_level(logging.WARNING, logger="rlvr_exp.logging.wandb_guard"):
        logger.log(1, {"reward/mean": 0.5})
        logger.log(2, {"reward/mean": 0.7})
        logger.log_media(2, {"table": object()})
        logger.summary({"val/accuracy_final": 0.3})
        logger.finish()
    assert [json.loads(r)["step"] for r in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((tmp_path / "summary.json").read_text()) == {"val/accuracy_final": 0.3}
    assert logger.run is None
    assert sum("W&B log failed" in r.message for r in caplog.records) == 2
