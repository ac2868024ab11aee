"""The data schema: which corpora are read and how speech is batched.

Plain dataclasses with no Lightning, lhotse or torch import, so the experiment schema
(:mod:`explainable_ser.config`) can be loaded, validated and printed without them. The data
module (:mod:`data_modules.datamodule`) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class CorpusSpec:
    """One prepared corpus that the data module reads."""

    name: str = "speechcraft"
    """Corpus name; manifests are ``{dir}/{name}_cuts_{split}.jsonl.gz``."""
    dir: str = "data/speechcraft"
    """Directory written by ``python -m data_modules.prepare``."""
    weight: float = 1.0
    """Mixing weight of this corpus in the training stream (``CutSet.mux``)."""
    train_split: str | None = "train"
    """Split used for training (``None``: this corpus is evaluation-only)."""
    val_split: str | None = "dev"
    """Split used for validation (``None``: not validated on)."""
    test_split: str | None = "test"
    """Split used by ``evaluate`` (``None``: not evaluated on)."""
    format: Literal["auto", "jsonl", "shar"] = "auto"
    """Where a split is read from: ``jsonl`` (``{dir}/{name}_cuts_{split}.jsonl.gz``), ``shar``
    (Lhotse Shar shards in ``{dir}/shar/{split}/``, written by ``prepare --shar``) or ``auto``
    (Shar when that split has shards, else the JSONL manifest). Both are read lazily."""


@dataclass
class SynthCraftSpec:
    """Size of the built-in corpus, generated on first use when its manifests are absent."""

    n_train: int = 2000
    """Training clips."""
    n_dev: int = 200
    """Validation clips."""
    n_test: int = 200
    """Test clips."""
    seed: int = 0
    """Generation seed (same seed, same corpus)."""


@dataclass
class DataConfig:
    """Everything about reading and batching speech."""

    corpora: list[CorpusSpec] = field(default_factory=lambda: [CorpusSpec()])
    """Prepared corpora; training mixes those with a ``train_split`` by ``weight`` (default:
    SpeechCraft in ``data/speechcraft``, the paper's training data)."""
    synthcraft: SynthCraftSpec = field(default_factory=SynthCraftSpec)
    """Built-in corpus parameters (used when a corpus named ``synthcraft`` has no manifests)."""
    max_duration: float = 30.0
    """Seconds of audio per training batch, per device (a max-duration batch)."""
    max_cuts: int | None = None
    """Optional cap on utterances per batch, per device (the paper's batch 8 is ``max_cuts: 8``
    in ``experiments/base.yaml``)."""
    eval_max_duration: float = 120.0
    """Seconds of audio per validation/test batch, per device."""
    bucketing: bool = True
    """Duration bucketing (``False``: random batches, the naive baseline)."""
    num_buckets: int = 10
    """Duration buckets of the bucketing sampler."""
    duration_bins: list[float] | None = None
    """Bucket boundaries in seconds (ascending; ``num_buckets`` is then ``len + 1``). ``None``:
    estimated from the first ``num_cuts_for_bins_estimate`` training cuts of the stream."""
    num_cuts_for_bins_estimate: int = 10000
    """Cuts read (durations only) to estimate ``duration_bins`` when they are not given."""
    buffer_size: int | None = None
    """Cuts the bucketing sampler holds at once, across buckets: the bound on the pipeline's
    memory and the reach of its shuffling. ``None``: 20000 (lhotse's default) for manifests
    that reference audio files, 5000 when a training corpus reads Shar shards that carry the
    audio (each buffered cut then holds its compressed clip, ~100 KB for 5 s of FLAC)."""
    steps_per_epoch: int | None = None
    """Training batches per epoch per rank, when known or estimated (for the LR schedule and
    KL warm-up). ``None``: counted by one pass of the sampler over the manifest metadata
    (:meth:`SpeechDataModule.train_batches_per_epoch`; O(corpus) time, bounded memory). The
    loader is not truncated: an epoch is still one full pass of the data."""
    shuffle: bool = True
    """Shuffle training batches each epoch (seeded by ``seed`` and the epoch)."""
    drop_last: bool = False
    """Drop the last incomplete batch. With ``False`` every utterance is served once per epoch."""
    num_workers: int = 0
    """DataLoader worker processes (audio decoding runs there)."""
    seed: int = 0
    """Sampler seed."""
    sampling_rate: int = 16000
    """Model input rate; clips at other rates are resampled with soxr."""
    min_clip_seconds: float = 0.3
    """Shorter clips are skipped (reason ``too_short``)."""
    max_clip_seconds: float = 30.0
    """Longer clips are skipped (reason ``too_long``)."""
    caption_attributes: list[str] | None = None
    """Per-attribute description ablation (SEmoLLM; not in the paper): when set, every
    record's caption is rendered anew from its ``attributes`` naming only these, from
    ``gender``, ``pitch``, ``volume``, ``speed``, ``emphasis`` (an attribute the record lacks
    is left out; a record with no attributes gets no caption and is skipped by caption tasks
    as ``missing_field_for_{task}``). ``None``: the corpus's own captions."""
