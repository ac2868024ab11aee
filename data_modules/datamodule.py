"""LightningDataModule: lazy manifests, duration bucketing, DDP sharding, mixing, collation.

The sampler decides what is in a batch (lhotse's ``DynamicBucketingSampler``, sharded across
DDP ranks by the sampler itself, so the Trainer runs with ``use_distributed_sampler=False``);
:class:`SpeechBatchDataset` only turns a ``CutSet`` into tensors. Bad clips found at load time
are skipped with a reason and counted, never dropped silently.

Corpus splits are read and sampled in :mod:`data_modules.streaming` (streaming at scale: lazy
manifests, bounded memory, DDP ranks x workers, shard order per epoch), and a sampled ``CutSet``
becomes a batch in :mod:`data_modules.batches`.

Resumable state
---------------
* **Mid-epoch resume is exact.** :meth:`SpeechDataModule.state_dict` stores the sampler state
  with the number of batches *training consumed* (counted in ``on_before_batch_transfer``), not
  the number the sampler produced: DataLoader workers and Lightning prefetch run several batches
  ahead, and those must be served again after a restart. The restored sampler fast-forwards over
  the manifest metadata (no audio is decoded; with Shar the shard bytes are read again).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lhotse import CutSet

from data_modules.batches import SpeechBatchDataset
from data_modules.config import CorpusSpec, DataConfig
from data_modules.streaming import (
    EpochCuts,
    build_sampler,
    read_split,
    resolved_buffer_size,
)


class SpeechDataModule(L.LightningDataModule):
    """Train/val/test loaders over prepared corpora.

    Each batch names the clips it could not use (``skipped``: id, reason). Training and
    validation batches also carry their targets (:meth:`with_targets`): a training batch takes
    the stage's tasks in turn (``task``), a validation batch gets every task's.
    """

    def __init__(self, cfg: DataConfig):
        super().__init__()
        self.cfg = cfg
        self.train_sampler = None
        self._restored_sampler_state: dict | None = None
        self._consumed: tuple[int, int, int] | None = None  # (epoch, batches, cuts) trained on
        self.target_selector: Callable[[str, list[dict]], dict] | None = None
        """``(task, records) -> {"keep", "texts", "skipped"}``, handed over by the model side
        (its prompt format decides what a target is); ``None``: batches carry no targets."""
        self.tasks: list[str] = []
        """The current stage's tasks (set by the stage), in the order training batches take them."""

    # -- manifests -------------------------------------------------------------------------
    def split_cuts(self, split_attr: str, metadata_only: bool = False) -> list[tuple[CorpusSpec, CutSet]]:
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
        parts = [
            (
                spec,
                read_split(
                    spec,
                    spec.train_split,
                    shuffle_shards=self.cfg.shuffle,
                    seed=self.cfg.seed + epoch,
                    metadata_only=metadata_only,
                ),
            )
            for spec in self.cfg.corpora
            if spec.train_split is not None
        ]
        if not parts:
            raise ValueError("no corpus has a train_split")
        if len(parts) == 1:
            return parts[0][1]
        return CutSet.mux(*[c for _, c in parts], weights=[s.weight for s, _ in parts], seed=self.cfg.seed)

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
            SpeechBatchDataset(self.cfg),
            sampler=sampler,
            batch_size=None,
            num_workers=self.cfg.num_workers,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def build_train_sampler(self, world_size: int | None = None, rank: int | None = None):
        """A fresh training sampler for this rank (default: the trainer's) over the stream."""
        world, own_rank = self._dist()
        return build_sampler(
            self.train_stream(),
            self.cfg,
            train=True,
            world_size=world if world_size is None else world_size,
            rank=own_rank if rank is None else rank,
            buffer_size=resolved_buffer_size(self.cfg),
        )

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

    def eval_dataloaders(self, split_attr: str, world_size: int | None = None, rank: int | None = None) -> list:
        """One loader per corpus with that split, sharded by rank (default: the trainer's)."""
        world, own_rank = self._dist()
        world = world if world_size is None else world_size
        rank = own_rank if rank is None else rank
        return [
            self._loader(build_sampler(c, self.cfg, train=False, world_size=world, rank=rank))
            for _, c in self.split_cuts(split_attr)
        ]

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
            sampler = build_sampler(
                self.train_stream(metadata_only=True),
                self.cfg,
                train=True,
                world_size=world,
                rank=rank,
                buffer_size=resolved_buffer_size(self.cfg),
            )
            self._batches_per_epoch = sum(1 for _ in sampler)
        return self._batches_per_epoch

    # -- targets ---------------------------------------------------------------------------
    def with_targets(self, batch: dict, tasks) -> dict:
        """``batch["targets"][task]``: the records each task trains on (``keep``, indices into the
        batch), their target texts and the clips it must skip, with the reason."""
        batch["targets"] = {task: self.target_selector(task, batch["records"]) for task in tasks}
        return batch

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches: counted (resumable position) and given their task, the next of the
        stage's in turn, with its targets. Validation batches: every task's targets."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or not isinstance(batch, dict) or "ids" not in batch:
            return batch
        targets = self.target_selector is not None and bool(self.tasks)
        if trainer.training and self.train_sampler is not None:
            position = self.consumed_batches()  # this batch's index in the epoch
            self.note_consumed(len(batch["ids"]) + len(batch.get("skipped", ())))
            if targets:
                batch["task"] = self.tasks[position % len(self.tasks)]
                self.with_targets(batch, [batch["task"]])
        elif targets and (trainer.validating or trainer.sanity_checking):
            self.with_targets(batch, dict.fromkeys(self.tasks))
        return batch

    # -- resumable state -------------------------------------------------------------------
    def consumed_batches(self) -> int:
        """Training batches of the current epoch that reached the training step (restored on resume)."""
        epoch = self.train_sampler.epoch
        return self._consumed[1] if self._consumed is not None and self._consumed[0] == epoch else 0

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
            stats.update(kept_batches=batches, discarded_batches=0, kept_cuts=cuts, discarded_cuts=0)
        return {"train_sampler": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored_sampler_state = state.get("train_sampler")
        sd = self._restored_sampler_state
        if sd is not None:
            stats = sd["diagnostics"]["stats_per_epoch"].get(sd["epoch"])
            self._consumed = (
                (sd["epoch"], 0, 0)
                if stats is None
                else (
                    sd["epoch"],
                    stats["kept_batches"] + stats["discarded_batches"],
                    stats["kept_cuts"] + stats["discarded_cuts"],
                )
            )


# The config classes stay importable from here, where the data module's users look first.
__all__ = ["CorpusSpec", "DataConfig", "SpeechDataModule"]
