"""Where a run keeps its checkpoints, and which one ``--ckpt`` means.

A run directory holds one directory per stage (``stage1/``, ``stage2/`` ...), each with
``final.ckpt`` once the stage has finished and ``last.ckpt`` while it runs. Standard library and
PyYAML only, so the command lines answer a bad ``--ckpt`` before the model stack loads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from explainable_ser.config import ConfigError


def stage_order(run_dir: Path) -> list[str]:
    """The run's stage names in training order: from its ``config.yaml`` where it has one, else
    the directories holding a checkpoint, by name."""
    cfg = run_dir / "config.yaml"
    if cfg.is_file():
        try:
            stages = (yaml.safe_load(cfg.read_text()) or {}).get("training", {}).get("stages") or []
            names = [s["name"] for s in stages if isinstance(s, dict) and s.get("name")]
        except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
            names = []
        if names:
            return names
    return sorted(p.parent.name for p in run_dir.glob("*/*.ckpt"))


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint file that ``path`` stands for.

    A file: itself. A stage directory: its ``final.ckpt``. A run directory: the ``final.ckpt``
    of its last stage (the training order of its ``config.yaml``). A stage that has only
    ``last.ckpt`` did not finish: that is refused with the remedy (resume it, or name the file)
    rather than evaluated quietly. Raises :class:`ConfigError` naming what was looked for and
    what was found.
    """
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise ConfigError(f"checkpoint not found: {p}")
    if not p.is_dir():
        raise ConfigError(f"checkpoint not found: {p} is not a file")
    if (p / "final.ckpt").is_file():
        return p / "final.ckpt"
    if (p / "last.ckpt").is_file():
        raise ConfigError(
            f"{p}: the stage did not finish (last.ckpt, no final.ckpt): resume it with "
            f"ckpt_path=last, or name {p / 'last.ckpt'} to use it as it is"
        )
    stages = [s for s in stage_order(p) if any((p / s).glob("*.ckpt"))]
    if stages:
        return find_checkpoint(p / stages[-1])
    found = sorted(str(f.relative_to(p)) for f in p.rglob("*.ckpt"))
    listing = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
    raise ConfigError(
        f"{p}: no checkpoint in it or in a stage directory of it "
        f"({'found ' + listing if found else 'no .ckpt file at all'}); "
        f"give --ckpt a file, a stage directory (e.g. RUN/stage2) or a run directory"
    )


def resolve_ckpt_arg(given: str) -> str:
    """``--ckpt`` of a command line as a file path; says which file on stderr when it was a
    directory. Raises :class:`ConfigError` like :func:`find_checkpoint`."""

    ckpt = find_checkpoint(given)
    if not Path(given).is_file():
        print(f"checkpoint: {ckpt} (from {given})", file=sys.stderr)
    return str(ckpt)
