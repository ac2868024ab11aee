"""LightningDataModule: lazy manifests, duration bucketing, DDP sharding, mixing, collation.

The sampler decides what is in a batch (lhotse's ``DynamicBucketingSampler``, sharded across
DDP ranks by the sampler itself, so the Trainer runs with ``use_distributed_sampler=False``);
:class:`SpeechBatchDataset` only turns a ``CutSet`` into tensors. Bad clips found at load time
are skipped with a reason and counted, never dropped silently.

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
* **Mid-epoch resume is exact.** :meth:`SpeechDataModule.state_dict` stores the sampler state
  with the number of batches *training consumed* (counted in ``on_before_batch_transfer``), not
  the number the sampler produced: DataLoader workers and Lightning prefetch run several batches
  ahead, and those must be served again after a restart. The restored sampler fast-forwards over
  the manifest metadata (no audio is decoded; with Shar the shard bytes are read again).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import soxr
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler, SimpleCutSampler

from data_modules.config import CorpusSpec, DataConfig
from data_modules.corpora.common import shar_dir
from data_modules.records import manifest_path, record_of


def describe_refusal(reason: str, seconds: float | None, cfg: DataConfig) -> str:
    """A reason code of :func:`check_waveform` in words, with the limit and the key that sets it
    (``too_short: 0.10 s < 0.30 s minimum (data.min_clip_seconds)``)."""
    if reason == "too_short" and seconds is not None:
        return f"too_short: {seconds:.2f} s < {cfg.min_clip_seconds:.2f} s minimum (data.min_clip_seconds)"
    if reason == "too_long" and seconds is not None:
        return (f"too_long: {seconds:.1f} s > {cfg.max_clip_seconds:g} s maximum (data.max_clip_seconds): "
                f"cut the recording into pieces of at most {cfg.max_clip_seconds:g} s")
    words = {"empty_audio": "no samples", "non_finite_audio": "NaN or infinite samples",
             "silent_audio": "every sample is zero"}
    return f"{reason}: {words[reason]}" if reason in words else reason


def check_waveform(audio: np.ndarray, sr: int, cfg: DataConfig) -> str | None:
    """Reason a loaded waveform is unusable, or ``None`` when it is fine.

    Reasons: ``empty_audio`` (no samples), ``non_finite_audio`` (NaN/inf samples),
    ``too_short`` / ``too_long`` (outside ``[min_clip_seconds, max_clip_seconds]``) and
    ``silent_audio`` (every sample is zero).
    """
    if audio.size == 0 or sr <= 0:
        return "empty_audio"
    if not np.all(np.isfinite(audio)):
        return "non_finite_audio"
    seconds = audio.shape[-1] / sr
    if seconds < cfg.min_clip_seconds:
        return "too_short"
    if seconds > cfg.max_clip_seconds:
        return "too_long"
    if float(np.max(np.abs(audio))) == 0.0:
        return "silent_audio"
    return None


class SpeechBatchDataset(torch.utils.data.Dataset):
    """Turns a sampled ``CutSet`` into a padded batch; skips unusable clips with a reason.

    A clip is skipped (``batch["skipped"]``: id and reason; the training module counts and logs
    them) instead of failing the batch when, checked in this order:

    * its audio would be read through a shell (``unsafe_audio_source``): a lhotse ``command``
      source, a ``pipe:`` URL, or a ``.sph``/``.opus`` path with shell metacharacters (lhotse
      hands those to ``sph2pipe``/``ffmpeg`` via ``shell=True``); nothing is executed;
    * it has no supervision (``missing_supervision``) or a text field (transcript, caption,
      emotion) that is not valid UTF-8, e.g. a manifest line carrying ``\\udcff``-style escapes
      of undecodable bytes (``invalid_utf8_text``);
    * its manifest duration is zero or outside the clip limits (``empty_audio``, ``too_short``,
      ``too_long``): decided before any decoding, so an hour-long file is never read;
    * decoding fails (``audio_decode_failed: CAUSE``, CAUSE = ``missing_file``,
      ``sample_rate_mismatch`` (the file's rate is not the manifest's), ``truncated`` (fewer
      frames than declared) or the decoder's exception type);
    * the decoded waveform fails :func:`check_waveform`.

    Clips at another (declared, correct) rate are resampled to ``cfg.sampling_rate`` with soxr.
    """

    TEXT_FIELDS = ("transcript", "caption", "emotion")
    SHELL_DECODED = (".sph", ".opus")  # lhotse reads these through sph2pipe / ffmpeg subprocesses
    SAFE_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "0123456789_-./+=@,%")

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg

    @classmethod
    def unsafe_source(cls, cut) -> bool:
        """Whether lhotse would pass a string of this cut's manifest to a shell."""
        recording = getattr(cut, "recording", None)
        for src in getattr(recording, "sources", None) or ():
            text = str(src.source) if isinstance(src.source, (str, Path)) else ""
            if src.type == "command" or text.startswith("pipe:"):
                return True
            if text.lower().endswith(cls.SHELL_DECODED) and not set(text) <= cls.SAFE_PATH_CHARS:
                return True
        return False

    @classmethod
    def text_problem(cls, cut) -> str | None:
        """``missing_supervision`` / ``invalid_utf8_text`` for a cut's record, else ``None``."""
        if not getattr(cut, "supervisions", None):
            return "missing_supervision"
        sup = cut.supervisions[0]
        custom = sup.custom if isinstance(sup.custom, dict) else {}
        for value in (sup.text, custom.get("caption"), custom.get("emotion")):
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:  # lone surrogates: undecodable bytes upstream
                    return "invalid_utf8_text"
        return None

    def metadata_problem(self, cut) -> str | None:
        """Why a cut is unusable from its manifest entry alone (no audio is read), or ``None``."""
        if self.unsafe_source(cut):
            return "unsafe_audio_source"
        reason = self.text_problem(cut)
        if reason is not None:
            return reason
        duration = float(cut.duration)
        if not duration > 0:  # also NaN
            return "empty_audio"
        if duration > self.cfg.max_clip_seconds:
            return "too_long"
        if duration < self.cfg.min_clip_seconds:
            return "too_short"
        return None

    @staticmethod
    def decode_failure(cut, err: Exception) -> str:
        """The cause of a decoding error, for the skip reason (looked at only after a failure)."""
        recording = getattr(cut, "recording", None)
        for src in getattr(recording, "sources", None) or ():
            if src.type != "file":
                continue
            path = Path(str(src.source))
            if not path.is_file():
                return "missing_file"
            try:
                import soundfile as sf

                info = sf.info(str(path))
            except Exception:
                break
            if info.samplerate != recording.sampling_rate:
                return "sample_rate_mismatch"
            if info.frames < recording.num_samples:
                return "truncated"
        return type(err).__name__

    def load(self, cut) -> tuple[np.ndarray | None, str | None]:
        """``(mono float32 waveform at cfg.sampling_rate, None)`` or ``(None, reason)``."""
        reason = self.metadata_problem(cut)
        if reason is not None:
            return None, reason
        try:
            audio = cut.load_audio()  # [channels, samples]
        except Exception as err:  # any decoder failure is a per-clip skip, not a crash
            return None, f"audio_decode_failed: {self.decode_failure(cut, err)}"
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=0)  # downmix multichannel to mono
        sr = cut.sampling_rate
        reason = check_waveform(audio, sr, self.cfg)
        if reason is not None:
            return None, reason
        if sr != self.cfg.sampling_rate:
            audio = soxr.resample(audio, sr, self.cfg.sampling_rate).astype(np.float32)
        return audio, None

    def record(self, cut) -> dict:
        """The cut's record, its caption re-rendered when ``caption_attributes`` is set."""
        rec = record_of(cut)
        if self.cfg.caption_attributes is not None:
            from data_modules.synthcraft import render_partial_caption

            rec["caption"] = render_partial_caption(rec["attributes"], self.cfg.caption_attributes)
        return rec

    def __getitem__(self, cuts: CutSet) -> dict[str, Any]:
        waves, records, skipped = [], [], []
        for cut in cuts:
            audio, reason = self.load(cut)
            if reason is not None:
                skipped.append({"id": cut.id, "reason": reason})
                continue
            waves.append(torch.from_numpy(audio))
            records.append(self.record(cut))
        lens = torch.tensor([w.numel() for w in waves], dtype=torch.long)
        max_len = int(lens.max()) if len(waves) else 0
        wave = torch.zeros(len(waves), max_len)  # [B, T] zero-padded
        for i, w in enumerate(waves):
            wave[i, : w.numel()] = w
        return {
            "wave": wave,
            "wave_lens": lens,
            "ids": [r["id"] for r in records],
            "records": records,
            "skipped": skipped,
            "padding_efficiency": padding_efficiency(lens),
        }


