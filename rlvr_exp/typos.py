"""After Hydra refuses an override for a key that does not exist (``trainer.lerning_rate=1.0e-5``:
"Key 'lerning_rate' is not in struct", and a hint to add it with ``+``), name the closest valid
keys instead. Runs only when the CLI exits with an error; composes the config once more (~1 s)."""
from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"


def closest(name: str, valid: list[str]) -> list[str]:
    """Valid names near ``name``: its initials (learning_rate -> lr), then difflib's matches."""
    initials = "".join(word[:1] for word in name.split("_"))
    near = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    return [v for v in valid if v == initials and v not in near] + near


def unknown_key_hint(args: list[str]) -> str | None:
    """A message for the first ``group.key=value`` override in ``args`` whose key the composed
    config lacks (closest valid names and the valid keys), or None when there is none."""
    from hydra import compose, initialize_config_dir

    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    choices = [o for o in overrides if "." not in o.split("=", 1)[0] and not o.startswith(("+", "~"))]
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=choices)
    except Exception:  # the group choices themselves are bad: Hydra's own message says so
        return None
    for override in overrides:
        key = override.split("=", 1)[0]
        if key.startswith(("+", "~", "hydra.")) or "." not in key:
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent)
        if isinstance(node, DictConfig) and leaf not in node:
            valid = [str(k) for k in node if not str(k).startswith("_")]
            near = closest(leaf, valid)
            hint = f"did you mean {', '.join(f'{parent}.{c}' for c in near)}? " if near else ""
            return f"{key} is not a setting of {parent}; {hint}valid keys: {', '.join(valid)}"
    return None
