"""LightningDataModule: lazy manifests, duration bucketing, DDP sharding, mixing, collation.

The sampler decides what is in a batch (lhotse's ``DynamicBucketingSampler``, sharded across
DDP ranks by the sampler itself, so the Trainer runs with ``use_distributed_sampler=False``);
:class:`SpeechBatchDataset` only turns a ``CutSet`` into tensors. Bad clips found at load time
are skipped with a reason and counted, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import soxr
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

from data_modules.records import manifest_path, record_of


@dataclass
class CorpusSpec:
    """One prepared corpus that the data module reads."""

    name: str = "synthcraft"
    """Corpus name; manifests are ``{dir}/{name}_cuts_{split}.jsonl.gz``."""
    dir: str = "data/synthcraft"
    """Directory written by ``python -m data_modules.prepare``."""
    weight: float = 1.0
    """Mixing weight of this corpus in the training stream (``CutSet.mux``)."""
    train_split: str | None = "train"
    """Split used for training (``None``: this corpus is evaluation-only)."""
    val_split: str | None = "dev"
    """Split used for validation (``None``: not validated on)."""
    test_split: str | None = "test"
    """Split used by ``evaluate`` (``None``: not evaluated on)."""


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
    """Prepared corpora; training mixes those with a ``train_split`` by ``weight``."""
    synthcraft: SynthCraftSpec = field(default_factory=SynthCraftSpec)
    """Built-in corpus parameters (used when a corpus named ``synthcraft`` has no manifests)."""
    max_duration: float = 30.0
    """Seconds of audio per training batch, per device (a max-duration batch)."""
    max_cuts: int | None = None
    """Optional cap on utterances per batch, per device."""
    eval_max_duration: float = 120.0
    """Seconds of audio per validation/test batch, per device."""
    bucketing: bool = True
    """Duration bucketing (``False``: random batches, the naive baseline)."""
    num_buckets: int = 10
    """Duration buckets of the bucketing sampler."""
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


def check_waveform(audio: np.ndarray, sr: int, cfg: DataConfig) -> str | None:
    """Reason a loaded waveform is unusable, or ``None`` when it is fine."""
    if audio.size == 0:
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
    """Turns a sampled ``CutSet`` into a padded batch; skips unusable clips with a reason."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg

    def load(self, cut) -> tuple[np.ndarray | None, str | None]:
        try:
            audio = cut.load_audio()  # [channels, samples]
        except Exception as err:  # any decoder failure is a per-clip skip, not a crash
            return None, f"audio_decode_failed: {type(err).__name__}"
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

    def __getitem__(self, cuts: CutSet) -> dict[str, Any]:
        waves, records, skipped = [], [], []
        for cut in cuts:
            audio, reason = self.load(cut)
            if reason is not None:
                skipped.append({"id": cut.id, "reason": reason})
                continue
            waves.append(torch.from_numpy(audio))
            records.append(record_of(cut))
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


def build_sampler(cuts: CutSet, cfg: DataConfig, *, train: bool, world_size: int = 1, rank: int = 0):
    """The sampler for one split: bucketed (or random) max-duration batches, sharded by rank."""
    max_dur = cfg.max_duration if train else cfg.eval_max_duration
    if train and cfg.bucketing:
        return DynamicBucketingSampler(
            cuts, max_duration=max_dur, max_cuts=cfg.max_cuts, num_buckets=cfg.num_buckets,
            shuffle=cfg.shuffle, drop_last=cfg.drop_last, world_size=world_size, rank=rank,
            seed=cfg.seed,
        )
    return SimpleCutSampler(
        cuts, max_duration=max_dur, max_cuts=cfg.max_cuts if train else None,
        shuffle=train and cfg.shuffle, drop_last=train and cfg.drop_last,
        world_size=world_size, rank=rank, seed=cfg.seed,
    )


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

    # -- manifests -------------------------------------------------------------------------
    def prepare_data(self) -> None:
        # Generate the built-in corpus on first use (rank 0 only; Lightning calls this once).
        for spec in self.cfg.corpora:
            if spec.name == "synthcraft" and not manifest_path(spec.dir, spec.name, "train").exists():
                from data_modules.synthcraft import ensure_synthcraft

                s = self.cfg.synthcraft
                ensure_synthcraft(spec.dir, n_train=s.n_train, n_dev=s.n_dev, n_test=s.n_test,
                                  seed=s.seed)

    def split_cuts(self, split_attr: str) -> list[tuple[CorpusSpec, CutSet]]:
        out = []
        for spec in self.cfg.corpora:
            split = getattr(spec, split_attr)
            if split is None:
                continue
            path = manifest_path(spec.dir, spec.name, split)
            if not path.exists():
                raise FileNotFoundError(
                    f"manifest for corpus '{spec.name}' split '{split}' not found: {path} "
                    f"(run `python -m data_modules.prepare {spec.name} ...` first)")
            out.append((spec, CutSet.from_file(path)))  # lazy for .jsonl(.gz)
        return out

    def train_cuts(self) -> CutSet:
        parts = self.split_cuts("train_split")
        if not parts:
            raise ValueError("no corpus has a train_split")
        if len(parts) == 1:
            return parts[0][1]
        return CutSet.mux(*[c for _, c in parts], weights=[s.weight for s, _ in parts],
                          seed=self.cfg.seed)

    # -- loaders ---------------------------------------------------------------------------
    def _dist(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        return 1, 0

    def _loader(self, sampler) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            SpeechBatchDataset(self.cfg), sampler=sampler, batch_size=None,
            num_workers=self.cfg.num_workers, persistent_workers=False)

    def train_dataloader(self):
        world, rank = self._dist()
        self.train_sampler = build_sampler(self.train_cuts(), self.cfg, train=True,
                                           world_size=world, rank=rank)
        if self._restored_sampler_state is not None:
            self.train_sampler.load_state_dict(self._restored_sampler_state)
            self._restored_sampler_state = None
        return self._loader(self.train_sampler)

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
        """Batches this rank draws per epoch. Dynamic batches have no ``len``, so count them with
        a fresh sampler (reads only manifest metadata, no audio); cached."""
        if getattr(self, "_batches_per_epoch", None) is None:
            world, rank = self._dist()
            sampler = build_sampler(self.train_cuts(), self.cfg, train=True, world_size=world, rank=rank)
            self._batches_per_epoch = sum(1 for _ in sampler)
        return self._batches_per_epoch

    # -- resumable state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"train_sampler": self.train_sampler.state_dict() if self.train_sampler else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored_sampler_state = state.get("train_sampler")


__all__ = [
    "CorpusSpec", "DataConfig", "SpeechBatchDataset", "SpeechDataModule", "SynthCraftSpec",
    "build_sampler", "check_waveform", "padding_efficiency",
]