def padding_efficiency(lens: torch.Tensor | list[int]) -> float:
    """Real samples / padded samples of one batch (1.0 = no padding)."""
    lens = torch.as_tensor(lens)
    if lens.numel() == 0:
        return 1.0
    return float(lens.sum()) / float(lens.max() * lens.numel())


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
        raise ValueError(f"corpus '{spec.name}': format must be auto, jsonl or shar, "
                         f"not {spec.format!r}")
    if spec.format != "auto":
        return spec.format
    return "shar" if _shar_manifests(shar_split_dir(spec, split)) else "jsonl"


def shar_carries_audio(spec: CorpusSpec, split: str) -> bool:
    """Whether the split is read from Shar shards that hold the audio (``recording.*.tar``)."""
    return (split_format(spec, split) == "shar"
            and any(shar_split_dir(spec, split).glob("recording.*")))


def read_split(spec: CorpusSpec, split: str, *, shuffle_shards: bool = False, seed: int = 0,
               metadata_only: bool = False) -> CutSet:
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
                f"(run `python -m data_modules.prepare {spec.name} ...` first)")
        return CutSet(TolerantJsonl(path))  # lazy, like CutSet.from_file on .jsonl(.gz)
    directory = shar_split_dir(spec, split)
    manifests = _shar_manifests(directory)
    if not manifests:
        raise FileNotFoundError(
            f"Shar shards for corpus '{spec.name}' split '{split}' not found in {directory} "
            f"(run `python -m data_modules.prepare {spec.name} ... --shar` first)")
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
    surrogates and :class:`SpeechBatchDataset` skips it (``invalid_utf8_text``, counted and
    logged). A line that is not a cut at all is skipped with a warning naming it.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def __iter__(self):
        import gzip
        import warnings

        from lhotse.serialization import decode_json_line, deserialize_item

        opener = gzip.open if self.path.suffix == ".gz" else open
        with opener(self.path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    yield deserialize_item(decode_json_line(raw.decode("utf-8", "surrogateescape")))
                except Exception as err:  # not JSON, not a cut
                    warnings.warn(f"{self.path}:{number}: unreadable manifest line skipped "
                                  f"({type(err).__name__}: {err})")


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
    audio_shar = any(spec.train_split is not None and shar_carries_audio(spec, spec.train_split)
                     for spec in cfg.corpora)
    return SHAR_AUDIO_BUFFER_SIZE if audio_shar else LHOTSE_BUFFER_SIZE


def build_sampler(cuts: CutSet, cfg: DataConfig, *, train: bool, world_size: int = 1, rank: int = 0,
                  buffer_size: int | None = None):
    """The sampler for one split: bucketed (or random) max-duration batches, sharded by rank.

    ``buffer_size`` overrides ``cfg.buffer_size`` (``None`` in both: lhotse's default).
    """
    max_dur = cfg.max_duration if train else cfg.eval_max_duration
    if train and cfg.bucketing:
        sampler = BucketingSampler(
            cuts, max_duration=max_dur, max_cuts=cfg.max_cuts, num_buckets=cfg.num_buckets,
            shuffle=cfg.shuffle, drop_last=cfg.drop_last, world_size=world_size, rank=rank,
            seed=cfg.seed, buffer_size=buffer_size or cfg.buffer_size or LHOTSE_BUFFER_SIZE,
            duration_bins=list(cfg.duration_bins) if cfg.duration_bins else None,
            num_cuts_for_bins_estimate=cfg.num_cuts_for_bins_estimate,
        )
    elif train:
        sampler = StreamingCutSampler(
            cuts, max_duration=max_dur, max_cuts=cfg.max_cuts, shuffle=cfg.shuffle,
            drop_last=cfg.drop_last, world_size=world_size, rank=rank, seed=cfg.seed,
            shuffle_buffer_size=buffer_size or cfg.buffer_size or LHOTSE_BUFFER_SIZE,
        )
    else:  # evaluation: in manifest order, every utterance once
        return SimpleCutSampler(cuts, max_duration=max_dur, shuffle=False, drop_last=False,
                                world_size=world_size, rank=rank, seed=cfg.seed)
    if isinstance(cuts.data, EpochCuts):
        sampler.epoch_source = cuts.data
    return sampler


class SpeechDataModule(L.LightningDataModule):
    """Train/val/test loaders over prepared corpora.

    Counts of skipped clips accumulate in :attr:`skip_counts` (reason -> count) and the ids in
    :attr:`skipped`, so the training module can log them per epoch.
    """

    def __init__(self, cfg: DataConfig):
        super().__init__()
        self.cfg = cfg
        self.train_sampler = None
        self._restored_sampler_state: dict | None = None
        self._consumed: tuple[int, int, int] | None = None  # (epoch, batches, cuts) trained on

    # -- manifests -------------------------------------------------------------------------
    def split_cuts(self, split_attr: str, metadata_only: bool = False
                   ) -> list[tuple[CorpusSpec, CutSet]]:
        """``(spec, lazy CutSet)`` per corpus that has this split, in a fixed order (no shuffle).

        ``metadata_only``: for Shar input, skip the audio tar files (texts and labels only).
        """
        out = []
        for spec in self.cfg.corpora:
            split = getattr(spec, split_attr)
            if split is None:
                continue
            out.append((spec, read_split(spec, split, metadata_only=metadata_only)))
        return out

    def usable_clips(self, split_attr: str) -> tuple[list[tuple[torch.Tensor, dict]], int]:
        """``([(wave [T], record)], n_skipped)`` of one split, whole, through the pipeline's own
        checks (clips it would skip for their audio or text are counted, not returned). For
        the offline stand-ins' pre-training, which needs a small split in memory."""
        loader = SpeechBatchDataset(self.cfg)
        out, skipped = [], 0
        for _, cuts in self.split_cuts(split_attr):
            for cut in cuts:
                audio, _reason = loader.load(cut)  # also refuses cuts with unusable text
                if audio is None:
                    skipped += 1
                    continue
                out.append((torch.from_numpy(audio), loader.record(cut)))
        return out, skipped

    def train_cuts(self, epoch: int = 0, metadata_only: bool = False) -> CutSet:
        """The training stream of one epoch: every corpus with a ``train_split``, Shar shards
        shuffled with ``seed + epoch`` (when ``shuffle``), mixed by weight (``CutSet.mux``)."""
        parts = [(spec, read_split(spec, spec.train_split, shuffle_shards=self.cfg.shuffle,
                                   seed=self.cfg.seed + epoch, metadata_only=metadata_only))
                 for spec in self.cfg.corpora if spec.train_split is not None]
        if not parts:
            raise ValueError("no corpus has a train_split")
        if len(parts) == 1:
            return parts[0][1]
        return CutSet.mux(*[c for _, c in parts], weights=[s.weight for s, _ in parts],
                          seed=self.cfg.seed)

    def train_stream(self, metadata_only: bool = False) -> CutSet:
        """The lazy training ``CutSet`` given to the sampler: :meth:`train_cuts` of the sampler's
        current epoch (see :class:`EpochCuts`)."""
        return CutSet(EpochCuts(lambda epoch: self.train_cuts(epoch, metadata_only)))

    # -- loaders ---------------------------------------------------------------------------
    def _dist(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        return 1, 0

    def _loader(self, sampler) -> torch.utils.data.DataLoader:
        # Map-style loading: the sampler runs in this process and hands each worker a whole
        # CutSet to decode, so workers never need sharding of their own.
        # Its own generator: starting an iterator draws a worker base seed, and drawing it from
        # the global RNG would make a resumed run's dropout/sampling depend on when loaders
        # (validation, the next epoch) were created relative to the checkpoint.
        return torch.utils.data.DataLoader(
            SpeechBatchDataset(self.cfg), sampler=sampler, batch_size=None,
            num_workers=self.cfg.num_workers, persistent_workers=False,
            generator=torch.Generator().manual_seed(self.cfg.seed))

    def build_train_sampler(self, world_size: int | None = None, rank: int | None = None):
        """A fresh training sampler for this rank (default: the trainer's) over the stream."""
        world, own_rank = self._dist()
        return build_sampler(self.train_stream(), self.cfg, train=True,
                             world_size=world if world_size is None else world_size,
                             rank=own_rank if rank is None else rank,
                             buffer_size=resolved_buffer_size(self.cfg))

    def train_loader(self, world_size: int | None = None, rank: int | None = None):
        """The training loader of one rank (default: the trainer's); restores a loaded state."""
        self.train_sampler = self.build_train_sampler(world_size, rank)
        if self._restored_sampler_state is not None:
            # lhotse's load_state_dict consumes the dict it is given; keep ours intact.
            self.train_sampler.load_state_dict(copy.deepcopy(self._restored_sampler_state))
            self._restored_sampler_state = None  # the consumed count came with it
        else:
            self._consumed = None  # a fresh sampler (e.g. the next stage): nothing consumed yet
        return self._loader(self.train_sampler)

    def train_dataloader(self):
        return self.train_loader()

    def eval_dataloaders(self, split_attr: str, world_size: int | None = None,
                         rank: int | None = None) -> list:
        """One loader per corpus with that split, sharded by rank (default: the trainer's)."""
        world, own_rank = self._dist()
        world = world if world_size is None else world_size
        rank = own_rank if rank is None else rank
        return [self._loader(build_sampler(c, self.cfg, train=False, world_size=world, rank=rank))
                for _, c in self.split_cuts(split_attr)]

    def val_dataloader(self):
        loaders = self.eval_dataloaders("val_split")
        return loaders[0] if len(loaders) == 1 else loaders

    def test_dataloader(self):
        loaders = self.eval_dataloaders("test_split")
        return loaders[0] if len(loaders) == 1 else loaders

    def train_batches_per_epoch(self) -> int:
        """Batches this rank draws per epoch (cached), for the LR schedule and KL warm-up.

        ``cfg.steps_per_epoch`` when given. Otherwise dynamic batches have no ``len``, so a fresh
        sampler (same seed, bins and buffer as training, epoch 0) is run over the manifest
        *metadata* only: JSONL lines, or just the ``cuts.*.jsonl.gz`` of Shar shards, never audio.
        Memory stays within the sampler buffer; time is linear in the corpus (the benchmark in
        ``benchmarks/streaming.py`` reports cuts/s). Later epochs, shuffled differently, may
        differ by a batch or two.
        """
        if self.cfg.steps_per_epoch:
            return int(self.cfg.steps_per_epoch)
        if getattr(self, "_batches_per_epoch", None) is None:
            world, rank = self._dist()
            sampler = build_sampler(self.train_stream(metadata_only=True), self.cfg, train=True,
                                    world_size=world, rank=rank,
                                    buffer_size=resolved_buffer_size(self.cfg))
            self._batches_per_epoch = sum(1 for _ in sampler)
        return self._batches_per_epoch

    # -- resumable state -------------------------------------------------------------------
    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Count the training batches (and cuts) that reached the training step this epoch."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training and self.train_sampler is not None \
                and isinstance(batch, dict) and "ids" in batch:
            self.note_consumed(len(batch["ids"]) + len(batch.get("skipped", ())))
        return batch

    def note_consumed(self, n_cuts: int) -> None:
        """Record that training consumed one batch of ``n_cuts`` cuts of the current epoch."""
        epoch = self.train_sampler.epoch
        if self._consumed is None or self._consumed[0] != epoch:
            self._consumed = (epoch, 0, 0)
        self._consumed = (epoch, self._consumed[1] + 1, self._consumed[2] + n_cuts)

    def state_dict(self) -> dict[str, Any]:
        """The sampler state, positioned after the batches training consumed.

        The sampler itself is ahead of training by the batches in flight (worker prefetch, the
        Trainer's own prefetch); once training batches are being counted the state's progress
        is rewritten to the consumed count, so a restart serves the in-flight batches again.
        """
        if self.train_sampler is None:
            return {"train_sampler": None}
        state = self.train_sampler.state_dict()
        if self._consumed is not None:
            epoch = state["epoch"]
            _, batches, cuts = self._consumed if self._consumed[0] == epoch else (epoch, 0, 0)
            stats = state["diagnostics"]["stats_per_epoch"].setdefault(epoch, {"epoch": epoch})
            stats.update(kept_batches=batches, discarded_batches=0, kept_cuts=cuts,
                         discarded_cuts=0)
        return {"train_sampler": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored_sampler_state = state.get("train_sampler")
        sd = self._restored_sampler_state
        if sd is not None:
            stats = sd["diagnostics"]["stats_per_epoch"].get(sd["epoch"])
            self._consumed = (sd["epoch"], 0, 0) if stats is None else (
                sd["epoch"], stats["kept_batches"] + stats["discarded_batches"],
                stats["kept_cuts"] + stats["discarded_cuts"])


__all__ = [
    "BucketingSampler", "CorpusSpec", "DataConfig", "EpochCuts", "SpeechBatchDataset",
    "SpeechDataModule", "StreamingCutSampler", "build_sampler",
    "check_waveform", "padding_efficiency", "read_split", "resolved_buffer_size",
    "shar_carries_audio", "shar_split_dir", "split_format",
]
