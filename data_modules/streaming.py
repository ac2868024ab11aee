"""Corpus splits as lazy streams, and the samplers that cut them into batches (bucketed,
sharded across DDP ranks, resumable); :class:`~data_modules.datamodule.SpeechDataModule` puts
them together.

Streaming at scale
------------------
* **Manifests are never held whole.** A corpus split is read lazily either from
  ``{dir}/{name}_cuts_{split}.jsonl.gz`` (``CutSet.from_file`` on ``.jsonl.gz`` is a lazy
  iterator) or from Lhotse Shar shards in ``{dir}/shar/{split}/`` (``CutSet.from_shar``; see
  :attr:`CorpusSpec.format`). Training corpora are mixed by weight with ``CutSet.mux`` (lazy).
* **Memory is bounded by the sampler's buffer, not the corpus.** ``DynamicBucketingSampler``
  holds at most :attr:`DataConfig.buffer_size` cuts (plus the first
  ``num_cuts_for_bins_estimate`` durations once, to place the bucket bins, unless
  :attr:`DataConfig.duration_bins` gives them). With audio-carrying Shar the buffered cuts hold
  their compressed audio, so the default buffer is smaller there (:func:`resolved_buffer_size`).
* **DDP ranks x DataLoader workers never duplicate.** The sampler lives in the training process
  of each rank (map-style loading): every rank reads the same stream and keeps every
  ``world_size``-th batch (lhotse's ``CutSampler``; equal batch counts per rank, the last partial
  batches redistributed; only when fewer cuts than ranks are left at the very end does lhotse pad
  with at most ``world_size - 1`` copies, ids marked ``<id>_dup<k>``, so every rank steps), and
  the workers only decode the ``CutSet`` each batch index hands them, so a worker can never see
  a cut twice. Cost: with audio-carrying Shar every rank reads every
  shard's bytes (I/O x world_size); decoding still happens once, in the worker that owns the batch.
* **Shard order changes per epoch, reproducibly.** Shar shards are shuffled with
  ``seed + epoch`` (not lhotse's ``stateful_shuffle``, which counts full passes of one iterator
  object and so differs between a run and its resumed copy); the sampler forwards
  ``set_epoch`` to the lazy source (:class:`EpochCuts`).
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Callable
from pathlib import Path

from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler, SimpleCutSampler
from lhotse.serialization import decode_json_line, deserialize_item

from data_modules.config import CorpusSpec, DataConfig
from data_modules.corpora.common import shar_dir
from data_modules.records import manifest_path

LHOTSE_BUFFER_SIZE = 20000
"""``DynamicBucketingSampler``'s own default ``buffer_size`` (manifests referencing audio files)."""
SHAR_AUDIO_BUFFER_SIZE = 5000
"""Default ``buffer_size`` when training reads audio-carrying Shar (buffered cuts hold audio)."""


def shar_split_dir(spec: CorpusSpec, split: str) -> Path:
    """Where ``prepare --shar`` writes a split's shards: ``{dir}/shar/{split}/``."""
    return shar_dir(spec.dir, split)


def _shar_manifests(directory: Path) -> list[Path]:
    return sorted(directory.glob("cuts.*.jsonl*")) if directory.is_dir() else []


def split_format(spec: CorpusSpec, split: str) -> str:
    """``jsonl`` or ``shar``: how :func:`read_split` reads this corpus split."""
    if spec.format not in ("auto", "jsonl", "shar"):
        raise ValueError(f"corpus '{spec.name}': format must be auto, jsonl or shar, not {spec.format!r}")
    if spec.format != "auto":
        return spec.format
    return "shar" if _shar_manifests(shar_split_dir(spec, split)) else "jsonl"


def shar_carries_audio(spec: CorpusSpec, split: str) -> bool:
    """Whether the split is read from Shar shards that hold the audio (``recording.*.tar``)."""
    return split_format(spec, split) == "shar" and any(shar_split_dir(spec, split).glob("recording.*"))


def read_split(
    spec: CorpusSpec, split: str, *, shuffle_shards: bool = False, seed: int = 0, metadata_only: bool = False
) -> CutSet:
    """A corpus split as a lazy ``CutSet`` (nothing is read until it is iterated).

    JSONL: ``CutSet.from_file`` streams the ``.jsonl.gz`` manifest line by line. Shar:
    ``CutSet.from_shar`` streams shard after shard, in an order shuffled by ``seed`` when
    ``shuffle_shards``; ``metadata_only`` reads only the ``cuts.*.jsonl.gz`` part of each shard
    (durations and labels, no audio bytes), for counting batches.
    """
    fmt = split_format(spec, split)
    if fmt == "jsonl":
        path = manifest_path(spec.dir, spec.name, split)
        if not path.exists():
            raise FileNotFoundError(
                f"manifest for corpus '{spec.name}' split '{split}' not found: {path} "
                f"(run `python -m data_modules.prepare {spec.name} ...` first)"
            )
        return CutSet(TolerantJsonl(path))  # lazy, like CutSet.from_file on .jsonl(.gz)
    directory = shar_split_dir(spec, split)
    manifests = _shar_manifests(directory)
    if not manifests:
        raise FileNotFoundError(
            f"Shar shards for corpus '{spec.name}' split '{split}' not found in {directory} "
            f"(run `python -m data_modules.prepare {spec.name} ... --shar` first)"
        )
    # stateful_shuffle=False: the shard order is a function of ``seed`` alone (callers pass
    # ``cfg.seed + epoch``), so a resumed run reads the shards in the same order as the original.
    kwargs = dict(shuffle_shards=shuffle_shards, stateful_shuffle=False, seed=seed)
    if metadata_only:
        return CutSet.from_shar(fields={"cuts": [str(m) for m in manifests]}, **kwargs)
    return CutSet.from_shar(in_dir=directory, **kwargs)


