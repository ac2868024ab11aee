"""Checkpoints that survive a kill: atomic writes, RNG state, and which one to resume from.

* :class:`AtomicCheckpointIO` writes ``x.ckpt.tmp``, flushes it to disk, then renames it over
  ``x.ckpt``: a kill during a save leaves the previous ``last.ckpt`` whole (a rename is atomic
  on POSIX file systems).
* :func:`rng_state` / :func:`set_rng_state`: Python, NumPy and torch generators, saved with every
  checkpoint so dropout and the bottlenecks' sampling continue as in an uninterrupted run.
* :func:`resume_checkpoint` resolves ``ckpt_path`` (``last``, a run directory or a file) to the
  checkpoint of the stage being resumed.
* :func:`read_checkpoint`, :func:`check_compatible`, :func:`load_adaptable`: every read of a
  checkpoint's weights goes through them (safe unpickler, a clear error naming the first
  mismatching tensor).
"""

from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from explainable_ser.config import ConfigError


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file, ``fsync``, then ``os.replace`` onto the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        self._write(checkpoint, tmp)
        os.replace(tmp, path)

    def _write(self, checkpoint: dict[str, Any], tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None):
        # Our checkpoints hold tensors, numbers, strings and RNG byte tensors only: the safe
        # unpickler suffices (Lightning's default would allow arbitrary objects).
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


def rng_state() -> dict[str, Any]:
    """Every random generator training draws from (CPU torch, CUDA if present, NumPy, Python)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    # Plain tuples, lists and tensors only, so ``weights_only`` loading accepts them.
    state = {
        "python": random.getstate(),
        "numpy": (keys.tolist(), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(tuple(state["python"]))
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_checkpoint(ckpt_path: str | None, run_dir: Path, stage_name: str) -> Path | None:
    """The checkpoint to resume ``stage_name`` from, or ``None`` to start it fresh.

    ``ckpt_path``: ``None`` (fresh), ``last`` or the run directory (the stage's ``last.ckpt``
    when it exists), or a ``.ckpt`` file (used when it lies in this stage's directory).
    """
    if ckpt_path is None:
        return None
    stage_dir = run_dir / stage_name
    if ckpt_path == "last" or Path(ckpt_path).resolve() == run_dir.resolve():
        last = stage_dir / "last.ckpt"
        return last if last.is_file() else None
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path {ckpt_path} is neither 'last', the run directory {run_dir}, nor a checkpoint file"
        )
    return path if path.resolve().parent == stage_dir.resolve() else None


def read_checkpoint(ckpt: Path) -> dict:
    """A checkpoint's ``state_dict``, loaded with ``weights_only=True``; :class:`ConfigError`
    when the file is not a readable checkpoint (corrupt, truncated, holding arbitrary objects)."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as err:  # UnpicklingError, zip/EOF errors, KeyError, OSError ...
        if ckpt.is_file() and not zipfile.is_zipfile(ckpt):  # torch's own detail would be e.g. "101"
            raise ConfigError(
                f"{ckpt} is not a checkpoint: torch.save and the Trainer write a zip "
                f"archive, this file ({ckpt.stat().st_size} bytes) is none (truncated, "
                f"or another kind of file)"
            ) from None
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        # torch's weights-only refusal names the offending global on a later line
        detail = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else repr(err))
        raise ConfigError(f"checkpoint {ckpt} cannot be loaded with weights_only=True: {detail[:200]}") from None
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint {ckpt} has no state_dict of tensors")
    return state


def check_compatible(module: torch.nn.Module, state: dict, ckpt: Path) -> None:
    """:class:`ConfigError` naming the first mismatch when ``state`` was trained with another
    model config (unknown parameter names or other shapes)."""
    own = module.state_dict()
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise ConfigError(f"checkpoint {ckpt} does not match this model: unexpected keys {unexpected[:5]} ...")
    wrong = [k for k, v in state.items() if tuple(getattr(v, "shape", ())) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ConfigError(
            f"checkpoint {ckpt} comes from an incompatible config: {k} has shape "
            f"{tuple(state[k].shape)} there, {tuple(own[k].shape)} here "
            f"({len(wrong)} tensor(s) differ; check the model.* settings)"
        )


def load_adaptable(module: torch.nn.Module, ckpt: Path, state: dict | None = None) -> None:
    """Load a checkpoint's adaptable weights into ``module`` after checking they fit it."""
    state = read_checkpoint(ckpt) if state is None else state
    check_compatible(module, state, ckpt)
    module.load_state_dict(state, strict=False)
