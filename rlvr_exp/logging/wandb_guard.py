"""W&B never stops training: an online run that cannot reach its server falls back to offline,
and an exception from W&B in the middle of a run is logged and the run goes on.

``wandb.init`` online retries an unreachable server for ``init_timeout`` seconds (90 by default)
and then raises ``CommError``. We give it ``logger.init_timeout_s`` (15 s: measured 27 s in all
with the service start-up on a busy 2-core machine against ``WANDB_BASE_URL=http://127.0.0.1:9``)
and on any error start the same run offline, with one warning; ``wandb sync`` uploads it later.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
_warned: set[str] = set()


def init(wandb: Any, mode: str, timeout_s: float, kwargs: dict[str, Any]) -> Any:
    """``wandb.init(mode=mode, **kwargs)``; online, a failure within ``timeout_s`` gives an
    offline run of the same id instead."""
    if mode != "online":
        return wandb.init(mode=mode, **kwargs)
    try:
        return wandb.init(mode=mode, settings=wandb.Settings(init_timeout=timeout_s), **kwargs)
    except Exception as err:  # CommError, AuthenticationError, UsageError: all mean "no server"
        log.warning("W&B online start failed (%s); logging offline instead under %s/wandb (upload it later "
                    "with `wandb sync`)", str(err).splitlines()[0], kwargs["dir"])
        return wandb.init(mode="offline", **kwargs)


def call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``fn(*args, **kwargs)``; an exception is logged (with its traceback the first time for
    each ``what``) and swallowed, so W&B trouble never stops training."""
    try:
        fn(*args, **kwargs)
    except Exception:
        first = what not in _warned
        _warned.add(what)
        log.warning("W&B %s failed; training goes on (metrics.jsonl holds every step)", what, exc_info=first)