class TolerantJsonl:
    """The cuts of a JSONL(.gz) manifest, read lazily, tolerating undecodable bytes.

    lhotse decodes manifest lines strictly, so one invalid UTF-8 byte would end the epoch.
    Lines are decoded with ``surrogateescape`` instead: the record then carries lone
    surrogates and :class:`~data_modules.batches.SpeechBatchDataset` skips it
    (``invalid_utf8_text``, counted and logged). A line that is not a cut at all is skipped
    with a warning naming it.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def __iter__(self):

        opener = gzip.open if self.path.suffix == ".gz" else open
        with opener(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    yield deserialize_item(decode_json_line(raw.decode("utf-8", "surrogateescape")))
                except Exception as err:  # not JSON, not a cut
                    reason = f"{type(err).__name__}: {err}"
                    warnings.warn(f"{self.path}:{number}: unreadable manifest line skipped ({reason})", stacklevel=2)


class EpochCuts:
    """A lazy cut source rebuilt for every epoch: ``CutSet(EpochCuts(build))`` iterates
    ``build(epoch)``. The samplers of :func:`build_sampler` forward ``set_epoch`` to it (the
    convention lhotse's ``IterableDatasetWrapper`` uses for sharded sources), so Shar shard order
    follows the epoch deterministically."""

    def __init__(self, build: Callable[[int], CutSet]):
        self.build = build
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(self.build(self.epoch))


class _ForwardsEpoch:
    """Sampler mixin: ``set_epoch`` also reaches an :class:`EpochCuts` source."""

    epoch_source: EpochCuts | None = None

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.epoch_source is not None:
            self.epoch_source.set_epoch(epoch)


class BucketingSampler(_ForwardsEpoch, DynamicBucketingSampler):
    """lhotse's ``DynamicBucketingSampler`` that forwards ``set_epoch`` to its lazy source."""


class StreamingCutSampler(_ForwardsEpoch, DynamicCutSampler):
    """lhotse's ``DynamicCutSampler`` (streaming shuffle, no bucketing) that forwards
    ``set_epoch`` to its lazy source. Used for unbucketed training instead of
    ``SimpleCutSampler``, whose restore is inexact with more than one rank (it fast-forwards by
    this rank's cut count while every rank consumed the shared stream)."""


def resolved_buffer_size(cfg: DataConfig) -> int:
    """``cfg.buffer_size``, or its default: smaller when training reads audio-carrying Shar."""
    if cfg.buffer_size:
        return cfg.buffer_size
    audio_shar = any(
        spec.train_split is not None and shar_carries_audio(spec, spec.train_split) for spec in cfg.corpora
    )
    return SHAR_AUDIO_BUFFER_SIZE if audio_shar else LHOTSE_BUFFER_SIZE


def build_sampler(
    cuts: CutSet, cfg: DataConfig, *, train: bool, world_size: int = 1, rank: int = 0, buffer_size: int | None = None
):
    """The sampler for one split: bucketed (or random) max-duration batches, sharded by rank.

    ``buffer_size`` overrides ``cfg.buffer_size`` (``None`` in both: lhotse's default).
    """
    max_dur = cfg.max_duration if train else cfg.eval_max_duration
    if train and cfg.bucketing:
        sampler = BucketingSampler(
            cuts,
            max_duration=max_dur,
            max_cuts=cfg.max_cuts,
            num_buckets=cfg.num_buckets,
            shuffle=cfg.shuffle,
            drop_last=cfg.drop_last,
            world_size=world_size,
            rank=rank,
            seed=cfg.seed,
            buffer_size=buffer_size or cfg.buffer_size or LHOTSE_BUFFER_SIZE,
            duration_bins=list(cfg.duration_bins) if cfg.duration_bins else None,
            num_cuts_for_bins_estimate=cfg.num_cuts_for_bins_estimate,
        )
    elif train:
        sampler = StreamingCutSampler(
            cuts,
            max_duration=max_dur,
            max_cuts=cfg.max_cuts,
            shuffle=cfg.shuffle,
            drop_last=cfg.drop_last,
            world_size=world_size,
            rank=rank,
            seed=cfg.seed,
            shuffle_buffer_size=buffer_size or cfg.buffer_size or LHOTSE_BUFFER_SIZE,
        )
    else:  # evaluation: in manifest order, every utterance once
        return SimpleCutSampler(
            cuts, max_duration=max_dur, shuffle=False, drop_last=False, world_size=world_size, rank=rank, seed=cfg.seed
        )
    if isinstance(cuts.data, EpochCuts):
        sampler.epoch_source = cuts.data
    return sampler


__all__ = [
    "BucketingSampler",
    "EpochCuts",
    "StreamingCutSampler",
    "build_sampler",
    "read_split",
    "resolved_buffer_size",
    "shar_carries_audio",
    "shar_split_dir",
    "split_format",
]
